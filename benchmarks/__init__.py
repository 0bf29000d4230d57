"""Benchmarks of maas against bare vLLM, Ray Serve LLM and a naive transformers server.

Run everything with ``.venv/bin/python -m benchmarks.run`` (``--help`` for the options).
"""

"""The OpenAI request rules, one module per endpoint family: plain Python, no Ray, no HTTP.

What a request may ask and how it becomes engine parameters (``max_tokens`` resolution,
``response_format``, unsupported fields, prompts): the ingress deployment calls these, and
``tests/unit`` tests them directly. Function calling (``tools``: rules, forced-call schemas,
Hermes rendering, output parsing with vLLM's tool parsers) and completions' ``echo``
(``completions_echo``) are used by ``chat``/``completions`` and by the engines.
"""

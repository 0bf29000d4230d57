"""The first hour, measured: ``maas serve`` on an empty ``$MAAS_HOME``, as ``make run`` starts it.

    .venv/bin/python -m benchmarks.first_hour [--config cluster/maas-cpu.yaml] [--port 8000]

Starts the service with a fresh model cache (SmolLM2 is converted again, no classifier is
trained), then polls it over HTTP once a second until every classifier answers (or a bound):
when the first chat answer came, when each classifier answered 200 (its first version live), how
many lines the terminal got. Prints a table and writes ``benchmarks/results/first_hour.md``
with the transcript. The service is stopped at the end (Ctrl-C, as a user would).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "first_hour.md"
BOUND_S = 45 * 60


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "cluster" / "maas-cpu.yaml"))
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maas-first-hour-") as home:
        lines, times = run(args.config, args.port, Path(home))
    report(lines, times, args.config)
    return 0


def run(config: str, port: int, home: Path) -> tuple[list[str], dict[str, float]]:
    env = {**os.environ, "MAAS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "maas.cli", "serve", "--config", config, "--port",
                                str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        times = poll(f"http://127.0.0.1:{port}", start)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        reader.join(10)
    return lines, times


def poll(base: str, start: float) -> dict[str, float]:
    """Seconds from the start until each model first answered 200."""
    times: dict[str, float] = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        while time.monotonic() - start < BOUND_S:
            models = models_of(http)
            for name, capability in models.items():
                if name not in times and answers(http, name, capability):
                    times[name] = time.monotonic() - start
                    print(f"{name} answered after {times[name]:.0f} s", flush=True)
            if models and len(times) == len(models):
                break
            time.sleep(1)
    return times


def models_of(http: httpx.Client) -> dict[str, str]:
    try:
        cards = http.get("/v1/models").json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    return {c["id"]: c["capability"] for c in cards if c["capability"] in ("generate", "classify")}


def answers(http: httpx.Client, name: str, capability: str) -> bool:
    if capability == "generate":
        body = {"model": name, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8}
        path = "/v1/chat/completions"
    else:
        body, path = {"model": name, "input": "The match ended in a draw."}, "/v1/classify"
    try:
        return http.post(path, json=body).status_code == 200
    except httpx.HTTPError:
        return False


def report(lines: list[str], times: dict[str, float], config: str) -> None:
    rows = [f"| {name} | {seconds / 60:.1f} min |" for name, seconds in sorted(times.items(), key=lambda x: x[1])]
    table = "\n".join(["| model | first answer after `maas serve` started |", "|---|---:|", *rows])
    print(table)
    print(f"terminal lines until the last model answered: {len(lines)}")
    RESULTS.write_text(
        "# The first hour (`python -m benchmarks.first_hour`)\n\n"
        f"`maas serve --config {Path(config).relative_to(ROOT) if Path(config).is_relative_to(ROOT) else config}` "
        f"on an empty `$MAAS_HOME`, environment installed. {machine_line()}\n\n{table}\n\n"
        f"Terminal lines until then, and at Ctrl-C: {len(lines)}.\n\n```\n{''.join(lines)}```\n",
        encoding="utf-8",
    )


def machine_line() -> str:
    """The machine the run measured: date, CPU model, cores, SIMD flags, memory, load at the end."""
    from benchmarks.report import describe_machine

    m = describe_machine()
    return (f"Run on {m['date']}: {m['cpu_model']}, {m['cpu_cores']} cores, {m['ram_gib']} GiB RAM, "
            f"SIMD: {' '.join(m['cpu_simd_flags']) or '?'}; load average (1, 5, 15 min) at the end "
            f"{m['load_average_at_start']}.")


if __name__ == "__main__":
    raise SystemExit(main())

"""What ``maas serve`` prints: one line per phase with its elapsed time, and one progress line per
background training, read from the registry (what the training itself writes), never from the
workers' output. On a terminal the progress line is rewritten in place; in a log it is a new
line only when a model changes phase, so a first run prints a few dozen lines in all.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from maas.storage.registry import ModelRegistry, TrainingStatus, format_seconds

PREFIX = "[maas]"


class Console:
    """Phase lines with the time since the command started."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.start = time.monotonic()
        self.tty = self.stream.isatty()
        self._live = False  # a progress line is on screen (terminal only)

    def elapsed(self) -> str:
        return format_seconds(time.monotonic() - self.start)

    def phase(self, message: str) -> None:
        """A line of its own: ``[maas] 0m42s  serving on http://...``."""
        self._clear_live()
        self.stream.write(f"{PREFIX} {self.elapsed():>6}  {message}\n")
        self.stream.flush()

    def live(self, message: str) -> None:
        """The progress line: rewritten in place on a terminal, skipped in a log."""
        if not self.tty:
            return
        self.stream.write(f"\r\033[K{PREFIX} {self.elapsed():>6}  {message}")
        self.stream.flush()
        self._live = True

    def _clear_live(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False


class TrainingProgress:
    """Follows the background trainings of some registry models and reports them on a console."""

    def __init__(self, registry: ModelRegistry, names: list[str], console: Console) -> None:
        self.registry = registry
        self.names = names
        self.console = console
        self._reported: dict[str, tuple[str, str]] = {}
        self._live: dict[str, str | None] = {name: registry.live_version(name) for name in names}

    def poll(self) -> None:
        """A line for every model whose live version, state or phase changed; the live line for
        the rest."""
        live_parts = []
        for name in self.names:
            self._report_live_version(name)
            status = self.registry.training_status(name)
            if status is None:
                continue
            key = (status.state, status.phase if status.state == "training" else status.detail)
            if self._reported.get(name) != key and _worth_a_line(status):
                self.console.phase(f"{name}: {status.line()}")
            self._reported[name] = key
            if status.state == "training":
                live_parts.append(f"{name}: {status.line()}")
        if live_parts:
            self.console.live(" | ".join(live_parts))

    def _report_live_version(self, name: str) -> None:
        live = self.registry.live_version(name)
        if live is None or live == self._live.get(name):
            return
        self._live[name] = live
        metrics = self.registry.get(name, live).metrics
        scores = ", ".join(f"{label} macro-F1 {metrics[key]:.3f}" for label, key in
                           (("validation", "validation_macro_f1"), ("test", "test_macro_f1")) if key in metrics)
        self.console.phase(f"{name}/{live} is live{': ' + scores if scores else ''}")

    def running(self) -> bool:
        """Whether any followed model is still training."""
        statuses = [self.registry.training_status(name) for name in self.names]
        return any(s is not None and s.state == "training" for s in statuses)


def _worth_a_line(status: TrainingStatus) -> bool:
    """Failures, a challenger kept out and the two long phases get lines (a version going live
    gets its own); short steps show on the live line only."""
    if status.state == "done":
        return "not live" in status.detail
    return status.state == "failed" or status.phase in ("linear probe", "fine-tune")

"""What the Batch API's and background Responses' runners share: a detached, named Ray actor that
runs one job through the application's handle to its end, then exits.

Named, so one job has one runner across ingress replicas; detached, so it outlives the replica
that started it. ``run`` twice is one run: an ingress that finds the runner before its job has
begun sends ``run`` again, because a ``run`` call is owned by the replica that sent it and one sent
while the actor was still starting is lost with that replica if it dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import ray

NAMESPACE = "serve"


class Job(Protocol):
    """One batch or background response, run with the app's handle (``handle_of()``)."""

    async def run(self, handle_of: Callable[[], Any]) -> None: ...


class RunsOnce:
    """The body of a runner actor (subclass it under ``@ray.remote``)."""

    def __init__(self, app_name: str, job: Job) -> None:
        self.app_name = app_name
        self.job = job
        self._run: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Run the job once (a second call waits for the first), then end the actor."""
        from ray import serve

        try:
            if self._run is None:
                self._run = asyncio.ensure_future(self.job.run(lambda: serve.get_app_handle(self.app_name)))
            await asyncio.shield(self._run)
        finally:
            ray.actor.exit_actor()


def ensure_running(runner_class: Any, name: str, begun: bool, *args: Any) -> None:
    """Start the runner ``name`` (``runner_class.remote(*args)``) unless it exists; tell one that
    exists to run only while its job has not ``begun`` (see the module doc)."""
    try:
        runner = ray.get_actor(name, namespace=NAMESPACE)
        if begun:
            return  # it has begun: it sees the job to its end
    except ValueError:  # none: a new job, or its runner was lost
        runner = runner_class.options(name=name, lifetime="detached", get_if_exists=True,
                                      namespace=NAMESPACE).remote(*args)
    runner.run.remote()

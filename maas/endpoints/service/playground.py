"""The playground: one static HTML page (inline JS and CSS) that calls the service's own API."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

PLAYGROUND_RESOURCE = ("maas.endpoints.service", "playground.html")
"""Package and path of the page inside it."""


@lru_cache(maxsize=1)
def playground_html() -> str:
    """The playground page's HTML, read once from ``maas/endpoints/service/playground.html``."""
    package, path = PLAYGROUND_RESOURCE
    return files(package).joinpath(path).read_text(encoding="utf-8")

"""tcmalloc for the model replicas' processes, when the machine has it.

vLLM's CPU backend recommends preloading tcmalloc (it warns at start when it is not), and the
transformers replicas allocate and free tensors of varying sizes for every batch. ``maas``
preloads ``libtcmalloc_minimal`` into the generator, classifier and encoder replicas (and so
into vLLM's engine processes, which inherit the replica's environment) through each
deployment's Ray ``runtime_env`` ``env_vars``, which apply when the replica's worker process
starts. Nothing else (the proxy, Ray's daemons, the driver) gets it.

``MAAS_TCMALLOC``: unset or ``auto``: the Debian/Ubuntu path if the file exists where the
application is built; ``0``: never; a path: that library. ``make install`` installs the
package where apt is available (``libtcmalloc-minimal4``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

TCMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
                  "/usr/lib64/libtcmalloc_minimal.so.4")


def tcmalloc_path() -> str | None:
    """The tcmalloc library to preload, or None (see the module's docstring)."""
    setting = os.environ.get("MAAS_TCMALLOC", "auto").strip()
    if setting in ("0", "off", "false", "no"):
        return None
    candidates = TCMALLOC_PATHS if setting in ("", "auto", "1") else (setting,)
    return next((path for path in candidates if Path(path).is_file()), None)


def with_tcmalloc(options: dict[str, Any], library: str | None = None) -> dict[str, Any]:
    """``Deployment.options`` with ``LD_PRELOAD`` of tcmalloc in the replica's ``runtime_env``.

    An ``LD_PRELOAD`` the options already set is kept (tcmalloc goes first). Unchanged when
    there is no library.
    """
    library = library if library is not None else tcmalloc_path()
    if not library:
        return options
    options = copy.deepcopy(options)
    actor = options.setdefault("ray_actor_options", {})
    env_vars = actor.setdefault("runtime_env", {}).setdefault("env_vars", {})
    preload = [p for p in env_vars.get("LD_PRELOAD", "").split(":") if p and p != library]
    env_vars["LD_PRELOAD"] = ":".join([library, *preload])
    return options

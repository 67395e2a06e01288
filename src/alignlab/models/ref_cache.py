"""A persistent, content-addressed cache of reference per-token log-probs.

Example::

    fp = fingerprint(weights_fingerprint(ref_model), tokenizer, sequences, {"precision": "bf16"})
    cache, hit = get_or_build(cfg.cache_dir, fp, lambda: RefCache.build(
        ref_model, sequences, pad_id, fingerprint=fp, precision="bf16"))
    reference = CachedReference(cache)

``sequences`` are ``(key, prompt_ids, completion_ids)`` triples, keys such as "17:chosen". The
reference is computed once, across runs and sweeps, instead of once per run (TRL #3985).

Files: ``<cache_dir>/<fingerprint>.safetensors`` holds ``values`` (float32, every sequence's
per-token log-probs end to end) and ``offsets`` (int64, n + 1: sequence i is
``values[offsets[i]:offsets[i+1]]``), with metadata ``fingerprint``, ``keys`` (a JSON list),
``format_version`` and ``created``; ``<fingerprint>.sha256`` holds the file's sha256 in
``sha256sum`` format. Both are written atomically (temp file, then ``os.replace``), the checksum
last, so a file without its checksum is an interrupted write.

Nothing is used unverified: a checksum that does not match, a fingerprint in the file that is
not the expected one, or an unknown format version raise :class:`RefCacheError` and name the
file to delete; a damaged cache is never silently rebuilt, nor silently used.

What the fingerprint covers, and what it leaves out on purpose:

- the reference weights: :func:`weights_fingerprint`, every parameter and buffer (name, dtype,
  shape, bytes). Compute it from the reference *before any training step*: in full fine-tuning
  the policy's weights move, and a fingerprint taken after training would describe the trained
  policy (TRL PR #6443), which here would be a miss and a rebuild from the wrong model;
- the tokenizer (vocabulary, merges, normalization, special tokens, chat template);
- the data: every (key, prompt_ids, completion_ids), in order. Token weights are not covered:
  a loss applies them to the per-token values (dense DPO), which are what is stored;
- ``settings``: whatever changes the numbers, at least the forward ``precision``. Keys in
  :data:`NEUTRAL_SETTINGS` (``chunk_size``, ``batch_size``, ``progress``) are dropped: they
  change how positions are grouped through the matmuls, which moves results by float rounding
  only (about 1e-7 relative), not what is computed. The device (CPU or GPU kernels) is left out
  for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alignlab.errors import AlignlabError
from alignlab.files import atomic_write, sha256_file
from alignlab.forward import (
    SequenceBatch,
    autocast_for,
    collate_sequences,
    frozen_logps,
    model_device,
    unwrap,
)
from alignlab.logprobs import LogProbs, reduce_token_logps
from alignlab.models.reference import Reference

FORMAT_VERSION = 1
"""Version of the file layout; a file of another version is refused, not guessed at."""
NEUTRAL_SETTINGS = frozenset({"chunk_size", "batch_size", "progress"})
"""Settings that change float rounding only; :func:`fingerprint` ignores them."""
PROGRESS_ABOVE = 256
"""``build`` shows a progress bar for more sequences than this (unless told otherwise)."""
_DOMAIN = b"alignlab.ref_cache.fingerprint/v1"
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

RefSequence = tuple[str, Sequence[int], Sequence[int]]
"""(key, prompt_ids, completion_ids)."""


class RefCacheError(AlignlabError):
    """A reference cache that cannot be trusted: corrupted, stale, or of an unknown format."""


def weights_fingerprint(model: nn.Module, *, without_adapters: bool = False) -> str:
    """sha256 over every parameter and buffer: name, dtype, shape and raw bytes, in name order.

    ``without_adapters=True`` describes a peft model as its base model (adapter weights left out,
    ``base_layer``/``original_module`` names mapped back), which is the reference that
    ``AdapterReference`` computes: it equals the fingerprint of the plain base model. It reads
    every weight once (seconds per GB); compute it once per run.
    """
    model = unwrap(model)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if without_adapters and hasattr(model, "get_base_model"):
        tensors = _base_model_tensors(model)
    h = hashlib.sha256(_DOMAIN + b"/weights")
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        if hasattr(tensor, "full_tensor"):  # a DTensor (FSDP2): hash the whole tensor
            tensor = tensor.full_tensor()
        if tensor.is_meta:
            raise AlignlabError(
                f"cannot fingerprint the reference weights: {name} is on the meta device "
                "(offloaded or not loaded yet)"
            )
        _update(h, name, str(tensor.dtype), json.dumps(list(tensor.shape)))
        raw = tensor.contiguous().cpu().reshape(-1).view(torch.uint8)
        h.update(raw.numpy())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of a tokenizer: its full serialization if fast, else sorted vocab; special tokens and
    chat template in both cases. ``None`` (data tokenized elsewhere) has a fingerprint too."""
    h = hashlib.sha256(_DOMAIN + b"/tokenizer")
    if tokenizer is None:
        _update(h, "none")
        return h.hexdigest()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if getattr(tokenizer, "is_fast", False) and backend is not None:
        _update(h, "fast", backend.to_str())
    else:
        _update(h, "slow", json.dumps(sorted(tokenizer.get_vocab().items())))
    special = getattr(tokenizer, "special_tokens_map", None) or {}
    _update(h, "special", json.dumps(special, sort_keys=True, default=str))
    _update(h, "chat_template", json.dumps(getattr(tokenizer, "chat_template", None), default=str))
    return h.hexdigest()


def fingerprint(
    model_identity: str,
    tokenizer: Any,
    sequences: Iterable[RefSequence],
    settings: Mapping[str, Any],
) -> str:
    """Hex sha256 naming a reference cache: weights, tokenizer, data (in order) and settings.

    ``model_identity`` is :func:`weights_fingerprint` of the reference (any string that changes
    whenever its weights do will serve). ``settings`` must be JSON-serializable; keys in
    :data:`NEUTRAL_SETTINGS` are ignored (see the module docstring).
    """
    data = hashlib.sha256(_DOMAIN + b"/data")
    count = 0
    for key, prompt_ids, completion_ids in sequences:
        _update(data, key)
        data.update(_ids_bytes(prompt_ids))
        data.update(_ids_bytes(completion_ids))
        count += 1
    _update(data, f"count={count}")
    kept = {k: v for k, v in settings.items() if k not in NEUTRAL_SETTINGS}
    h = hashlib.sha256(_DOMAIN)
    _update(
        h,
        model_identity,
        tokenizer_fingerprint(tokenizer),
        data.hexdigest(),
        json.dumps(kept, sort_keys=True, separators=(",", ":")),
    )
    return h.hexdigest()


def cache_file(cache_dir: str | Path, fingerprint: str) -> Path:
    """``<cache_dir>/<fingerprint>.safetensors``; the fingerprint must be a sha256 hex digest, so
    that nothing is ever written outside the cache directory."""
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"a cache fingerprint is 64 lower-case hex digits, got {fingerprint!r}")
    return Path(cache_dir) / f"{fingerprint}.safetensors"


class RefCache:
    """Per-token reference log-probs of named sequences, verified when read from disk."""

    def __init__(
        self,
        fingerprint: str,
        keys: Sequence[str],
        values: Tensor,
        offsets: Tensor,
        created: str | None = None,
    ) -> None:
        keys = list(keys)
        if values.dtype != torch.float32 or values.dim() != 1:
            raise ValueError(
                f"values must be 1-D float32, got {values.dtype} {tuple(values.shape)}"
            )
        if offsets.dtype != torch.int64 or offsets.shape != (len(keys) + 1,):
            raise ValueError(
                f"offsets must be int64 of length {len(keys) + 1}, got {offsets.dtype} "
                f"{tuple(offsets.shape)}"
            )
        bounds = offsets.tolist()
        if bounds[0] != 0 or bounds[-1] != values.numel() or any(
            a > b for a, b in pairwise(bounds)
        ):
            raise ValueError("offsets must rise from 0 to len(values)")
        self._index = {key: i for i, key in enumerate(keys)}
        if len(self._index) != len(keys):
            twice = [key for key, n in Counter(keys).items() if n > 1]
            raise ValueError(f"keys appear more than once: {twice[:5]}")
        self.fingerprint = fingerprint
        self.keys = keys
        self.values = values
        self.offsets = offsets
        self.created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._bounds = bounds

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __getitem__(self, key: str) -> Tensor:
        """The per-token log-probs of ``key``'s completion tokens, (count,) float32."""
        i = self._index[key]
        return self.values[self._bounds[i] : self._bounds[i + 1]]

    @classmethod
    def build(
        cls,
        reference: nn.Module | Reference,
        sequences: Sequence[RefSequence],
        pad_id: int,
        *,
        fingerprint: str,
        batch_size: int = 64,
        chunk_size: int = 1024,
        precision: str = "fp32",
        progress: bool | None = None,
        packing: bool | None = None,
    ) -> RefCache:
        """Compute every sequence's per-token reference log-probs, no gradients.

        ``reference`` is a model (run in eval mode for the build, its modes restored after, its
        weights untouched) or a :class:`Reference` (``AdapterReference(policy)`` for the base of a
        LoRA policy). Sequences with the same prompt go into the same batch, so that the packed
        forward (``packing``, default: where the model supports it) encodes their prompt once;
        groups go longest first in batches of about ``batch_size`` sequences (little padding on
        the plain path, and an out-of-memory shows on the first batch); ``progress`` shows a bar
        (default: above :data:`PROGRESS_ABOVE` sequences). A non-finite log-prob is an error, not
        a cached value.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        sequences = list(sequences)
        keys = [key for key, _, _ in sequences]
        pieces: list[Tensor] = [torch.empty(0)] * len(sequences)
        model = getattr(reference, "model", reference)
        device = model_device(model) if isinstance(model, nn.Module) else torch.device("cpu")
        show = len(sequences) > PROGRESS_ABOVE if progress is None else progress
        with _progress(show, len(sequences)) as advance:
            for rows in _batches_by_prompt(sequences, batch_size):
                batch = collate_sequences([sequences[i][1:] for i in rows], pad_id,
                                          keys=[keys[i] for i in rows])
                if isinstance(reference, nn.Module):
                    lp = frozen_logps(reference, batch, chunk_size, precision, packing)
                else:
                    with autocast_for(precision, device):
                        lp = reference.logps(batch)
                mask = batch.completion_mask
                flat = lp.tokens.float().cpu()[mask]
                for i, values in zip(rows, flat.split(mask.sum(-1).tolist()), strict=True):
                    pieces[i] = values
                if not torch.isfinite(flat).all():
                    bad = [keys[i] for i in rows if not torch.isfinite(pieces[i]).all()]
                    raise AlignlabError(
                        f"non-finite reference log-probs for {bad[:5]}: nothing was cached"
                        "\n  hint: try precision fp32, and check the model's weights"
                    )
                advance(len(rows))
        counts = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
        offsets = torch.zeros(len(pieces) + 1, dtype=torch.int64)
        offsets[1:] = counts.cumsum(0)
        values = torch.cat(pieces) if pieces else torch.zeros(0)
        return cls(fingerprint, keys, values.float().contiguous(), offsets)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``<fingerprint>.safetensors``) and its ``.sha256``, each atomically,
        the checksum last."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "fingerprint": self.fingerprint,
            "keys": json.dumps(self.keys),
            "format_version": str(FORMAT_VERSION),
            "created": self.created,
        }
        tensors = {"values": self.values.contiguous(), "offsets": self.offsets.contiguous()}

        digest = ""

        def write_cache(tmp: Path) -> None:
            nonlocal digest
            save_file(tensors, str(tmp), metadata=metadata)
            digest = sha256_file(tmp)

        atomic_write(path, write_cache)
        atomic_write(checksum_file(path), lambda tmp: tmp.write_text(f"{digest}  {path.name}\n"))
        return path

    @classmethod
    def load(cls, path: str | Path, expected_fingerprint: str) -> RefCache:
        """Read a cache after checking its checksum, format version and fingerprint."""
        from safetensors import safe_open

        path = Path(path)
        delete = f"delete {path} (and {checksum_file(path).name}); it will be rebuilt"
        if not path.is_file():
            raise RefCacheError(f"no reference cache at {path}")
        checksum = checksum_file(path)
        if not checksum.is_file():
            raise RefCacheError(
                f"corrupted cache {path}: its checksum file {checksum.name} is missing (an "
                f"interrupted write?), so it cannot be verified; {delete}"
            )
        recorded = (checksum.read_text().split() or [""])[0].lower()
        actual = sha256_file(path)
        if recorded != actual:
            raise RefCacheError(
                f"corrupted cache {path}: its sha256 is {actual}, {checksum.name} records "
                f"{recorded or 'nothing'}; {delete}"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except Exception as exc:  # a checksummed file that still does not parse
            raise RefCacheError(f"corrupted cache {path}: {exc}; {delete}") from exc
        version = metadata.get("format_version")
        if version != str(FORMAT_VERSION):
            raise RefCacheError(
                f"reference cache {path} has format version {version!r}, this alignlab reads "
                f"{FORMAT_VERSION}; {delete}"
            )
        found = metadata.get("fingerprint")
        if found != expected_fingerprint:
            raise RefCacheError(
                f"stale cache {path}: it was built for fingerprint {found}, expected "
                f"{expected_fingerprint} (the reference weights, tokenizer, data or settings "
                f"differ, or the file was renamed); {delete}"
            )
        try:
            return cls(
                found,
                json.loads(metadata["keys"]),
                tensors["values"],
                tensors["offsets"],
                metadata.get("created"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise RefCacheError(f"corrupted cache {path}: {exc}; {delete}") from exc


class CachedReference:
    """Reference log-probs read from a :class:`RefCache`; no forward pass at all.

    The cached per-token log-probs of each key are placed on the completion positions of the
    batch, then reduced as :mod:`alignlab.logprobs` does. A
    row without a key (a placeholder no loss reads, such as a missing ranked response) gets 0.
    """

    def __init__(self, cache: RefCache) -> None:
        self.cache = cache
        self.forward_sequences = 0

    def logps(self, batch: SequenceBatch) -> LogProbs:
        if batch.keys is None:
            raise ValueError("a cached reference reads rows by name: the batch has no keys")
        mask = batch.completion_mask.bool()
        counts = mask.sum(-1).tolist()
        pieces = []
        for row, (key, count) in enumerate(zip(batch.keys, counts, strict=True)):
            if key is None:
                pieces.append(torch.zeros(count))
                continue
            if key not in self.cache:
                raise AlignlabError(
                    f"reference cache {self.cache.fingerprint[:12]} has no sequence {key!r}: "
                    "it was built for other data (its fingerprint must cover every sequence "
                    "the run reads)"
                )
            values = self.cache[key]
            if values.numel() != count:
                raise AlignlabError(
                    f"reference cache {self.cache.fingerprint[:12]}: sequence {key!r} has "
                    f"{values.numel()} cached completion tokens but {count} in the batch (row "
                    f"{row}): the cache is not for this tokenization"
                )
            pieces.append(values)
        tokens = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        if pieces:
            # Row-major boolean indexing visits row 0's completion positions first, in order.
            tokens[mask] = torch.cat(pieces).to(device=mask.device, dtype=torch.float32)
        return reduce_token_logps(tokens, mask)


def checksum_file(path: str | Path) -> Path:
    """``<fingerprint>.sha256`` next to ``<fingerprint>.safetensors``."""
    return Path(path).with_suffix(".sha256")


def get_or_build(
    cache_dir: str | Path, fingerprint: str, build_fn: Callable[[], RefCache]
) -> tuple[RefCache, bool]:
    """(cache, hit): the verified cache of ``fingerprint`` if present, else ``build_fn()`` saved.

    A present but damaged or stale file raises :class:`RefCacheError`; it is not rebuilt over.
    Build on one process (rank 0) and let the others load after it: two writers of the same
    fingerprint could pair one's file with the other's checksum.
    """
    path = cache_file(cache_dir, fingerprint)
    if path.exists():
        return RefCache.load(path, fingerprint), True
    cache = build_fn()
    if cache.fingerprint != fingerprint:
        raise AlignlabError(
            f"build_fn made a cache for fingerprint {cache.fingerprint}, expected {fingerprint}"
        )
    cache.save(path)
    return cache, False


def _batches_by_prompt(sequences: Sequence[RefSequence], batch_size: int) -> Iterable[list[int]]:
    """Indices of ``sequences`` in batches that keep each prompt's sequences together (a group
    larger than ``batch_size`` makes a batch of its own), longest groups first."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (_, prompt, _) in enumerate(sequences):
        groups.setdefault(tuple(prompt), []).append(i)
    ordered = sorted(groups.values(), key=lambda rows: max(len(sequences[i][1]) + len(sequences[i][2])
                                                           for i in rows), reverse=True)
    batch: list[int] = []
    for rows in ordered:
        if batch and len(batch) + len(rows) > batch_size:
            yield batch
            batch = []
        batch += rows
    if batch:
        yield batch


def _base_model_tensors(model: Any) -> dict[str, Tensor]:
    """A peft model's base weights under the names the plain base model gives them."""
    prefix = getattr(model.base_model, "prefix", "lora_")
    out: dict[str, Tensor] = {}
    base = model.get_base_model()
    for name, tensor in [*base.named_parameters(), *base.named_buffers()]:
        parts = name.split(".")
        if any(p.startswith(prefix) or p == "modules_to_save" for p in parts):
            continue
        out[".".join(p for p in parts if p not in ("base_layer", "original_module"))] = tensor
    return out


def _update(h: Any, *parts: str) -> None:
    """Feed length-prefixed strings, so that no two different lists hash alike."""
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)


def _ids_bytes(ids: Sequence[int]) -> bytes:
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    values = array("q", ids)
    if sys.byteorder != "little":
        values.byteswap()
    return len(values).to_bytes(8, "little") + values.tobytes()


class _progress:
    """A rich progress bar, or nothing; yields ``advance(n)``."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total, self.bar = show, total, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.__enter__()
        task = self.bar.add_task("reference log-probs", total=self.total)
        return lambda n: self.bar.advance(task, n)  # type: ignore[union-attr]

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

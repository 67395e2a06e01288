"""What a data kind is: how its examples become a batch, what its losses receive, what it caches.

Example: ``kind = get_kind("paired"); batch = kind.collate(items, [3, 1], pad_id, contract)``

A data kind (paired, unpaired, ranked, judged, sft, reward, prm, prompt) is one module of this package and one
:class:`DataKind` subclass registered in ``DATA_KINDS``. The trainer asks the kind of a loss's
contract for everything that depends on the shape of the data, and never tests item types:

- ``records``: the record kind to load (``alignlab.data.records.RECORD_KINDS``);
- ``tokenize``: records into tokenized items;
- ``collate``: items into a :class:`KindBatch`, whose sequences carry their reference-cache keys;
- ``inputs``: the forward outputs (policy, reference) into the named tensors of
  :data:`alignlab.losses.contract.INPUTS`;
- ``cache_sequences``: every (key, prompt ids, completion ids) a step will ask the reference for,
  under the same keys ``collate`` gives;
- ``diagnostics``: metrics logged beside the loss (ranking accuracy for pairs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from alignlab.data.tokenize import RecordTokenizer
from alignlab.errors import ConfigError
from alignlab.forward import SequenceBatch
from alignlab.losses.contract import LossContract
from alignlab.registry import DATA_KINDS

RefSequence = tuple[str, Sequence[int], Sequence[int]]
"""(key, prompt_ids, completion_ids): one sequence the reference cache holds."""


def sequence_key(prefix: str, index: int, role: str) -> str:
    """The name of one sequence in the reference cache: "17:chosen", "eval/3:response2".

    ``prefix`` separates data sets whose example indices overlap (the eval set's is "eval/")."""
    return f"{prefix}{index}:{role}"


@dataclass(frozen=True)
class KindBatch:
    """One micro-batch of a data kind: the sequences to run, and the loss inputs that are data."""

    examples: int
    """Examples in the batch (B); a pair, a ranked list, a KTO example with its KL pair is one."""
    sequences: SequenceBatch
    """What the policy (and the reference) run on; ``sequences.keys`` name its rows."""
    fields: Mapping[str, Tensor] = field(default_factory=dict)
    """Loss inputs read from the records, not computed: labels, scores, margins ..."""

    def to(self, device: torch.device | str) -> KindBatch:
        fields = {k: v.to(device) for k, v in self.fields.items()}
        return KindBatch(self.examples, self.sequences.to(device), fields)


class DataKind:
    """Base of the data kinds; subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    """The name loss contracts use (``contract.data``)."""
    records: ClassVar[str]
    """The record kind its data loads as."""
    reward_model: ClassVar[bool] = False
    """Whether the trained model is a reward model (its forward gives scores, not log-probs)."""

    def min_batch(self, contract: LossContract) -> int:
        """The fewest examples a micro-batch may hold for this loss."""
        return 1

    def tokenize(self, records: Sequence[Any], encoder: RecordTokenizer) -> tuple[list[Any], Mapping[str, int]]:
        """Tokenized items (over-long records left out) and the tokenizer's counts."""
        encoded = encoder.map(records)
        return encoded.items, encoded.stats

    def collate(self, items: Sequence[Any], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        """The batch of ``items`` (examples ``indices`` of their data set)."""
        raise NotImplementedError

    def inputs(self, contract: LossContract, batch: KindBatch, policy: Any, ref: Any) -> dict[str, Tensor]:
        """Every tensor this batch can give, under the names of the loss input vocabulary."""
        raise NotImplementedError

    def cache_sequences(self, items: Sequence[Any], prefix: str = "") -> Iterator[RefSequence]:
        """The sequences a reference cache must hold for ``items``; none for a kind no reference reads."""
        return iter(())

    def diagnostics(self, available: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-example metrics logged beside the loss's own."""
        return {}


K = TypeVar("K", bound=type[DataKind])


def register_kind(cls: K) -> K:
    """Class decorator: register one instance of a data kind under its ``name``."""
    DATA_KINDS.register(cls.name)(cls())
    return cls


def get_kind(name: str) -> DataKind:
    """The registered data kind ``name``. Importing any module of this package first runs its
    ``__init__``, which imports (registers) every kind."""
    if name not in DATA_KINDS:
        raise ConfigError(f"training on {name!r} data is not supported yet; supported data kinds: "
                          f"{', '.join(DATA_KINDS.names())}")
    return DATA_KINDS.get(name).obj


def select(contract: LossContract, available: Mapping[str, Tensor], name: str) -> dict[str, Tensor]:
    """Exactly the inputs the loss declares; one the batch cannot give is a clear error."""
    missing = [i for i in contract.inputs if i not in available]
    if missing:
        raise ConfigError(
            f"loss {name!r} needs {missing}, which {contract.data} training does not provide; "
            "choose a loss whose contract matches the data (see `alignlab losses list`)"
        )
    return {i: available[i] for i in contract.inputs}


def sequence_score(lp: Any, contract: LossContract) -> Tensor:
    """The sequence score the contract asks for (mean or sum); "token" losses read ``tokens``."""
    return lp.mean if contract.logps == "mean" else lp.sum


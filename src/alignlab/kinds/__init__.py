"""Data kinds: one module per kind of training example, each registered in ``DATA_KINDS``.

Example: ``kind = get_kind(get_loss("dpo").contract.data); items, stats = kind.tokenize(records, encoder)``

Importing this package imports each kind module, which registers its kind; adding a kind is its
module and one line here (docs/design.md shows how).
"""

from alignlab.kinds import judged, paired, prm, prompt, ranked, reward, sft, unpaired  # noqa: F401  (register)
from alignlab.kinds.base import DataKind, KindBatch, get_kind, register_kind, select, sequence_key
from alignlab.registry import DATA_KINDS

__all__ = ["DATA_KINDS", "DataKind", "KindBatch", "get_kind", "register_kind", "select", "sequence_key"]

"""Every training objective as a pure function of tensors, registered with its contract.

Example: ``from alignlab.losses import get_loss; loss_fn = get_loss("dpo").obj``

Importing this package imports each loss module, which registers its losses in ``LOSSES``.
"""

from alignlab.losses import (  # noqa: F401  (each module registers its losses)
    dpo,
    dpo_variants,
    judged,
    ranked,
    reference_free,
    reward,
    sft,
    unpaired,
)
from alignlab.losses.contract import INPUTS, LossOutput, check_loss_kwargs, get_loss, register_loss
from alignlab.registry import LOSSES

__all__ = ["INPUTS", "LOSSES", "LossOutput", "check_loss_kwargs", "get_loss", "register_loss"]

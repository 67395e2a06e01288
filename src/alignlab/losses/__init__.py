"""Every training objective as a pure function of tensors, registered with its contract.

Example: ``from alignlab.losses import get_loss; loss_fn = get_loss("dpo").obj``

Importing this package imports each loss module, which registers its losses in ``LOSSES`` (and
the advantage estimators of online RL in ``ADVANTAGES``).
"""

from alignlab.losses import (  # noqa: F401  (each module registers its losses)
    advantages,
    dpo,
    dpo_variants,
    judged,
    logic,
    online,
    ranked,
    reference_free,
    reward,
    sft,
    unpaired,
)
from alignlab.losses.advantages import AdvantageContract, register_advantage, token_rewards
from alignlab.losses.contract import INPUTS, LossOutput, check_loss_kwargs, get_loss, register_loss
from alignlab.losses.policy import (
    AGGREGATIONS,
    aggregate,
    kl_penalty,
    loss_numerator,
    loss_units,
    policy_token_losses,
)
from alignlab.registry import ADVANTAGES, LOSSES

__all__ = ["ADVANTAGES", "AGGREGATIONS", "INPUTS", "LOSSES", "AdvantageContract", "LossOutput", "aggregate",
           "check_loss_kwargs", "get_loss", "kl_penalty", "loss_numerator", "loss_units",
           "policy_token_losses", "register_advantage", "register_loss", "token_rewards"]

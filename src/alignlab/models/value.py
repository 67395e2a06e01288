"""PPO's value model (critic): a causal LM backbone with a linear head giving a value per token.

Example: ``forward = PolicyAndValue(CompletionLogps(model), TokenValueModel(copy.deepcopy(model)))``;
``forward(batch)`` returns the policy's log-probs and the critic's values, shaped like them.

The value at a completion token's position is V(x, y_<t): the head on the hidden state of the
position before it, the one that predicts the token, so values line up with the per-token
log-probs (``LogProbs.tokens``). The critic is its own copy of the backbone (as OpenRLHF's
critic model, initialised from the policy), so its updates do not move the policy; both are
submodules of :class:`PolicyAndValue`, which the loop trains, checkpoints and wraps in DDP as one
module, and whose forward returns both (DDP sees every parameter used in its forward).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from alignlab.forward import SequenceBatch, split_model
from alignlab.logprobs import LogProbs

VALUE_HEAD_FILE = "value_head.safetensors"


class TokenValueModel(nn.Module):
    """Values (B, L) of a sequence batch, 0 off the completion mask; float32 head."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        hidden = lm.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1)
        # Small random weights, as a reward model's head: zeros would give the backbone no gradient.
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.head.to(device=next(lm.parameters()).device, dtype=torch.float32)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        backbone, _ = split_model(self.lm)
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                          use_cache=False).last_hidden_state  # (B, L, H)
        per_position = self.head(hidden.float()).squeeze(-1)  # (B, L): V after reading position l
        # Token t is predicted from position t − 1: its state's value sits at t, like its log-prob.
        shifted = torch.cat([per_position.new_zeros(per_position.shape[0], 1), per_position[:, :-1]], dim=1)
        return torch.where(batch.completion_mask.bool(), shifted, 0.0)

    def save_pretrained(self, out_dir: str | Path) -> None:
        """The backbone as Hugging Face files plus ``value_head.safetensors``."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        self.lm.save_pretrained(out)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  out / VALUE_HEAD_FILE, metadata={"format": "pt", "alignlab": "value_head"})


class PolicyAndValue(nn.Module):
    """The policy's log-probs and the critic's values in one forward: ``LogProbs`` with ``values``."""

    def __init__(self, policy: nn.Module, critic: TokenValueModel) -> None:
        super().__init__()
        self.policy, self.critic = policy, critic

    def forward(self, batch: SequenceBatch) -> LogProbs:
        return replace(self.policy(batch), values=self.critic(batch))

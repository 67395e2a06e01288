"""What a decoding strategy spent: tokens generated, forward passes, reward calls.

Example: ``cost = Cost(); sample(..., cost=cost); cost.tokens_generated``

Strategies are compared at matched cost (best-of-N against DeAL at the same generated tokens),
so every strategy counts the same way: a forward pass is one call of the model on a batch,
whatever its rows; a reward call is one completion (or partial continuation) scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Cost:
    """Counters that a strategy increases as it runs (mutable on purpose: an accumulator)."""

    tokens_generated: int = 0
    """Completion tokens sampled (EOS included, padding not)."""
    forward_passes: int = 0
    """Model calls (one batch each): a prompt pass, then one per decoding step."""
    reward_calls: int = 0
    """Completions or partial continuations scored by a reward."""

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.tokens_generated + other.tokens_generated, self.forward_passes + other.forward_passes,
                    self.reward_calls + other.reward_calls)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

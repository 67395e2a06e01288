"""Loss contracts: what each registered loss needs, so trainers read contracts, never loss names.

Example: ``@register_loss("dpo", needs_ref=True, logps="sum", data="paired", paper="...", equation="Eq. 7")``,
then ``get_loss("dpo").contract.needs_ref``

A loss is a pure function. Its positional parameters name the tensors it needs, from the
vocabulary :data:`INPUTS` (a trainer builds exactly those); its keyword-only parameters are its
hyperparameters, with the paper's defaults. It returns per-example losses ``(B,)`` and a dict of
detached metrics, and never reduces over the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from alignlab.errors import ConfigError
from alignlab.registry import LOSSES, Entry, suggest

LossOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]
LogpsKind = Literal["sum", "mean", "token", "none"]
DataKindName = Literal["paired", "unpaired", "ranked", "judged", "sft", "reward", "prm", "prompt"]

INPUTS: Mapping[str, str] = {
    # paired: sequence log-probs of the completions, summed or token-mean as contract.logps says
    "policy_chosen": "(B,) policy log-prob of the chosen completion",
    "policy_rejected": "(B,) policy log-prob of the rejected completion",
    "ref_chosen": "(B,) reference log-prob of the chosen completion",
    "ref_rejected": "(B,) reference log-prob of the rejected completion",
    "chosen_lengths": "(B,) completion token counts of chosen (float)",
    "rejected_lengths": "(B,) completion token counts of rejected (float)",
    # paired, token level (logps="token"): per-token log-probs, 0 where the mask is False
    "policy_chosen_tokens": "(B, T) policy per-token log-probs of chosen",
    "policy_rejected_tokens": "(B, T) policy per-token log-probs of rejected",
    "ref_chosen_tokens": "(B, T) reference per-token log-probs of chosen",
    "ref_rejected_tokens": "(B, T) reference per-token log-probs of rejected",
    "chosen_mask": "(B, T) bool, True at completion tokens of chosen",
    "rejected_mask": "(B, T) bool, True at completion tokens of rejected",
    "chosen_weights": "(B, T) per-token weights of chosen (dense DPO)",
    "rejected_weights": "(B, T) per-token weights of rejected (dense DPO)",
    # unpaired, SFT, unlearning: one completion per example; ranked: (B, K) of them
    "policy": "(B,) policy log-prob of the completion; (B, K) for ranked data",
    "ref": "(B,) reference log-prob of the completion; (B, K) for ranked data",
    "lengths": "(B,) completion token counts (float); (B, K) for ranked data",
    "labels": "(B,) bool, True for a desirable completion",
    "kl_policy": "(B,) policy log-prob of a mismatched completion (KTO's KL estimate)",
    "kl_ref": "(B,) reference log-prob of a mismatched completion",
    "example_weights": "(B,) per-example weights (e.g. BCO's UDM density ratios)",
    "delta": "() running reward shift carried by the loss's state (BCO)",
    "train_step": "() optimizer steps taken so far, carried by the loss's state (a warm-up)",
    "scores": "(B, K) scores of ranked responses, higher is better",
    "response_mask": "(B, K) bool, True where a ranked response exists",
    # token level, one completion (SFT, CUT)
    "policy_tokens": "(B, T) policy per-token log-probs of the completion",
    "mask": "(B, T) bool, True at completion tokens",
    "misalign_tokens": "(B, T) policy per-token log-probs in CUT's misalign context",
    "negative": "(B,) bool, True where the judgment is negative (CUT)",
    "aligned_scores": "(B, M) length-normalised log-likelihoods of M aligned LLMs (PoFT)",
    # online RL (prompt-only data): the step's own sampled completions
    "advantages": "(B,) advantage of each sampled completion",
    "old_tokens": "(B, T) per-token log-probs under the policy that sampled (detached)",
    "ref_tokens": "(B, T) reference per-token log-probs of the sampled completion",
    "entropy": "(B, T) entropy of the policy's next-token distribution (detached)",
    "values": "(B, T) the critic's values V(x, y_<t) at the completion tokens (PPO), with gradient",
    "old_values": "(B, T) the critic's values when the rollout was sampled (detached)",
    "returns": "(B, T) GAE's value targets, advantages + old values (detached)",
    # reward models
    "chosen_rewards": "(B,) reward of chosen",
    "rejected_rewards": "(B,) reward of rejected",
    "margin": "(B,) required reward margin (0 where none)",
    "step_logits": "(B, S) process-reward logits, one per reasoning step",
    "step_labels": "(B, S) float step labels in [0, 1]",
    "step_mask": "(B, S) bool, True where a step exists",
}
"""The tensors a loss may ask for, by parameter name; shapes use B batch, T tokens, K responses."""

class LossState(Protocol):
    """State a loss carries across steps (BCO's running mean δ), checkpointed with the run.

    The trainer passes ``inputs()`` to the loss and calls ``update(metrics)`` after a training
    step (never during evaluation).
    """

    def inputs(self) -> dict[str, torch.Tensor]: ...
    def update(self, metrics: Mapping[str, torch.Tensor]) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Hyperparameter:
    """A keyword-only parameter of a loss and its default (the paper's)."""

    name: str
    default: Any


@dataclass(frozen=True)
class LossContract:
    """What a registered loss needs; trainers read this, never the loss's name."""

    needs_ref: bool
    """Whether the loss reads reference log-probs (``ref_*`` or ``kl_ref`` inputs); False for an
    online loss, whose KL term is optional (read when its beta > 0)."""
    logps: LogpsKind
    """The sequence score it receives: "sum" (summed log-probs), "mean" (per-token mean),
    "token" (per-token log-probs with their mask), "none" (no log-probs: reward models)."""
    data: DataKindName
    """The data kind it trains on (a name in :data:`alignlab.registry.DATA_KINDS`, or "prm")."""
    paper: str
    """Authors, year, title and arXiv id of the paper it implements."""
    equation: str
    """The equation (or section) of that paper."""
    verified: bool
    """False where the paper's text does not pin the form down; the docstring says what was chosen."""
    inputs: tuple[str, ...]
    """Its positional parameters: names from :data:`INPUTS`, the tensors a trainer must build."""
    hyperparameters: tuple[Hyperparameter, ...]
    """Its keyword-only parameters with the paper's defaults."""
    state: Callable[[], LossState] | None = None
    """A factory of state carried across steps and checkpointed (BCO's running δ), or None."""
    advantage: str | None = None
    """Online RL (prompt-only data): the advantage estimator its rollouts use by default (a name
    in :data:`alignlab.registry.ADVANTAGES`); None for every other loss."""

    @property
    def mismatched_pairs(self) -> bool:
        """Whether it reads KTO's KL estimate: each prompt with another example's completion, a
        new pair every batch (so no cache can hold their reference, and a batch needs two)."""
        return "kl_policy" in self.inputs or "kl_ref" in self.inputs


def register_loss(
    name: str,
    *,
    needs_ref: bool,
    logps: LogpsKind,
    data: DataKindName,
    paper: str,
    equation: str,
    verified: bool = True,
    state: Callable[[], LossState] | None = None,
    advantage: str | None = None,
) -> Callable[[Callable[..., LossOutput]], Callable[..., LossOutput]]:
    """Register a loss with its contract, checked now rather than at the first training step."""

    def decorate(fn: Callable[..., LossOutput]) -> Callable[..., LossOutput]:
        inputs, hyper = _split_signature(name, fn)
        reads_ref = any(i.startswith("ref") or i == "kl_ref" for i in inputs)
        # An online loss reads ref_tokens for its optional KL term only (beta > 0): it needs no reference.
        if needs_ref != (reads_ref and data != "prompt"):
            raise ConfigError(f"loss {name!r}: needs_ref={needs_ref} disagrees with its inputs {inputs}"
                              + (" (an online loss's reference is optional: needs_ref=False)" if data == "prompt" else ""))
        if logps not in ("sum", "mean", "token", "none") or data not in DataKindName.__args__:  # type: ignore[attr-defined]
            raise ConfigError(f"loss {name!r}: invalid logps={logps!r} or data={data!r}")
        if not paper or not equation:
            raise ConfigError(f"loss {name!r}: name the paper and the equation it implements")
        if (data == "prompt") != (advantage is not None):
            raise ConfigError(f"loss {name!r}: an online loss (data='prompt') names its advantage estimator, "
                              "and only it")
        contract = LossContract(needs_ref=needs_ref, logps=logps, data=data, paper=paper,
                                equation=equation, verified=verified, inputs=inputs,
                                hyperparameters=hyper, state=state, advantage=advantage)
        return LOSSES.register(name, contract)(fn)

    return decorate


def _split_signature(name: str, fn: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[Hyperparameter, ...]]:
    inputs, hyper = [], []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            if p.default is inspect.Parameter.empty:
                raise ConfigError(f"loss {name!r}: hyperparameter {p.name!r} needs a default (the paper's)")
            hyper.append(Hyperparameter(p.name, p.default))
        elif p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            if p.name not in INPUTS:
                raise ConfigError(
                    f"loss {name!r}: input {p.name!r} is not in the input vocabulary."
                    f"{suggest(p.name, INPUTS)} Hyperparameters go after '*'."
                )
            inputs.append(p.name)
        else:
            raise ConfigError(f"loss {name!r}: *args/**kwargs hide what the loss needs; name them")
    return tuple(inputs), tuple(hyper)


def get_loss(name: str) -> Entry:
    """The registered loss ``name``. Importing any module of this package first runs its
    ``__init__``, which imports (registers) every loss."""
    return LOSSES.get(name)


def check_loss_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """Hyperparameters from a config against the loss's own: a typo is an error with did-you-mean."""
    entry = get_loss(name)
    known = [h.name for h in entry.contract.hyperparameters]
    for key in kwargs:
        if key not in known:
            raise ConfigError(
                f"unknown hyperparameter {key!r} for loss {name!r}.{suggest(str(key), known)} "
                f"Hyperparameters: {', '.join(known) or 'none'}"
            )

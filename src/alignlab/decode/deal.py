"""DeAL: decoding-time alignment as a reward-guided beam search over tokens with greedy lookahead.

Example: ``deal(TextSampler(model, tok), ["Say hi."], build_reward("length_target(target=20)"), beam_width=2)``

Huang et al. 2024, "DeAL: Decoding-time Alignment for Large Language Models" (ACL 2025, arXiv
2402.06147) frame decoding as heuristic-guided (A*-like) search: a state is the prompt plus the
tokens generated so far, an action appends one of the LM's top-k next tokens, and the alignment
objective, read on a short greedy **lookahead** rollout of each candidate, is the heuristic that
ranks them; a beam of the best states is kept until EOS or the length limit. The paper's
hyperparameters are the beam size, the top-k and the lookahead length (here ``beam_width``,
``candidates`` and ``lookahead``).

What here is a choice of this implementation, not verified against the paper:

- The ranking is ``reward(prefix ⊕ candidate ⊕ rollout) + lm_weight · log p(prefix ⊕ candidate)``.
  The paper combines the LM likelihood with the alignment heuristic, but its exact combination
  and weight are unverified; ``lm_weight=0`` (the default) ranks by the reward alone and keeps
  the LM only as the top-k pruning. Ties keep the earlier state (beams in rank order, a beam's
  candidates by logit, lower token id first), so a constant reward with ``beam_width=1`` is
  greedy decoding.
- The rollout is greedy under the policy itself (the paper notes a cheaper model may do it) and
  never runs past ``max_new_tokens``: it estimates how the completion scores once complete, and
  no completion is longer than that.
- A state that ended (EOS) stays in the beam with its score and competes with the new ones.

The search is deterministic (top-k by logit and greedy rollouts), so it takes no seed.

Cost, per prompt (prompts are searched one after another): one forward for the prompt; then per
step one forward of all the step's candidate states at full length (no cache kept across steps:
simple, and every state of a step has the same length, so no padding), which gives both the
rollouts' first tokens and, for the survivors, the next step's top-k; then ``l − 1`` cached
forwards for rollouts of ``l`` tokens (fewer when every rollout has reached EOS). A step whose
candidates are all complete (EOS or the length limit) runs no forward. ``tokens_generated``
counts every candidate token appended to a state and every rollout token; ``reward_calls``
every scored text (one per candidate state; the final beams reuse their last score, which was
read on their full text since a complete state has no rollout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from alignlab.data.records import Text
from alignlab.decode.candidates import Candidate, Decoded, PromptColumns, Selection, TextSampler
from alignlab.decode.cost import Cost
from alignlab.decode.sampling import cache_kwarg
from alignlab.forward import base_model, eval_mode, model_device
from alignlab.rewards import Reward


@dataclass(frozen=True)
class _State:
    """A beam entry: the generated ids, their log-prob under the policy, and the reward's score of
    its last lookahead text (None when unscorable)."""

    ids: tuple[int, ...]
    logp: float
    score: float | None
    done: bool


def deal(sampler: TextSampler, prompts: Sequence[Text], reward: Reward, *, beam_width: int = 2,
         candidates: int = 4, lookahead: int = 4, max_new_tokens: int | None = None,
         columns: PromptColumns | None = None, lm_weight: float = 0.0) -> Decoded:
    """Search each prompt's completion token by token: every beam proposes its ``candidates``
    most likely next tokens, each is rolled out ``lookahead`` tokens greedily and scored by
    ``reward`` on that text, and the ``beam_width`` best states (see the module docstring for
    the ranking) go on, until every beam has ended or has ``max_new_tokens`` tokens (default:
    the sampler's). The selection's candidates are the final beams in rank order with their
    reward scores; the chosen one is the first, or None when the reward could score none.
    ``columns`` give each scored text its prompt's values. Each selection's ``details`` hold
    its search's steps, scored and unscorable texts, the beams' log-probs and its share of the
    cost (``cost``: the counters of :class:`Cost`, summing to the call's)."""
    max_new_tokens = sampler.options.max_new_tokens if max_new_tokens is None else max_new_tokens
    _check(beam_width, candidates, lookahead, max_new_tokens, lm_weight)
    columns = dict(columns or {})
    for name, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(prompts)} prompts")
    cost = Cost()
    search = _Search(sampler, reward, beam_width, candidates, lookahead, max_new_tokens, lm_weight, cost)
    selections = []
    with torch.no_grad(), eval_mode(sampler.model):
        for i, (prompt, ids) in enumerate(zip(prompts, sampler.prompt_ids(prompts), strict=True)):
            if not ids:
                raise ValueError(f"prompt {i} encodes to no tokens: a prompt needs at least one (a BOS will do)")
            selections.append(search.run(prompt, ids, {name: values[i] for name, values in columns.items()}))
    name = f"deal(beam={beam_width}, k={candidates}, lookahead={lookahead}" + \
        (f", lm_weight={lm_weight})" if lm_weight else ")")
    return Decoded(name, tuple(selections), cost)


class _Search:
    """One prompt's search; holds what every prompt shares (the model, the reward, the cost)."""

    def __init__(self, sampler: TextSampler, reward: Reward, beam_width: int, candidates: int, lookahead: int,
                 max_new_tokens: int, lm_weight: float, cost: Cost) -> None:
        self.sampler, self.reward, self.cost = sampler, reward, cost
        self.beam_width, self.k, self.lookahead = beam_width, candidates, lookahead
        self.max_new_tokens, self.lm_weight = max_new_tokens, lm_weight
        self.model = sampler.model
        self.device = model_device(self.model)
        self.eos = sampler.encoder.eos_id
        self.cache_kwarg = cache_kwarg(self.model)

    def run(self, prompt: Text, prompt_ids: Sequence[int], columns: dict[str, Any]) -> Selection:
        beams = [_State((), 0.0, None, False)]
        spent_before = Cost(**self.cost.as_dict())
        logits = self._forward(torch.tensor([list(prompt_ids)], device=self.device))  # (1, V)
        steps = scored = unscorable = 0
        while any(not b.done for b in beams):
            steps += 1
            open_beams = [b for b in beams if not b.done]
            logps = torch.log_softmax(logits, dim=-1)
            # Top-k by logit, ties to the lower id: a stable sort keeps equal logits in id order.
            order = torch.sort(logits, dim=-1, descending=True, stable=True).indices[:, :self.k]
            expanded = [(b.ids + (int(t),), b.logp + float(logps[r, t]))
                        for r, b in enumerate(open_beams) for t in order[r].tolist()]
            self.cost.tokens_generated += len(expanded)
            rollouts, next_logits = self._rollouts(prompt_ids, [ids for ids, _ in expanded])
            texts = [self.sampler.text(ids + roll) for (ids, _), roll in zip(expanded, rollouts, strict=True)]
            scores = self.reward([prompt] * len(texts), texts, {name: [v] * len(texts) for name, v in columns.items()})
            self.cost.reward_calls += len(texts)
            scored += len(texts)
            unscorable += sum(s is None for s in scores)
            new = [_State(ids, lp, s, self._complete(ids)) for (ids, lp), s in zip(expanded, scores, strict=True)]
            # Ended beams first: they were ranked before this step's states, so they win ties.
            pool = [b for b in beams if b.done] + new
            rows = [None] * sum(b.done for b in beams) + list(range(len(new)))
            ranked = sorted(range(len(pool)), key=lambda j: self._key(pool[j]))[:self.beam_width]
            beams = [pool[j] for j in ranked]
            keep = [rows[j] for j in ranked if not pool[j].done]
            if keep:
                logits = next_logits[torch.tensor(keep, device=next_logits.device)]  # type: ignore[index]
        chosen = 0 if beams[0].score is not None else None
        final = tuple(Candidate(self.sampler.text(b.ids), b.ids, b.score) for b in beams)
        spent = {name: value - getattr(spent_before, name) for name, value in self.cost.as_dict().items()}
        details = {"steps": steps, "scored": scored, "unscorable": unscorable, "logps": [b.logp for b in beams],
                   "cost": spent}
        return Selection(prompt, final, chosen, details)

    def _key(self, state: _State) -> tuple[int, float]:
        """Sort key, ascending: numbers before None (unscorable), then the higher combined score;
        ``sorted`` is stable, so equal keys keep the pool's order."""
        if state.score is None:
            return (1, 0.0)
        return (0, -(state.score + self.lm_weight * state.logp))

    def _complete(self, ids: tuple[int, ...]) -> bool:
        return ids[-1] == self.eos or len(ids) >= self.max_new_tokens

    def _rollouts(self, prompt_ids: Sequence[int], states: list[tuple[int, ...]]) -> tuple[list[tuple[int, ...]],
                                                                                            Tensor | None]:
        """Greedy rollouts (EOS included) of every state, and the next-token logits of every state
        (rows in state order; None when all are complete, which needs no forward)."""
        empty: list[tuple[int, ...]] = [() for _ in states]
        open_rows = [r for r, ids in enumerate(states) if not self._complete(ids)]
        if not open_rows:
            return empty, None
        # Every open state has the same length (complete ones are left out), so there is no padding.
        batch = torch.tensor([[*prompt_ids, *states[r]] for r in open_rows], device=self.device)
        cache = _new_cache(self.model)
        logits = self._forward(batch, cache)
        next_logits = torch.zeros(len(states), logits.shape[-1], device=logits.device)
        next_logits[torch.tensor(open_rows, device=logits.device)] = logits
        length = min(self.lookahead, self.max_new_tokens - len(states[open_rows[0]]))
        rolled: list[list[int]] = [[] for _ in open_rows]
        running = [True] * len(open_rows)
        attention = torch.ones_like(batch)
        position = torch.full((len(open_rows), 1), batch.shape[1] - 1, device=self.device)
        step_logits = logits
        for t in range(length):
            tokens = step_logits.argmax(-1).tolist()  # argmax takes the first maximum: the lower id
            for r, token in enumerate(tokens):
                if running[r]:
                    rolled[r].append(token)
                    running[r] = token != self.eos
                    self.cost.tokens_generated += 1
            if not any(running) or t == length - 1:
                break
            # Rows that ended keep being fed (the pad id); their outputs are never read.
            fed = torch.tensor([tok if run else self.sampler.pad_id for tok, run in zip(tokens, running, strict=True)],
                               device=self.device)[:, None]
            attention = torch.cat([attention, attention.new_ones(len(attention), 1)], dim=1)
            position = position + 1
            out = self.model(input_ids=fed, attention_mask=attention, position_ids=position, use_cache=True,
                             **{self.cache_kwarg: cache})
            self.cost.forward_passes += 1
            step_logits = out.logits[:, -1, :].float()
        rollouts = list(empty)
        for r, roll in zip(open_rows, rolled, strict=True):
            rollouts[r] = tuple(roll)
        return rollouts, next_logits

    def _forward(self, input_ids: Tensor, cache: Any = None) -> Tensor:
        """Last-position logits (float32, as generate reads them) of unpadded rows; fills ``cache``."""
        attention = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        extra = {} if cache is None else {self.cache_kwarg: cache}
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         use_cache=cache is not None, logits_to_keep=1, **extra)
        self.cost.forward_passes += 1
        return out.logits[:, -1, :].float()


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=base_model(model).config)
    except TypeError:  # transformers before 4.56 takes no config
        return DynamicCache()


def _check(beam_width: int, candidates: int, lookahead: int, max_new_tokens: int, lm_weight: float) -> None:
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}")
    if candidates < 1:
        raise ValueError(f"candidates (top-k next tokens per beam) must be at least 1, got {candidates}")
    if lookahead < 0:
        raise ValueError(f"lookahead must be >= 0 (0 scores the prefix itself), got {lookahead}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not math.isfinite(lm_weight):
        raise ValueError(f"lm_weight must be a finite number, got {lm_weight}")

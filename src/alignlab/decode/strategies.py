"""The decoding strategies by name, each on the one sampler, each returning a :class:`Decoded`.

Example: ``decode_with("vote", sampler, prompts, n=8)``; ``STRATEGIES`` lists them

``sample`` (the first of n samples, scored when a reward is given), ``greedy``, ``bon``
(best-of-N by a reward), ``rejection`` (rounds of N until one scores ≥ a threshold), ``vote``
(self-consistency: majority over extracted answers, or reward-weighted with a reward), ``urial``
(a base model inside the URIAL prompt), ``steer`` (a steering vector added while sampling),
``deal`` (a reward-guided token-level beam search with lookahead) and ``guided`` (retrieved
guidelines put into the prompt).

Every reward scores a completion against the prompt as the user gave it: never the chat-wrapped
text (the sampler wraps only the token ids it encodes), the URIAL prompt or the guideline-laden one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from alignlab.data.records import Text
from alignlab.decode.best_of_n import best_of_n, rejection_sample
from alignlab.decode.candidates import (
    Candidate,
    Decoded,
    PromptColumns,
    Selection,
    TextSampler,
    choose_best,
    score_candidates,
)
from alignlab.decode.cost import Cost
from alignlab.decode.deal import deal
from alignlab.decode.guidelines import GuidelineLibrary, guide
from alignlab.decode.sampling import SamplingOptions
from alignlab.decode.steering import SteeringVectors, steer
from alignlab.decode.urial import (
    DEFAULT_TEMPLATE,
    UrialTemplate,
    build_urial_prompt,
    cut_urial_answer,
)
from alignlab.decode.voting import Match, Vote, canonical_answer, majority_vote, weighted_vote
from alignlab.errors import ConfigError
from alignlab.rewards import Reward


def sample_first(sampler: TextSampler, prompts: Sequence[Text], n: int = 1, reward: Reward | None = None,
                 columns: PromptColumns | None = None, options: SamplingOptions | None = None) -> Decoded:
    """Plain sampling: ``n`` samples per prompt, the first chosen; scored when a reward is given."""
    cost = Cost()
    candidates = sampler.sample(prompts, n, cost=cost, options=options)
    if reward is not None:
        candidates = score_candidates(reward, prompts, candidates, columns, cost)
    # The first sample is the choice whatever its score: plain sampling, scored only for the record.
    return Decoded("sample", tuple(Selection(p, tuple(row), 0) for p, row in zip(prompts, candidates, strict=True)),
                   cost)


def greedy(sampler: TextSampler, prompts: Sequence[Text], reward: Reward | None = None,
           columns: PromptColumns | None = None) -> Decoded:
    """Greedy decoding (temperature 0): one completion per prompt."""
    decoded = sample_first(sampler, prompts, 1, reward, columns, replace(sampler.options, temperature=0.0))
    return replace(decoded, strategy="greedy")


def vote(sampler: TextSampler, prompts: Sequence[Text], n: int, reward: Reward | None = None,
         columns: PromptColumns | None = None, match: Match = "auto", exponentiate: bool = False) -> Decoded:
    """Self-consistency (Wang et al. 2023, arXiv 2203.11171): the answer most of the ``n`` samples
    reach; with a reward, the answer whose samples' scores sum highest (reward-weighted voting,
    Sun et al. 2024, arXiv 2403.09472). The chosen completion is the first carrying the winning
    answer; a sample with no answer abstains (counted in ``details``). Weights are the reward's
    scores as given, which must then be ≥ 0 (probabilities of correctness, as the paper's);
    ``exponentiate`` weighs by exp(score) instead, for rewards on any scale."""
    cost = Cost()
    candidates = sampler.sample(prompts, n, cost=cost)
    if reward is not None:
        candidates = score_candidates(reward, prompts, candidates, columns, cost)
    selections = []
    for prompt, row in zip(prompts, candidates, strict=True):
        answers = [canonical_answer(c.text, match) for c in row]
        result = _weighted(answers, row, exponentiate) if reward is not None else majority_vote(answers)
        details = {"answer": result.answer, "votes": {str(a): t for a, t in result.totals.items()},
                   "abstained": result.abstained}
        if reward is not None:
            details["unscored"] = result.unscored
        selections.append(Selection(prompt, tuple(row), result.index, details))
    kind = "weighted_vote" if reward is not None else "majority_vote"
    return Decoded(kind, tuple(selections), cost)


def _weighted(answers: list[Any], row: Sequence[Candidate], exponentiate: bool) -> Vote:
    if not exponentiate and any(c.score is not None and c.score < 0 for c in row):
        low = min(c.score for c in row if c.score is not None)  # type: ignore[type-var]
        raise ConfigError(f"reward-weighted voting sums the scores as weights, and the reward gave {low}\n"
                          "  hint: use a reward in [0, 1] (a verifier, a reward model's probability), or weigh "
                          "by exp(score) (--vote-weights exp)")
    return weighted_vote(answers, [c.score for c in row], exponentiate=exponentiate)


def urial(sampler: TextSampler, prompts: Sequence[Text], n: int = 1, reward: Reward | None = None,
          columns: PromptColumns | None = None, template: UrialTemplate = DEFAULT_TEMPLATE) -> Decoded:
    """URIAL (Lin et al. 2024, arXiv 2312.01552): a base model answers inside the in-context
    alignment prompt; each sample is cut at the next ``# Query`` block. With a reward the best of
    the ``n`` is chosen, else the first."""
    queries = [_plain_query(p) for p in prompts]
    cost = Cost()
    # URIAL is for base models: its prompt is raw text, never wrapped in a chat template.
    drawn = sampler.sample([build_urial_prompt(q, template) for q in queries], n, cost=cost, as_chat=False)
    candidates = [[replace(c, text=cut_urial_answer(c.text)) for c in row] for row in drawn]
    return choose_best("urial", prompts, candidates, reward, columns, cost)


def steered(sampler: TextSampler, prompts: Sequence[Text], vectors: SteeringVectors, alpha: float, n: int = 1,
            reward: Reward | None = None, columns: PromptColumns | None = None,
            layers: Sequence[int] | None = None) -> Decoded:
    """Sampling with a steering vector added at strength ``alpha`` (Wolf et al. 2024, arXiv
    2401.16332); the hooks are gone afterwards. With a reward the best of the ``n`` is chosen."""
    cost = Cost()
    with steer(sampler.model, vectors, alpha, layers=layers):
        candidates = sampler.sample(prompts, n, cost=cost)
    return choose_best(f"steer(alpha={alpha})", prompts, candidates, reward, columns, cost)


def guided(sampler: TextSampler, prompts: Sequence[Text], library: GuidelineLibrary, n: int = 1,
           reward: Reward | None = None, columns: PromptColumns | None = None, k: int = 3,
           tags: Sequence[str] | None = None, how: str = "system") -> Decoded:
    """Guide-Align (Luo et al. 2024, arXiv 2403.11838): each prompt's ``k`` most relevant
    guidelines of ``library`` (only those with one of ``tags``, when given) go into the prompt
    before the model answers. With a reward the best of the ``n`` is chosen, scored against the
    prompt without the guidelines; each selection's details list the guidelines it got."""
    # A string the sampler would send as a user message becomes that message here, so that the
    # guidelines go where ``how`` says (a system message) rather than into the user's own text.
    asked = [({"role": "user", "content": p},) if sampler.as_chat and isinstance(p, str) else p for p in prompts]
    shown = guide(asked, library, k=k, tags=tags, how=how)
    cost = Cost()
    candidates = sampler.sample(shown.prompts, n, cost=cost)
    decoded = choose_best(f"guided(k={k})", prompts, candidates, reward, columns, cost)
    selections = tuple(replace(s, details={"guidelines": [{"id": g.id, "text": g.text} for g in found]})
                       for s, found in zip(decoded.selections, shown.guidelines, strict=True))
    return replace(decoded, selections=selections)


def _plain_query(prompt: Text) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    if len(users) != 1 or len(prompt) != len(users) + sum(m["role"] == "system" for m in prompt):
        raise ConfigError("URIAL writes one query into its own prompt; this chat has several turns\n"
                          "  hint: give single-question prompts (a string, or one user message)")
    return users[0]


STRATEGIES: dict[str, str] = {
    "sample": "plain sampling (the first of --n samples)",
    "greedy": "greedy decoding",
    "bon": "best-of-N by the reward",
    "rejection": "rounds of N until a sample scores at least --threshold",
    "vote": "majority vote over extracted answers (reward-weighted with --reward)",
    "urial": "a base model answering inside the URIAL in-context alignment prompt",
    "steer": "sampling with a steering vector added (--steering FILE, --alpha)",
    "deal": "DeAL: a beam search over tokens ranked by the reward on a greedy lookahead",
    "guided": "Guide-Align: the most relevant guidelines of --guidelines FILE put into the prompt",
}
"""Strategy name → what it does (for help texts and errors)."""

GUIDELINES_HINT = 'a JSONL file with one guideline a line, like {"text": "Refuse to help with violence.", ' \
    '"tags": ["safety"], "id": "g1"}'
"""What the guided strategy's library looks like (for its errors)."""


def decode_with(strategy: str, sampler: TextSampler, prompts: Sequence[Text], *, n: int = 1,
                reward: Reward | None = None, columns: PromptColumns | None = None,
                **options: Any) -> Decoded:
    """Run the named strategy. ``bon``, ``rejection`` and ``deal`` need a reward; ``rejection``
    takes ``threshold`` and ``max_rounds``; ``vote`` takes ``match`` and ``exponentiate``;
    ``urial`` takes a ``template``; ``steer`` takes ``steering`` (vectors), ``alpha`` and
    ``layers``; ``deal`` takes ``beam_width``, ``candidates``, ``lookahead`` and ``lm_weight``
    (its length limit is the sampler's ``max_new_tokens``); ``guided`` takes ``guidelines`` (a
    :class:`GuidelineLibrary`), ``k``, ``tags`` and ``how``."""
    runners: dict[str, Callable[[], Decoded]] = {
        "sample": lambda: sample_first(sampler, prompts, n, reward, columns),
        "greedy": lambda: greedy(sampler, prompts, reward, columns),
        "bon": lambda: best_of_n(sampler, prompts, _needs(reward, strategy), n, columns),
        "rejection": lambda: rejection_sample(sampler, prompts, _needs(reward, strategy), n,
                                              _option(options, "threshold", strategy),
                                              options.get("max_rounds", 4), columns),
        "vote": lambda: vote(sampler, prompts, n, reward, columns, options.get("match", "auto"),
                             options.get("exponentiate", False)),
        "urial": lambda: urial(sampler, prompts, n, reward, columns, options.get("template") or DEFAULT_TEMPLATE),
        "steer": lambda: steered(sampler, prompts, _option(options, "steering", strategy),
                                 _option(options, "alpha", strategy), n, reward, columns, options.get("layers")),
        "deal": lambda: deal(sampler, prompts, _needs(reward, strategy), beam_width=options.get("beam_width", 2),
                             candidates=options.get("candidates", 4), lookahead=options.get("lookahead", 4),
                             columns=columns, lm_weight=options.get("lm_weight", 0.0)),
        "guided": lambda: guided(sampler, prompts, _option(options, "guidelines", strategy, GUIDELINES_HINT), n,
                                 reward, columns, options.get("k", 3), options.get("tags"),
                                 options.get("how", "system")),
    }
    if strategy not in runners:
        raise ConfigError(f"unknown strategy {strategy!r}\n  hint: one of {', '.join(STRATEGIES)}")
    if strategy == "deal" and n != 1:
        # The search is deterministic: n samples would be n copies. Its candidates are the beams.
        raise ConfigError(f"strategy 'deal' searches instead of sampling, so it takes no n (got {n})\n"
                          "  hint: drop --n; DeAL's candidates are its --beam-width final beams")
    return runners[strategy]()


def _needs(reward: Reward | None, strategy: str) -> Reward:
    if reward is None:
        raise ConfigError(f"strategy {strategy!r} chooses by a reward, and none was given\n"
                          "  hint: --reward NAME (`alignlab rewards list`), e.g. --reward testbed_true")
    return reward


def _option(options: dict[str, Any], name: str, strategy: str, hint: str = "") -> Any:
    if options.get(name) is None:
        raise ConfigError(f"strategy {strategy!r} needs --{name}" + (f"\n  hint: {hint}" if hint else ""))
    return options[name]

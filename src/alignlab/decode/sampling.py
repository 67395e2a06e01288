"""Batched, KV-cached, seeded sampling from a causal LM, and the log-probs of what was sampled.

Example: ``ys = sample(model, prompts, n=4, options=SamplingOptions(seed=1), eos_id=2, pad_id=0)``

Determinism. Sample ``j`` of prompt ``i`` (``i`` its index in ``prompts``) draws its randomness
from its own generator, seeded from ``(seed, i, j)``: the t-th token comes from the t-th draw of
that stream, whatever else is in the batch. So the same seed gives the same samples for any
``batch_size``, for any other prompts alongside, and for any larger ``n`` (the first n samples are
those of the smaller call), on one device type and software stack; CPU and CUDA streams differ.
What can still move a token is floating point: padding a prompt to a different length changes
the kernels' shapes, and a logit's last bits with them, which flips a draw only when two
perturbed logits tie within that rounding (rare in float32, less rare in bf16). The same call on
the same machine repeats exactly wherever the model's forward is deterministic.

The n samples of a prompt share one prompt encoding: the batch's prompts run through the model
once, and their KV cache and last logits are repeated n times before the decoding steps
(``share_prompt``). With ``share_prompt=False`` the same loop is ``model.generate`` on n copies
of each prompt; both give the same tokens.

Sampling is Gumbel-max: the processed logits (temperature, top-k, top-p) plus Gumbel noise from
the per-sample streams, then argmax, which draws exactly from their softmax. At temperature 1,
without truncation, a sample's probability is the one :func:`score` reports.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import track
from torch import Tensor

from alignlab.decode.cost import Cost
from alignlab.forward import base_model, collate_sequences, eval_mode, model_device, sequence_logps

PROGRESS_FROM = 64
"""Samples (prompts × n, for sampling) or sequences (for scoring) from which a progress bar is shown."""


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample: length, distribution and batching."""

    max_new_tokens: int = 64
    """Longest completion; one that reaches it without EOS is cut there."""
    temperature: float = 1.0
    """Divides the logits; 0 is greedy decoding (then only one sample per prompt)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much probability; 1 is off."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 is off."""
    seed: int = 0
    """Seeds every sample's own random stream (see the module docstring for the guarantee)."""
    batch_size: int = 16
    """Prompts per generate call; each brings its n samples, so batch_size × n rows."""
    share_prompt: bool = True
    """Encode each prompt once and copy its KV cache to its n samples (alignlab's decoding loop);
    False runs ``model.generate`` on n copies of every prompt, the plain path, kept to check the
    fast one against (same samples, token for token)."""


@dataclass(frozen=True)
class SampleLogProbs:
    """Log-probs of completions under a model, one entry per (prompt, sample), flat (S,).

    Entries run prompt by prompt, and within a prompt sample by sample: entry k is sample
    ``sample_index[k]`` of prompt ``prompt_index[k]``.
    """

    sum: Tensor
    """(S,) float64: log p(y | x), summed over the completion tokens."""
    mean: Tensor
    """(S,) float64: sum / counts; 0 for an empty completion."""
    counts: Tensor
    """(S,) float64: completion tokens."""
    prompt_index: Tensor
    """(S,) long."""
    sample_index: Tensor
    """(S,) long."""


def sample(
    model: Any,
    prompts: Sequence[Sequence[int]],
    n: int,
    options: SamplingOptions = SamplingOptions(),  # noqa: B008 (frozen, so safe to share)
    *,
    eos_id: int | Sequence[int],
    pad_id: int,
    streams: Sequence[int] | None = None,
    first_sample: int = 0,
    cost: Cost | None = None,
    progress: bool = True,
) -> list[list[tuple[int, ...]]]:
    """``n`` completions (token ids) of every prompt, in prompt order.

    A completion ends with the first EOS it generated (included), or has ``max_new_tokens``
    tokens. Prompts are token ids with at least one token (a BOS will do); they are left-padded
    into batches and generated with the model's KV cache. The model runs in eval mode, without
    gradients, and gets its mode back.

    ``streams`` names the random stream of each prompt (default: its index) and ``first_sample``
    the stream index of its first sample, so a caller that samples more later (rejection
    sampling's next round, a subset of prompts) continues the same streams instead of repeating
    them. ``cost``, when given, is increased by the tokens generated and the forward passes run.
    ``progress=False`` never shows a bar (a caller with its own, as the training loop).
    """
    _check(options, n, prompts)
    streams = list(range(len(prompts))) if streams is None else list(streams)
    if len(streams) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(streams)} stream indices")
    eos_ids = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    device = model_device(model)
    starts: Sequence[int] = range(0, len(prompts), options.batch_size)
    if progress and len(prompts) * n > PROGRESS_FROM:
        starts = track(starts, description="sampling", transient=True)
    results: list[list[tuple[int, ...]]] = []
    cost = Cost() if cost is None else cost
    with torch.no_grad(), eval_mode(model), _clean_generation_config(model, options, eos_ids, pad_id) as config:
        for start in starts:
            indices = range(start, min(start + options.batch_size, len(prompts)))
            seeds = [row_seed(options.seed, streams[i], first_sample + j) for i in indices for j in range(n)]
            batch = [prompts[i] for i in indices]
            if options.share_prompt:
                rows = _decode_shared(model, batch, n, options, seeds, eos_ids, pad_id, device, cost)
            else:
                rows = _generate(model, config, batch, n, options, seeds, pad_id, device, cost)
            cut = [_cut_at_eos(row, eos_ids) for row in rows]
            cost.tokens_generated += sum(len(c) for c in cut)
            results.extend(cut[k * n:(k + 1) * n] for k in range(len(indices)))
    return results


def score(
    model: Any,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    *,
    batch_size: int = 16,
    chunk_size: int = 1024,
    progress: bool = True,
) -> SampleLogProbs:
    """Log-probs under ``model`` of ``completions[i][j]`` given ``prompts[i]``, flattened.

    The completion-only path of training (:func:`alignlab.forward.sequence_logps`) on
    right-padded batches of ``batch_size`` sequences, sorted by length to waste little padding;
    eval mode, no gradients, results in the input order.
    """
    if len(completions) != len(prompts):
        raise ValueError(
            f"{len(prompts)} prompts but {len(completions)} lists of completions: give one list "
            "(possibly empty) per prompt, as sample() returns them"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pairs = [(prompts[i], list(y)) for i in range(len(prompts)) for y in completions[i]]
    prompt_index = torch.tensor([i for i in range(len(prompts)) for _ in completions[i]],
                                dtype=torch.long)
    sample_index = torch.tensor([j for ys in completions for j in range(len(ys))],
                                dtype=torch.long)
    order = sorted(range(len(pairs)), key=lambda k: -(len(pairs[k][0]) + len(pairs[k][1])))
    starts: Sequence[int] = range(0, len(order), batch_size)
    if progress and len(order) > PROGRESS_FROM * batch_size:
        starts = track(starts, description="scoring samples", transient=True)
    device = model_device(model)
    results = torch.zeros(3, len(pairs), dtype=torch.float64)
    with torch.no_grad(), eval_mode(model):
        for start in starts:
            ids = order[start:start + batch_size]
            batch = collate_sequences([pairs[k] for k in ids], pad_id).to(device)
            lp = sequence_logps(model, batch, chunk_size)
            results[:, ids] = torch.stack([lp.sum, lp.mean, lp.counts]).double().cpu()
    return SampleLogProbs(results[0], results[1], results[2], prompt_index, sample_index)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of sample ``sample_index`` of prompt ``prompt_index``: a hash, so that nearby
    seeds and indices give unrelated streams."""
    key = f"{seed}:{prompt_index}:{sample_index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _left_padded(prompts: Sequence[Sequence[int]], copies: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Input ids and attention mask of ``copies`` rows per prompt, left-padded to the longest."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts) * copies, width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts) * copies, width), dtype=torch.long)
    for k, prompt in enumerate(prompts):
        input_ids[k * copies:(k + 1) * copies, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        attention[k * copies:(k + 1) * copies, width - len(prompt):] = 1
    return input_ids, attention


def _processors(options: SamplingOptions, seeds: list[int]) -> Any:
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList(_warpers(options))
    if options.temperature > 0:
        processors.append(_GumbelNoise(seeds))
    return processors


def _generate(model: Any, config: Any, prompts: Sequence[Sequence[int]], n: int, options: SamplingOptions,
              seeds: list[int], pad_id: int, device: torch.device, cost: Cost) -> list[list[int]]:
    """The plain path: ``model.generate`` on n copies of every prompt. Generated ids after the
    prompt, padding included, n rows per prompt."""
    # Each prompt repeated n times, as num_return_sequences would: generate's own expansion is
    # only for sampling mode, and Gumbel-max runs its argmax (greedy) loop.
    input_ids, attention = _left_padded(prompts, n, pad_id)
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                         generation_config=config, logits_processor=_processors(options, seeds))
    generated = out[:, input_ids.shape[1]:]
    cost.forward_passes += max(1, generated.shape[1])  # the prompt pass, then one per new token but the last
    return generated.tolist()


def _decode_shared(model: Any, prompts: Sequence[Sequence[int]], n: int, options: SamplingOptions,
                   seeds: list[int], eos_ids: list[int], pad_id: int, device: torch.device,
                   cost: Cost) -> list[list[int]]:
    """Generate's greedy loop over processed logits, with every prompt encoded once: its KV cache
    and last logits are repeated n times after the prompt pass. Same ids as :func:`_generate`."""
    from transformers import DynamicCache

    input_ids, attention = _left_padded(prompts, 1, pad_id)
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)  # as generate numbers them
    try:  # filled in place by every forward
        cache = DynamicCache(config=base_model(model).config)
    except TypeError:  # transformers before 4.56 takes no config
        cache = DynamicCache()
    cache_name = cache_kwarg(model)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                logits_to_keep=1, **{cache_name: cache})
    cost.forward_passes += 1
    cache.batch_repeat_interleave(n)  # (B·n, heads, T, d): sample j of prompt k is row k·n + j
    logits = out.logits[:, -1, :].float().repeat_interleave(n, dim=0)  # (R, V), float32 as generate does
    attention = attention.repeat_interleave(n, dim=0)
    sequences = input_ids.repeat_interleave(n, dim=0)
    position = positions[:, -1:].repeat_interleave(n, dim=0)
    processors = _processors(options, seeds)
    eos = torch.tensor(eos_ids, device=device)
    unfinished = torch.ones(len(sequences), dtype=torch.bool, device=device)
    generated: list[Tensor] = []
    for step in range(options.max_new_tokens):
        scores = processors(sequences, logits)
        tokens = torch.where(unfinished, scores.argmax(-1), pad_id)  # (R,)
        generated.append(tokens)
        unfinished &= ~torch.isin(tokens, eos)
        if not unfinished.any() or step == options.max_new_tokens - 1:
            break
        sequences = torch.cat([sequences, tokens[:, None]], dim=1)
        attention = torch.cat([attention, attention.new_ones(len(attention), 1)], dim=1)
        position = position + 1
        out = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=position,
                    use_cache=True, **{cache_name: cache})
        cost.forward_passes += 1
        logits = out.logits[:, -1, :].float()
    return torch.stack(generated, dim=1).tolist()


def cache_kwarg(model: Any) -> str:
    """The forward's name for the KV cache: ``cache`` from transformers 5.2x, ``past_key_values`` before."""
    parameters = inspect.signature(base_model(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _warpers(options: SamplingOptions) -> list[Any]:
    """Temperature, top-k, top-p, in generate's order; none for greedy decoding."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    if options.temperature == 0:
        return []
    warpers: list[Any] = []
    if options.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(options.temperature))
    if options.top_k > 0:
        warpers.append(TopKLogitsWarper(options.top_k))
    if options.top_p < 1.0:
        warpers.append(TopPLogitsWarper(options.top_p))
    return warpers


class _GumbelNoise:
    """Adds Gumbel noise from one generator per row, so that argmax draws from the softmax."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s)
                               for s in self.seeds]
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device)
                               for g in self.generators])  # (R, V)
        # rand can return 0, whose noise -inf would veto a token; clamping costs nothing.
        uniform = uniform.clamp_(min=torch.finfo(uniform.dtype).tiny)
        return scores + -torch.log(-torch.log(uniform))  # -inf (filtered) stays -inf


class _clean_generation_config:
    """The model's generation config replaced, for the call, by one that sets only ours.

    generate() fills every unset field from ``model.generation_config``: a checkpoint's
    repetition penalty, suppressed tokens or forced EOS would change the distribution sampled
    from, so that it no longer matched :func:`score`.
    """

    def __init__(self, model: Any, options: SamplingOptions, eos_ids: list[int], pad_id: int):
        from transformers import GenerationConfig

        self.target = base_model(model)
        self.config = GenerationConfig(
            max_new_tokens=options.max_new_tokens, min_new_tokens=0, do_sample=False,
            num_beams=1, num_return_sequences=1, use_cache=True, eos_token_id=eos_ids,
            pad_token_id=pad_id, bos_token_id=self.target.generation_config.bos_token_id,
        )

    def __enter__(self) -> Any:
        self.saved = self.target.generation_config
        self.target.generation_config = self.config
        return self.config

    def __exit__(self, *exc: Any) -> None:
        self.target.generation_config = self.saved


def _cut_at_eos(row: list[int], eos_ids: list[int]) -> tuple[int, ...]:
    for t, token in enumerate(row):
        if token in eos_ids:
            return tuple(row[:t + 1])
    return tuple(row)


def _check(options: SamplingOptions, n: int, prompts: Sequence[Sequence[int]]) -> None:
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be at least 1, got {n}")
    if options.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {options.temperature}")
    if options.temperature == 0 and n > 1:
        raise ValueError(
            f"temperature 0 is greedy decoding, which gives one completion per prompt, not {n}: "
            "use n=1, or a temperature above 0 for several samples"
        )
    if not 0 < options.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {options.top_p}")
    if options.top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 is off), got {options.top_k}")
    if options.max_new_tokens < 1 or options.batch_size < 1:
        raise ValueError(
            f"max_new_tokens and batch_size must be at least 1, got {options.max_new_tokens} "
            f"and {options.batch_size}"
        )
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise ValueError(
            f"prompts {empty[:5]} are empty: a prompt needs at least one token (a BOS will do) "
            "to condition the first completion token on"
        )

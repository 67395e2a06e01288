"""Steering vectors: read a direction per decoder layer from contrastive prompts, add it at inference.

Example: ``v = read_steering_vectors(model, harmless, harmful); with steer(model, v, 2.0, layers=[-4]): ...``

The method is representation engineering as used by Wolf et al. 2024, "Tradeoffs Between
Alignment and Helpfulness in Language Models with Representation Engineering" (arXiv 2401.16332),
which follows the RepE reading and control recipe of Zou et al. 2023 (arXiv 2310.01405):

- Reading. Each prompt's hidden state at the last token (the authors' ``rep_token = -1``) at the
  output of every chosen decoder layer; the positive-minus-negative difference of each pair; one
  principal component of those differences per layer (``method="pca"``), signed so that positives
  project above their negatives, and scaled to unit length. ``method="mean_diff"`` is the simpler
  mean of positives minus mean of negatives (RepE's "cluster mean" reader).
- Control. ``alpha · v_l`` added to the output of each chosen decoder block at every token
  position, prompt and generated tokens alike; positive ``alpha`` pushes towards the positives.
- Trade-off. The paper shows that for small steering norms the alignment (probability of the
  desired behaviour) rises linearly in the norm while helpfulness (task accuracy) falls
  quadratically; :func:`fit_tradeoff` fits exactly these two forms to a sweep over ``alpha``.

States are read by forward hooks on the very modules :func:`steer` writes to, rather than from
``output_hidden_states``: Hugging Face replaces the last entry of ``hidden_states`` by the output
of the final norm, so for the last layer it is not the decoder block's output that steering
changes. For every other layer the two are the same tensor (the tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from alignlab.errors import AlignlabError
from alignlab.files import atomic_write
from alignlab.forward import base_model, eval_mode, model_device

Method = Literal["mean_diff", "pca"]
Token = Literal["last", "mean"]
Norm = Literal["unit", "raw"]

METHODS = ("mean_diff", "pca")
TOKENS = ("last", "mean")
NORMS = ("unit", "raw")

LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers")
"""Where causal LMs keep their decoder blocks: Llama, Qwen, Mistral, Gemma; GPT-2; GPT-NeoX."""

FORMAT = "alignlab.steering/1"
"""The ``format`` metadata of a saved :class:`SteeringVectors` file."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors has no single truth value
class SteeringVectors:
    """One steering direction per decoder layer, and how it was read."""

    vectors: Mapping[int, Tensor]
    """Decoder layer index (0 = first block, never negative) → (hidden,) float32 CPU vector."""
    method: Method = "pca"
    """``"pca"`` (first principal component of the pair differences) or ``"mean_diff"``."""
    token: Token = "last"
    """Which hidden state stood for a prompt: the last token's, or the mean over its tokens."""
    norm: Norm = "unit"
    """``"unit"``: every vector has length 1, so ``alpha`` is the steering norm (the paper's
    ``‖r_e‖``); ``"raw"``: the vector keeps the size of the positive-negative difference."""

    def __post_init__(self) -> None:
        if not self.vectors:
            raise ValueError("SteeringVectors needs at least one layer's vector")
        if self.method not in METHODS or self.token not in TOKENS or self.norm not in NORMS:
            raise ValueError(
                f"method, token, norm must be in {METHODS}, {TOKENS}, {NORMS}; "
                f"got {self.method!r}, {self.token!r}, {self.norm!r}"
            )
        vectors: dict[int, Tensor] = {}
        for layer in sorted(self.vectors):
            vector = self.vectors[layer]
            if not isinstance(layer, int) or layer < 0:
                raise ValueError(f"layer indices must be ints >= 0 (resolved), got {layer!r}")
            if vector.dim() != 1 or not torch.isfinite(vector).all():
                raise ValueError(
                    f"layer {layer}: a steering vector must be 1-D and finite, got shape "
                    f"{tuple(vector.shape)}"
                )
            vectors[layer] = vector.detach().to("cpu", torch.float32).clone()
        sizes = {vector.numel() for vector in vectors.values()}
        if len(sizes) != 1:
            raise ValueError(f"all layers' vectors must have one hidden size, got sizes {sorted(sizes)}")
        # A read-only view, so that a frozen object cannot be edited through its dict.
        object.__setattr__(self, "vectors", MappingProxyType(vectors))

    @property
    def layers(self) -> tuple[int, ...]:
        """The decoder layers that have a vector, ascending."""
        return tuple(self.vectors)

    @property
    def hidden_size(self) -> int:
        """The length of every vector."""
        return next(iter(self.vectors.values())).numel()

    def save(self, path: str | Path) -> None:
        """Write the vectors to a safetensors file (``layer.<i>`` tensors plus metadata), atomically."""
        from safetensors.torch import save_file

        tensors = {f"layer.{layer}": vector.contiguous() for layer, vector in self.vectors.items()}
        metadata = {"format": FORMAT, "method": self.method, "token": self.token, "norm": self.norm}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        """Read what :meth:`save` wrote."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise AlignlabError(
                    f"{path} is not a steering-vectors file (metadata format "
                    f"{metadata.get('format')!r}, expected {FORMAT!r})\n"
                    "  hint: write it with SteeringVectors.save"
                )
            keys = handle.keys()  # a safetensors handle, not a dict: it cannot be iterated
            vectors = {int(key.split(".", 1)[1]): handle.get_tensor(key) for key in keys}
        return cls(vectors, metadata["method"], metadata["token"], metadata["norm"])  # type: ignore[arg-type]


def decoder_layers(model: Any) -> nn.ModuleList:
    """The decoder blocks of a causal LM (inside DDP and peft wrappers), first block first."""
    base = base_model(model)
    for path in LAYER_PATHS:
        found: Any = base
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    raise AlignlabError(
        f"cannot find the decoder layers of {type(base).__name__}: none of "
        f"{', '.join(LAYER_PATHS)} is a ModuleList on it\n"
        "  hint: steering supports Llama-style causal LMs (model.model.layers: Llama, Qwen, "
        "Mistral), GPT-2 and GPT-NeoX; load the model with AutoModelForCausalLM"
    )


def contrast_direction(positive: Tensor, negative: Tensor, method: Method = "pca",
                       norm: Norm = "unit") -> Tensor:
    """The steering direction of paired states: ``positive[i]`` and ``negative[i]`` are (n, hidden).

    ``"mean_diff"``: mean(positive) − mean(negative). ``"pca"``: the first principal component of
    the differences d_i = positive_i − negative_i. RepE shuffles each pair's order before taking
    differences and then centres them, which makes their mean about zero; here the pairs keep
    their order, so the same thing is computed exactly on the sign-symmetric set {±d_i}, whose
    mean is zero: the top right-singular vector of the (n, hidden) matrix of d_i. (Centring the
    ordered differences instead would remove the very mean shift that separates the classes.)
    Its sign is RepE's: the one under which more pairs have the positive projecting above the
    negative (⟨u, d_i⟩ > 0), ties going to the sign along the mean difference.

    ``norm="unit"`` scales to length 1. ``norm="raw"`` keeps the mean difference for
    ``"mean_diff"``, and for ``"pca"`` gives u·mean_i⟨u, d_i⟩: the mean difference's component
    along u, in the same units.
    """
    if positive.dim() != 2 or positive.shape != negative.shape or positive.shape[0] == 0:
        raise ValueError(
            f"positive and negative must be (n, hidden) with the same n >= 1, got "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    if method not in METHODS or norm not in NORMS:
        raise ValueError(f"method must be one of {METHODS} and norm one of {NORMS}, got {method!r}, {norm!r}")
    differences = positive.double() - negative.double()
    if not differences.any():
        raise AlignlabError(
            f"every positive state equals its negative one, so there is no direction ({method})\n"
            "  hint: the prompt pairs must differ (identical texts, or a layer that ignores them?)"
        )
    mean = differences.mean(0)
    if method == "mean_diff":
        direction = mean
    else:
        direction = torch.linalg.svd(differences, full_matrices=False).Vh[0]
        projections = differences @ direction
        votes = int((projections > 0).sum()) - int((projections < 0).sum())
        if votes < 0 or (votes == 0 and float(mean @ direction) < 0):
            direction = -direction
        if norm == "raw":
            direction = direction * (mean @ direction)
    length = float(direction.norm())
    if length == 0.0 or not math.isfinite(length):
        raise AlignlabError(
            f"the positive and negative states give a zero direction ({method})\n"
            "  hint: the prompt pairs must differ (identical texts, or a layer that ignores them?)"
        )
    return (direction / length if norm == "unit" else direction).float()


def read_steering_vectors(
    model: Any,
    positive: Sequence[str] | Sequence[Sequence[int]],
    negative: Sequence[str] | Sequence[Sequence[int]],
    *,
    tokenizer: Any = None,
    method: Method = "pca",
    layers: Sequence[int] | None = None,
    token: Token = "last",
    norm: Norm = "unit",
    batch_size: int = 8,
) -> SteeringVectors:
    """Read a steering vector per decoder layer from paired prompts (``positive[i]`` vs ``negative[i]``).

    Prompts are token ids, or strings encoded with ``tokenizer`` (as it encodes them, BOS
    included if it adds one); wrap them in the chat or "Request: … Answer:" template first. The
    hidden state of a prompt is the output of each decoder block at its last token, or with
    ``token="mean"`` the mean over its tokens. ``layers`` are decoder block indices (negative
    counts from the end, the authors' convention); None reads all. Prompts run right-padded in
    batches of ``batch_size``, in eval mode, without gradients; see :func:`contrast_direction`
    for ``method`` and ``norm``.
    """
    if method not in METHODS or token not in TOKENS or norm not in NORMS:
        raise ValueError(
            f"method, token, norm must be in {METHODS}, {TOKENS}, {NORMS}; got {method!r}, {token!r}, {norm!r}"
        )
    if len(positive) != len(negative) or not positive:
        raise ValueError(
            f"{len(positive)} positive but {len(negative)} negative prompts: give at least one pair, "
            "positive[i] paired with negative[i]"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    blocks = decoder_layers(model)
    indices = _resolve_layers(range(len(blocks)) if layers is None else layers, len(blocks))
    ids = _token_ids(list(positive) + list(negative), tokenizer)
    states = _layer_states(model, blocks, indices, ids, token, batch_size)
    n = len(positive)
    vectors = {i: contrast_direction(states[i][:n], states[i][n:], method, norm) for i in indices}
    return SteeringVectors(vectors, method, token, norm)


@contextmanager
def steer(
    model: Any,
    vectors: SteeringVectors,
    alpha: float,
    *,
    layers: Sequence[int] | None = None,
    renormalize: bool = False,
) -> Iterator[None]:
    """Inside, every forward of ``model`` adds ``alpha · v_l`` to the output of decoder block l.

    ``layers`` (negative counts from the end) must have vectors; None steers every layer that
    has one. The vector is added at every position of the block's hidden-state output (the first
    element when the block returns a tuple); padded positions are steered too, which cannot
    reach real tokens because attention masks them out. ``renormalize`` rescales each steered
    state back to its norm before steering (RepE's ``normalize`` option, off in the paper's runs).
    The hooks are removed on exit, also when the body raises; the weights are never touched.

    Under steering, ``output_hidden_states`` does not show it: Hugging Face (5.x) records each
    block's output before this hook changes it, though the next block gets the steered one.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    blocks = decoder_layers(model)
    chosen = _resolve_layers(vectors.layers if layers is None else layers, len(blocks))
    missing = [i for i in chosen if i not in vectors.vectors]
    if missing:
        raise ValueError(
            f"no steering vector for decoder layer(s) {missing}; these vectors cover {list(vectors.layers)}\n"
            "  hint: read them with layers=... including these, or steer fewer layers"
        )
    hidden = getattr(getattr(base_model(model), "config", None), "hidden_size", None)
    if hidden is not None and hidden != vectors.hidden_size:
        raise ValueError(
            f"the vectors have hidden size {vectors.hidden_size} but the model has {hidden}\n"
            "  hint: steering vectors only fit the model (architecture) they were read from"
        )
    handles = []
    try:
        for i in chosen:
            handles.append(blocks[i].register_forward_hook(_adder(alpha * vectors.vectors[i], renormalize)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def sweep_alpha(
    model: Any,
    vectors: SteeringVectors,
    prompts: Sequence[Sequence[int]],
    alphas: Sequence[float],
    score: Callable[[Any, Sequence[Sequence[int]]], tuple[float, float]],
    *,
    layers: Sequence[int] | None = None,
) -> list[tuple[float, float, float]]:
    """``(alpha, alignment, helpfulness)`` for every ``alpha``: ``score(model, prompts)`` while steered.

    ``score`` measures the steered model on the token-id ``prompts`` (generating, scoring, or
    both) and returns its (alignment, helpfulness); it runs in eval mode without gradients. The
    list goes straight into :func:`fit_tradeoff`.
    """
    points = []
    for alpha in alphas:
        with eval_mode(model), torch.no_grad(), steer(model, vectors, alpha, layers=layers):
            result = score(model, prompts)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            raise TypeError(
                f"score returned {result!r} at alpha={alpha}\n"
                "  hint: it must return a pair (alignment, helpfulness) of numbers"
            )
        points.append((float(alpha), float(result[0]), float(result[1])))
    return points


@dataclass(frozen=True)
class TradeoffFit:
    """Least-squares fits of alignment(α) = a + b·α and helpfulness(α) = h0 [+ p·α] − q·α²."""

    alignment_intercept: float
    """a: the alignment without steering."""
    alignment_slope: float
    """b: the alignment gained per unit of α (the paper's linear gain)."""
    alignment_r2: float
    """R² of the alignment fit (1 − residual / total sum of squares; 1.0 for constant data)."""
    helpfulness_intercept: float
    """h0: the helpfulness without steering."""
    helpfulness_curvature: float
    """q: the quadratic loss coefficient, positive when helpfulness falls as |α| grows."""
    helpfulness_slope: float
    """p: the linear term, 0.0 unless fitted with ``helpfulness_linear_term=True``."""
    helpfulness_r2: float
    """R² of the helpfulness fit."""
    points: int
    """How many (α, alignment, helpfulness) points were fitted."""

    def alignment(self, alpha: float) -> float:
        """The fitted alignment at ``alpha``."""
        return self.alignment_intercept + self.alignment_slope * alpha

    def helpfulness(self, alpha: float) -> float:
        """The fitted helpfulness at ``alpha``."""
        return self.helpfulness_intercept + self.helpfulness_slope * alpha - self.helpfulness_curvature * alpha**2


def fit_tradeoff(
    points: Sequence[tuple[float, float, float]],
    *,
    max_abs_alpha: float | None = None,
    helpfulness_linear_term: bool = False,
) -> TradeoffFit:
    """Fit the alignment–helpfulness trade-off of Wolf et al. 2024 (arXiv 2401.16332) to a sweep.

    ``points`` are (α, alignment, helpfulness), e.g. from :func:`sweep_alpha`. The forms are the
    paper's headline result for small steering norms: alignment rises linearly,
    ``a + b·α``, and helpfulness falls quadratically, ``h0 − q·α²``; both are fitted by ordinary
    least squares in float64. With unit vectors |α| is the paper's norm ‖r_e‖; negative α steers
    the other way, so the alignment line is fitted on signed α. The paper states these forms for
    small norms only (alignment, a probability, saturates); ``max_abs_alpha`` keeps only the
    points with |α| ≤ it.

    ``helpfulness_linear_term=True`` adds a ``p·α`` term to the helpfulness fit. It is NOT one of
    the paper's forms (an extension for sweeps whose helpfulness is visibly asymmetric in α);
    keep the default to fit what the paper states.
    """
    rows = []
    for point in points:
        if len(point) != 3 or not all(math.isfinite(float(x)) for x in point):
            raise ValueError(f"each point must be three finite numbers (alpha, alignment, helpfulness), got {point!r}")
        if max_abs_alpha is None or abs(float(point[0])) <= max_abs_alpha:
            rows.append([float(x) for x in point])
    data = torch.tensor(rows, dtype=torch.float64).reshape(-1, 3)
    alpha, aligned, helpful = data.unbind(1)
    distinct, distinct_squares = len(set(alpha.tolist())), len(set((alpha**2).tolist()))
    needed = 3 if helpfulness_linear_term else 2
    if distinct < needed or distinct_squares < 2:
        raise ValueError(
            f"{len(rows)} points with {distinct} distinct alpha ({distinct_squares} distinct |alpha|) "
            f"after max_abs_alpha={max_abs_alpha}: the fits need at least {needed} distinct alpha and 2 "
            "distinct |alpha|\n  hint: sweep more values of alpha, e.g. 0, ±0.5, ±1"
        )
    ones = torch.ones_like(alpha)
    (a, b), alignment_r2 = _least_squares(torch.stack([ones, alpha], 1), aligned)
    if helpfulness_linear_term:
        (h0, p, c), helpfulness_r2 = _least_squares(torch.stack([ones, alpha, alpha**2], 1), helpful)
    else:
        (h0, c), helpfulness_r2 = _least_squares(torch.stack([ones, alpha**2], 1), helpful)
        p = 0.0
    return TradeoffFit(a, b, alignment_r2, h0, -c, p, helpfulness_r2, len(rows))


def _least_squares(design: Tensor, target: Tensor) -> tuple[list[float], float]:
    """Ordinary least-squares coefficients of ``target`` on the columns of ``design``, and R²."""
    coefficients = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    residual = float(((target - design @ coefficients) ** 2).sum())
    total = float(((target - target.mean()) ** 2).sum())
    # Constant data is fitted exactly by the intercept; call that a perfect fit, not 0/0.
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return coefficients.tolist(), r2


def _resolve_layers(layers: Sequence[int] | range, count: int) -> list[int]:
    """Layer indices made non-negative, in the order given, checked against ``count`` blocks."""
    resolved = []
    for layer in layers:
        if not -count <= layer < count:
            raise ValueError(
                f"decoder layer {layer} does not exist: the model has {count} (indices 0..{count - 1}, "
                f"or -{count}..-1 from the end)"
            )
        index = layer % count
        if index not in resolved:
            resolved.append(index)
    return resolved


def _token_ids(prompts: list[str] | list[Sequence[int]], tokenizer: Any) -> list[list[int]]:
    """Token ids of every prompt; strings need ``tokenizer``."""
    ids = []
    for k, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise ValueError(
                    f"prompt {k} is a string but no tokenizer was given\n"
                    "  hint: pass tokenizer=..., or give token ids"
                )
            prompt = tokenizer(prompt)["input_ids"]
        if len(prompt) == 0:
            raise ValueError(f"prompt {k} has no tokens: every prompt needs at least one (a BOS will do)")
        ids.append([int(t) for t in prompt])
    return ids


def _hidden(output: Any) -> Tensor:
    """The hidden states of a decoder block's output: the tensor, or a tuple's first element."""
    return output[0] if isinstance(output, tuple) else output


def _layer_states(model: Any, blocks: nn.ModuleList, indices: list[int], prompts: list[list[int]],
                  token: Token, batch_size: int) -> dict[int, Tensor]:
    """(prompts, hidden) float32 CPU state of every prompt at the output of each chosen block."""
    captured: dict[int, Tensor] = {}

    def capture(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured[index] = _hidden(output)
        return hook

    device = model_device(model)
    rows: dict[int, list[Tensor]] = {i: [] for i in indices}
    handles = [blocks[i].register_forward_hook(capture(i)) for i in indices]
    try:
        with torch.no_grad(), eval_mode(model):
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start:start + batch_size]
                lengths = torch.tensor([len(p) for p in chunk])
                # Right padding: the real tokens keep positions 0..n-1, and a causal, masked
                # attention never lets them see the pad (so its id does not matter).
                ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
                mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
                for r, prompt in enumerate(chunk):
                    ids[r, :len(prompt)] = torch.tensor(prompt)
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device), use_cache=False)
                for i in indices:
                    states = captured.pop(i).float().cpu()
                    if token == "last":
                        rows[i].append(states[torch.arange(len(chunk)), lengths - 1])
                    else:
                        kept = torch.where(mask[..., None], states, torch.zeros(()))
                        rows[i].append(kept.sum(1) / lengths[:, None])
    finally:
        for handle in handles:
            handle.remove()
    return {i: torch.cat(rows[i]) for i in indices}


def _adder(delta: Tensor, renormalize: bool) -> Callable[..., Any]:
    """A forward hook adding ``delta`` to a block's hidden states (cast once per dtype and device)."""
    cast: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = _hidden(output)
        key = (hidden.device, hidden.dtype)
        if key not in cast:
            cast[key] = delta.to(device=hidden.device, dtype=hidden.dtype)
        steered = hidden + cast[key]
        if renormalize:
            before = hidden.norm(dim=-1, keepdim=True)
            steered = steered * (before / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook

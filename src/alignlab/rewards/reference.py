"""Per-prompt reference rewards r_ref(x) for the LSC transform, scored once from base samples and kept on disk.

Example: ``ref = ReferenceRewards.from_samples(reward, {"2+2?": ["4", "5", "four"]}, quantile=0.5)``

r_ref(x) is a quantile of a reward over N samples of the base policy for prompt x (Wang et al.
2024, arXiv 2402.00742; the quantile their experiments use is not pinned down by the text we
have, so it is a parameter, the median by default: unverified). The values are computed once and
saved with a fingerprint of the reward, the samples and the quantile; a file built from other
inputs is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignlab.data.records import Text
from alignlab.errors import ConfigError
from alignlab.files import write_text_atomic
from alignlab.rewards.base import Columns, Reward, build_reward

RewardLike = Reward | str | Mapping[str, Any]
"""A reward, or a spec that builds one."""

Samples = Mapping[Text, Sequence[str]] | Iterable[tuple[Text, Sequence[str]]]
"""Base-policy completions per prompt: a mapping, or (prompt, completions) pairs (chats of plain
dicts cannot be mapping keys)."""
FORMAT = "alignlab.reference_rewards"
FORMAT_VERSION = 1
_DOMAIN = "alignlab.reference_rewards.fingerprint/v1"


def prompt_key(prompt: Text) -> str:
    """A stable, hashable key of a prompt: its JSON (a string and a chat never collide).

    Example: ``prompt_key("2+2?")  # '"2+2?"'``
    """
    if isinstance(prompt, str):
        return json.dumps(prompt, ensure_ascii=False)
    messages = [dict(m) for m in prompt]
    return json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def linear_quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile, interpolating linearly between order statistics (numpy's default, type 7).

    Example: ``linear_quantile([1, 2, 3, 10], 0.5)  # 2.5``: position h = (n − 1)·q = 1.5 in the
    sorted values, so x₁ + 0.5·(x₂ − x₁) = 2 + 0.5·1.
    """
    if not values:
        raise ValueError("the quantile of no values is undefined")
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


class MissingReference(ConfigError, KeyError):
    """A prompt scored by an LSC transform has no reference reward (a KeyError too)."""

    __str__ = Exception.__str__  # KeyError's own would print the message as a quoted repr


# ------------------------------------------------------------------------ reference rewards


class ReferenceRewards:
    """r_ref(x) per prompt: a quantile of the rewards of base-policy samples for x, scored once.

    Example: ``ref = ReferenceRewards.from_samples(rm, {"2+2?": ["4", "four", "5"]}); ref["2+2?"]``

    The paper's experiments take r_ref(x) from the rewards of base (SFT) policy samples for x;
    which quantile is not pinned down by the text we worked from (unverified), so it is a
    parameter, the median by default. A higher quantile centres on a better-than-typical base
    answer, so that u saturates only above it.
    """

    def __init__(self, values: Mapping[str, float], *, reward: str, quantile: float,
                 fingerprint: str, prompts: Mapping[str, Text] | None = None,
                 counts: Mapping[str, tuple[int, int]] | None = None,
                 digests: Mapping[str, str] | None = None, source: str = "") -> None:
        self.values = dict(values)
        """r_ref by :func:`prompt_key`."""
        self.reward = reward
        """The name of the reward that scored the samples."""
        self.quantile = quantile
        self.fingerprint = fingerprint
        """sha256 of the reward's name, the quantile and every prompt's samples and columns."""
        self.prompts = dict(prompts or {})
        self.counts = dict(counts or {})
        """(scored, unscorable) samples by prompt key."""
        self.digests = dict(digests or {})
        """sha256 of each prompt's samples and columns, by prompt key."""
        self.source = source
        """The file it was loaded from, for error messages."""

    def __len__(self) -> int:
        return len(self.values)

    def __contains__(self, prompt: object) -> bool:
        return isinstance(prompt, str | tuple) and prompt_key(prompt) in self.values

    def __getitem__(self, prompt: Text) -> float:
        try:
            return self.values[prompt_key(prompt)]
        except KeyError:
            where = f" in {self.source}" if self.source else ""
            raise MissingReference(
                f"no reference reward for prompt {_show(prompt)}{where} ({len(self)} prompts have "
                "one)\n  hint: build the ReferenceRewards (ReferenceRewards.from_samples) from "
                "base-policy samples of every prompt the LSC transform will score") from None

    @property
    def unscorable(self) -> int:
        """How many samples got no score (left out of the quantiles)."""
        return sum(bad for _, bad in self.counts.values())

    @staticmethod
    def fingerprint_of(reward: Reward | str, samples: Samples, quantile: float = 0.5,
                       columns: Columns | None = None) -> str:
        """The fingerprint :meth:`from_samples` gives these inputs, computed without scoring."""
        name = reward if isinstance(reward, str) else reward.name
        digests = {key: row[3] for key, row in _sample_table(samples, columns).items()}
        return _fingerprint(name, float(quantile), digests)

    @classmethod
    def from_samples(cls, reward: RewardLike, samples: Samples, quantile: float = 0.5,
                     columns: Columns | None = None) -> ReferenceRewards:
        """Score every base-policy sample in one call of ``reward``; keep each prompt's
        ``quantile`` of its scores (linear interpolation, :func:`linear_quantile`).

        ``columns`` holds one value per prompt, in the order of ``samples``, given to each of that
        prompt's samples (a reference answer is per prompt). None scores are left out and
        counted; a prompt none of whose samples could be scored is an error naming it.
        """
        reward = build_reward(reward)
        q = finite_number("quantile", quantile)
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"quantile must lie in [0, 1], got {quantile!r}")
        table = _sample_table(samples, columns)
        prompts: list[Text] = []
        completions: list[str] = []
        flat: dict[str, list[Any]] = {name: [] for name in columns or {}}
        for prompt, mine, values, _ in table.values():
            prompts += [prompt] * len(mine)
            completions += mine
            for name, value in values.items():
                flat[name] += [value] * len(mine)
        scores = reward(prompts, completions, flat)  # the one call: a reward model batches it
        references, counts, start = {}, {}, 0
        for key, (prompt, mine, _, _) in table.items():
            got, start = scores[start:start + len(mine)], start + len(mine)
            kept = [s for s in got if s is not None]
            if not kept:
                raise ConfigError(
                    f"reward {reward.name!r} scored none of the {len(got)} base samples of prompt "
                    f"{_show(prompt)}, so it has no reference reward\n  hint: draw more samples "
                    "for it, or drop the prompt")
            references[key] = linear_quantile(kept, q)
            counts[key] = (len(kept), len(got) - len(kept))
        digests = {key: row[3] for key, row in table.items()}
        return cls(references, reward=reward.name, quantile=q,
                   fingerprint=_fingerprint(reward.name, q, digests),
                   prompts={key: row[0] for key, row in table.items()}, counts=counts,
                   digests=digests)

    def save(self, path: str | Path) -> None:
        """Write the reference as JSON, atomically: header with the fingerprint, one entry a prompt."""
        entries = [{"prompt": _jsonable(self.prompts[key]), "reference": value,
                    "scored": self.counts[key][0], "unscorable": self.counts[key][1],
                    "samples_sha256": self.digests[key]} for key, value in self.values.items()]
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, "reward": self.reward,
                    "quantile": self.quantile, "interpolation": "linear",
                    "fingerprint": self.fingerprint,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "prompts": entries}
        write_text_atomic(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, *, reward: Reward | str | None = None,
             fingerprint: str | None = None) -> ReferenceRewards:
        """Read a saved reference, verified: its fingerprint must match its own content, its
        reward name ``reward``'s (when given) and the fingerprint ``fingerprint`` (when given, e.g.
        :meth:`fingerprint_of` the samples meant). A mismatch is an error, never a silent use."""
        path = Path(path)
        stale = f"\n  hint: delete {path} and rebuild it (ReferenceRewards.from_samples(...).save)"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"reference rewards file {path} does not exist\n  hint: build it "
                              "with ReferenceRewards.from_samples(reward, samples).save(path)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read reference rewards file {path}: {exc}{stale}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a reference rewards file (format {FORMAT!r}){stale}")
        if document.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{path} has format version {document.get('format_version')!r}; "
                              f"this alignlab reads version {FORMAT_VERSION}{stale}")
        try:
            name, q = str(document["reward"]), float(document["quantile"])
            recorded = str(document["fingerprint"])
            values, prompts, counts, digests = {}, {}, {}, {}
            for entry in document["prompts"]:
                prompt = entry["prompt"]
                prompt = prompt if isinstance(prompt, str) else tuple(prompt)
                key = prompt_key(prompt)
                values[key], prompts[key] = float(entry["reference"]), prompt
                counts[key] = (int(entry["scored"]), int(entry["unscorable"]))
                digests[key] = str(entry["samples_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"reference rewards file {path} is malformed "
                              f"({type(exc).__name__}: {exc}){stale}") from None
        if _fingerprint(name, q, digests) != recorded:
            raise ConfigError(f"reference rewards file {path}: its fingerprint does not match its "
                              f"content (edited or damaged){stale}")
        expected = reward.name if isinstance(reward, Reward) else reward
        if expected is not None and expected != name:
            raise ConfigError(f"reference rewards file {path} was built with reward {name!r}, not "
                              f"{expected!r}: its values are on another reward's scale{stale}")
        if fingerprint is not None and fingerprint != recorded:
            raise ConfigError(f"reference rewards file {path} is stale: it was built from other "
                              f"samples, reward or quantile (fingerprint {recorded[:12]}..., "
                              f"expected {fingerprint[:12]}...){stale}")
        return cls(values, reward=name, quantile=q, fingerprint=recorded, prompts=prompts,
                   counts=counts, digests=digests, source=str(path))

    @classmethod
    def load_or_build(cls, path: str | Path, reward: RewardLike, samples: Samples,
                      quantile: float = 0.5, columns: Columns | None = None) -> ReferenceRewards:
        """The reference saved at ``path`` if it was built from exactly these inputs, else (no
        file there) build and save it. A file from other inputs is an error, not a rebuild."""
        reward = build_reward(reward)
        if Path(path).exists():
            expected = cls.fingerprint_of(reward, samples, quantile, columns)
            return cls.load(path, reward=reward, fingerprint=expected)
        built = cls.from_samples(reward, samples, quantile, columns)
        built.save(path)
        return built


SampleRow = tuple[Text, list[str], dict[str, Any], str]


def _sample_table(samples: Samples, columns: Columns | None) -> dict[str, SampleRow]:
    """key → (prompt, completions, its column values, sha256 of the three), in input order."""
    pairs = list(samples.items()) if isinstance(samples, Mapping) else list(samples)
    columns = dict(columns or {})
    for name, values in columns.items():
        if len(values) != len(pairs):
            raise ConfigError(f"column {name!r} has {len(values)} values for {len(pairs)} prompts: "
                              "the columns of base samples hold one value per prompt")
    table: dict[str, SampleRow] = {}
    for i, (prompt, completions) in enumerate(pairs):
        if isinstance(completions, str):
            raise ConfigError(f"the samples of prompt {_show(prompt)} are one string: give a list "
                              "of completions")
        key = prompt_key(prompt)
        if key in table:
            raise ConfigError(f"prompt {_show(prompt)} appears twice in the base samples: give "
                              "each prompt once, with all its samples")
        if not completions:
            raise ConfigError(f"prompt {_show(prompt)} has no base samples\n  hint: draw some, "
                              "or drop the prompt")
        values = {name: v[i] for name, v in columns.items()}
        content = json.dumps([key, list(completions), values], ensure_ascii=False, sort_keys=True,
                             default=str)
        table[key] = (prompt, list(completions), values, hashlib.sha256(content.encode()).hexdigest())
    return table


def _fingerprint(reward: str, q: float, digests: Mapping[str, str]) -> str:
    # Sorted by prompt: a prompt's reference does not depend on the order the prompts came in.
    body = json.dumps([_DOMAIN, reward, repr(q), sorted(digests.items())], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _jsonable(prompt: Text) -> Any:
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


def _show(prompt: Text) -> str:
    text = prompt if isinstance(prompt, str) else (prompt[-1]["content"] if prompt else "")
    return repr(text if len(text) <= 60 else text[:57] + "...")




def finite_number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return number

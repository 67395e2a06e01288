"""Judged data (instruction, response, judgment) for CUT: each response in its plain context and,
if judged negative, in the context of its judgment, their completion tokens lined up.

Example: ``items, stats = get_kind("judged").tokenize(records, record_tokenizer)``

CUT is Xu et al. 2023, Reasons to Reject? Aligning Language Models with Judgments, arXiv
2312.14591. The prompt templates are those of the authors' code (Alpaca style,
``templates/alpaca.json`` in github.com/wwxu21/CUT). A response counts as positive when it has no
judgment or its score is at least 7 (the paper's rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from alignlab.data.records import Judged, is_chat
from alignlab.data.tokenize import Encoded, RecordTokenizer
from alignlab.errors import ConfigError
from alignlab.forward import collate_sequences
from alignlab.kinds.base import DataKind, KindBatch, register_kind
from alignlab.logprobs import LogProbs
from alignlab.losses.contract import LossContract

PLAIN = ("Below is an instruction that describes a task. Write a response that appropriately "
         "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
WITH_JUDGMENT = ("Below is an instruction that describes a task. Write a response to the instruction "
                 "and the response should match the corresponding judgment.\n\n### Instruction:\n"
                 "{instruction}\n\n### Judgment:\n{judgment}\n\n### Response:\n")
POSITIVE_SCORE = 7.0


@dataclass(frozen=True)
class TokenizedJudgedPair:
    """The response after the plain prompt (Misalign / positive) and after the judgment prompt."""

    plain: Encoded
    judged: Encoded | None
    negative: bool
    record: Judged


def is_negative(record: Judged) -> bool:
    return record.judgment is not None and not (record.score is not None and record.score >= POSITIVE_SCORE)


def tokenize_judged(records: Sequence[Judged], encoder: RecordTokenizer) -> list[TokenizedJudgedPair]:
    items = []
    for record in records:
        if is_chat(record.instruction) or is_chat(record.response):
            raise ConfigError("CUT's templates are plain text: give judged data as strings")
        plain = encoder.encode(PLAIN.format(instruction=record.instruction), record.response)
        negative = is_negative(record)
        judged = encoder.encode(WITH_JUDGMENT.format(instruction=record.instruction, judgment=record.judgment),
                                record.response) if negative else None
        if plain is None or (negative and judged is None):
            continue  # over-long: counted in encoder.stats
        if negative and judged.completion_ids != plain.completion_ids:  # type: ignore[union-attr]
            # Different token boundaries would misalign p^A and p^B token by token.
            raise ConfigError("a response tokenizes differently after the two CUT prompts; "
                              "end both templates the same way (they end with a newline)")
        items.append(TokenizedJudgedPair(plain, judged, negative, record))
    return items


def completion_rows(tokens: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) per-position values → (N, C) completion tokens left-aligned, and their mask."""
    counts = completion_mask.sum(-1)  # (N,)
    width = int(counts.max()) if counts.numel() else 0
    mask = torch.arange(width, device=tokens.device)[None, :] < counts[:, None]  # (N, C)
    out = tokens.new_zeros(tokens.shape[0], width)
    out[mask] = tokens[completion_mask]  # both enumerate row by row, position by position
    return out, mask


@register_kind
class JudgedKind(DataKind):
    """A-sequences (the judgment prompt for negatives, the plain prompt for positives), then
    B-sequences (the plain prompt); CUT reads both token by token, with no reference."""

    name = "judged"
    records = "judged"

    def tokenize(self, records: Sequence[Judged], encoder: RecordTokenizer
                 ) -> tuple[list[TokenizedJudgedPair], Mapping[str, int]]:
        return tokenize_judged(records, encoder), encoder.stats

    def collate(self, items: Sequence[TokenizedJudgedPair], indices: Sequence[int], pad_id: int,
                contract: LossContract, prefix: str = "") -> KindBatch:
        a = [(i.judged or i.plain) for i in items]
        sequences = [(e.prompt_ids, e.completion_ids) for e in a] + \
            [(i.plain.prompt_ids, i.plain.completion_ids) for i in items]
        negative = torch.tensor([i.negative for i in items])  # (B,) bool
        return KindBatch(len(items), collate_sequences(sequences, pad_id), {"negative": negative})

    def inputs(self, contract: LossContract, batch: KindBatch, policy: LogProbs, ref: None) -> dict[str, Tensor]:
        rows, mask = completion_rows(policy.tokens, batch.sequences.completion_mask)
        n = batch.examples
        return {"policy_tokens": rows[:n], "misalign_tokens": rows[n:], "mask": mask[:n], **batch.fields}

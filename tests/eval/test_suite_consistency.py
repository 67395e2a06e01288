"""The consistency suite (Zha et al. 2023, AlignScore): chunking and aggregation against a fake
scorer with hand-set values, the AUC and accuracy by hand, the lexical scorer, the NLI scorer on a
tiny offline cross-encoder, item files good and bad, and the CLI end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

from alignlab.errors import ConfigError, DataError
from alignlab.eval.suites import FixedResponder, get_suite
from alignlab.eval.suites.consistency import (
    ANSWER_PROMPT,
    SUMMARY_PROMPT,
    ConsistencyItem,
    NLIScorer,
    agreement_metrics,
    align,
    alignment_score,
    auc_stderr,
    context_chunks,
    lexical_alignment,
    lexical_scorer,
    rank_auc,
    split_sentences,
)

CONTEXT = "Alpha one two. Beta three four. Gamma five six. Delta seven eight."  # 12 words, 4 sentences


def test_sentences_and_chunks_follow_the_authors_rule() -> None:
    assert split_sentences("Dr. Smith met J. R. R. Tolkien. He smiled! Did he? 12.5 is a number. ok") == [
        "Dr. Smith met J. R. R. Tolkien.", "He smiled!", "Did he?", "12.5 is a number. ok"]
    assert split_sentences("  ") == []
    assert context_chunks(CONTEXT) == [CONTEXT]  # under 350 words: one chunk
    # 12 // 7 + 1 = 2 chunks wanted, 4 // 2 = 2 sentences each
    assert context_chunks(CONTEXT, chunk_words=7) == ["Alpha one two. Beta three four.", "Gamma five six. Delta seven eight."]
    # 7 sentences, 21 words, chunk_words=10: 3 chunks wanted, 7 // 3 = 2 sentences each, the remainder its own chunk
    seven = " ".join(f"S{i} word word." for i in range(7))
    assert [len(split_sentences(c)) for c in context_chunks(seven, chunk_words=10)] == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="chunk_words"):
        context_chunks(CONTEXT, chunk_words=0)


def test_max_over_chunks_then_mean_over_sentences() -> None:
    chunk_a, chunk_b = "Alpha one two. Beta three four.", "Gamma five six. Delta seven eight."
    values = {(chunk_a, "First claim."): 0.2, (chunk_a, "Second claim."): 0.9,
              (chunk_b, "First claim."): 0.7, (chunk_b, "Second claim."): 0.1}
    calls = []

    def fake(premises, hypotheses):
        calls.append(list(zip(premises, hypotheses, strict=True)))
        return [values[p, h] for p, h in zip(premises, hypotheses, strict=True)]

    found = align(CONTEXT, "First claim. Second claim.", fake, chunk_words=7)
    assert found.sentence_scores == [0.7, 0.9] and found.score == pytest.approx(0.8)
    assert calls == [[(chunk_a, "First claim."), (chunk_a, "Second claim."), (chunk_b, "First claim."),
                      (chunk_b, "Second claim.")]]  # one call, chunk-major
    assert alignment_score(CONTEXT, "First claim. Second claim.", fake, chunk_words=7) == pytest.approx(0.8)
    # a claim without a sentence is unscorable, and the scorer is not asked
    assert alignment_score(CONTEXT, " ", lambda p, h: pytest.fail("called")) is None
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        alignment_score(CONTEXT, "A claim.", lambda p, h: [1.5])
    with pytest.raises(ValueError, match="returned 2 values for 1 pairs"):
        alignment_score(CONTEXT, "A claim.", lambda p, h: [0.5, 0.5])


def test_auc_and_accuracy_by_hand() -> None:
    scores, labels = [0.9, 0.4, 0.6, 0.2, 0.6], [True, True, False, False, True]
    # pairs (positive, negative): 0.9>0.6, 0.9>0.2, 0.4<0.6, 0.4>0.2, 0.6=0.6 (½), 0.6>0.2 → 4.5 / 6
    assert rank_auc(scores, labels) == pytest.approx(0.75)
    assert rank_auc([0.1, 0.2], [True, False]) == 0 and rank_auc([0.3, 0.3], [True, False]) == 0.5
    assert rank_auc([0.5, 0.7], [True, True]) is None
    # Hanley–McNeil, A = 0.75, n₊ = 3, n₋ = 2: Q1 = 0.6, Q2 = 1.125/1.75
    q2 = 1.125 / 1.75
    expected = ((0.75 * 0.25 + 2 * (0.6 - 0.5625) + (q2 - 0.5625)) / 6) ** 0.5
    assert auc_stderr(0.75, 3, 2) == pytest.approx(expected)
    m = {x.name: x for x in agreement_metrics(scores, labels, threshold=0.5)}
    assert m["scorer_auc"].value == pytest.approx(0.75) and m["scorer_auc"].stderr == pytest.approx(expected)
    # predicted consistent (≥ 0.5): T F T F T against T T F F T → 3 of 5
    assert m["scorer_accuracy"].value == pytest.approx(0.6)
    assert m["scorer_accuracy"].stderr == pytest.approx((0.6 * 0.4 / 5) ** 0.5)
    assert {x.name: x.value for x in agreement_metrics(scores, labels, threshold=0.65)}["scorer_accuracy"] == 0.6


def test_lexical_scorer_on_obvious_cases() -> None:
    premise = "The Eiffel Tower is in Paris and was completed in 1889."
    assert lexical_alignment(premise, "The Eiffel Tower was completed in 1889.") == 1.0
    assert lexical_alignment(premise, "Bananas are purple.") == 0.0
    # eiffel, tower, completed found, 1925 not: 3/4, halved for the number
    assert lexical_alignment(premise, "The Eiffel Tower was completed in 1925.") == pytest.approx(0.375)
    # eiffel, tower, paris found, "not" not: 3/4, halved for the negation
    assert lexical_alignment(premise, "The Eiffel Tower isn't in Paris.") == pytest.approx(0.375)
    assert lexical_alignment("It cost 1,000 euros.", "It cost 1000 euros.") == 1.0  # numbers by value
    assert lexical_alignment(premise, "It is.") == 1.0  # nothing to check
    assert lexical_scorer([premise, premise], ["Paris.", "Rome."]) == [1.0, 0.0]


def _fake_scorer(premises, hypotheses):
    """1 when the hypothesis sentence occurs in the premise, else 0."""
    return [float(h in p) for p, h in zip(premises, hypotheses, strict=True)]


def test_suite_scores_responses_and_agreement() -> None:
    suite = get_suite("consistency")
    items = [ConsistencyItem("Cats purr. Dogs bark.", "Cats purr.", True, id="a"),
             ConsistencyItem("Cats purr. Dogs bark.", "Dogs meow.", False, question="What do dogs do?", id="b"),
             ConsistencyItem("Birds sing. Fish swim.", "Fish swim. Birds fly.", False, id="c")]
    responses = {SUMMARY_PROMPT.format(context="Cats purr. Dogs bark."): ["Cats purr. Dogs bark."],
                 ANSWER_PROMPT.format(context="Cats purr. Dogs bark.", question="What do dogs do?"): [""],
                 SUMMARY_PROMPT.format(context="Birds sing. Fish swim."): ["Fish fly."]}
    result = suite.evaluate(FixedResponder(responses), items, scorer=_fake_scorer)
    m = {x.name: x for x in result.metrics}
    # responses: 1.0, unscorable (empty), 0.0 → mean 0.5, s.e. = s.d. / √2 = 0.5
    assert m["response_consistency"].value == pytest.approx(0.5) and m["response_consistency"].stderr == \
        pytest.approx(0.5)
    assert m["response_consistent_share"].value == pytest.approx(0.5)
    assert any("1 of 3 responses have no sentence" in n for n in result.notes)
    # claims: 1.0 (consistent), 0.0 and (1 + 0)/2 = 0.5 (inconsistent) → AUC 1; at 0.5, c is called consistent
    assert m["scorer_auc"].value == 1.0 and m["scorer_accuracy"].value == pytest.approx(2 / 3)
    assert [r["claim_score"] for r in result.rows] == [1.0, 0.0, 0.5]
    assert result.rows[2]["claim_sentence_scores"] == [1.0, 0.0]
    by_label = {r["label"]: r for r in result.tables["claim scores by label"]}
    assert by_label["inconsistent"]["claims"] == 2 and by_label["inconsistent"]["mean score"] == 0.25
    assert result.inputs["scorer"] == "_fake_scorer" and result.inputs["threshold"] == 0.5
    only_labels = suite.evaluate(None, items, scorer=_fake_scorer, score_responses=False)
    assert [x.name for x in only_labels.metrics] == ["scorer_auc", "scorer_accuracy"]


def test_embedded_items_hold_both_labels_and_run_with_the_lexical_scorer() -> None:
    suite = get_suite("consistency")
    items = suite.items()
    assert 10 <= len(items) <= 16 and {i.label for i in items} == {True, False}
    result = suite.evaluate(FixedResponder(lambda prompt: ["The Eiffel Tower was built for the 1889 World's Fair."]))
    assert result.inputs["scorer"] == "lexical" and any("lexical baseline" in n for n in result.notes)
    assert 0.5 < result.metric("scorer_auc").value <= 1  # the baseline ranks most claims right on the embedded set


def _tiny_cross_encoder(path, bias):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from alignlab.models.tiny import CORPUS
    from alignlab.models.tokenizers import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=300, min_frequency=1)
    labels = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=3, id2label=labels,
                        label2id={v: k for k, v in labels.items()}, pad_token_id=tokenizer.pad_token_id)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # the logits are the bias alone: known probabilities
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_nli_scorer_reads_the_entailment_probability(tmp_path) -> None:
    import math

    path = _tiny_cross_encoder(tmp_path / "nli", [0.0, 0.0, 2.0])
    scorer = NLIScorer(str(path), device="cpu", local_files_only=True, batch_size=2)
    assert scorer.entailment == 2
    values = scorer(["Cats purr. Dogs bark.", "Birds sing.", "Fish swim."], ["Cats purr.", "Fish fly.", "Yes."])
    assert values == pytest.approx([math.exp(2) / (2 + math.exp(2))] * 3, abs=1e-5)
    assert NLIScorer(str(path), device="cpu", local_files_only=True, entailment_label="neutral").entailment == 1
    with pytest.raises(ConfigError, match="entailment label"):
        NLIScorer(str(path), device="cpu", local_files_only=True, entailment_label="agree")
    result = get_suite("consistency").evaluate(FixedResponder(lambda p: ["A claim."]), scorer=str(path))
    assert result.inputs["scorer"] == f"nli:{path}" and result.metric("response_consistency").value == \
        pytest.approx(math.exp(2) / (2 + math.exp(2)), abs=1e-5)


def test_a_real_nli_model_when_one_is_available_offline() -> None:
    try:
        scorer = NLIScorer("cross-encoder/nli-deberta-v3-xsmall", device="cpu", local_files_only=True)
    except (OSError, ValueError, ImportError):
        pytest.skip("no NLI cross-encoder in the local Hugging Face cache (nothing is downloaded)")
    premise = "The Eiffel Tower is in Paris and was completed in 1889."
    yes, no = scorer([premise, premise], ["The Eiffel Tower was completed in 1889.", "The tower is in Rome."])
    assert yes > 0.5 > no


def test_item_files(tmp_path) -> None:
    suite = get_suite("consistency")
    good = tmp_path / "items.jsonl"
    good.write_text('{"context": "C.", "claim": "A.", "label": 1}\n{"context": "D.", "claim": "B.", "label": false}\n'
                    '{"context": "E.", "question": "Q?", "id": 7}\n')
    items = suite.items(good)
    assert [i.label for i in items] == [True, False, None] and items[2].question == "Q?" and items[2].id == "7"
    cases = {
        '{"claim": "A."}': r"bad.jsonl:2.*context",
        '{"context": "C.", "claim": "A.", "label": 2}': r"bad.jsonl:2.*'label' must be 0, 1, true or false",
        '{"context": "C.", "claim": "A.", "label": "yes"}': r"bad.jsonl:2.*label",
        '{"context": "C.", "label": 1}': r"bad.jsonl:2.*needs the 'claim'",
        '{"context": "C.", "claim": ""}': r"bad.jsonl:2.*claim",
        '{"context": "C.", "question": 3}': r"bad.jsonl:2.*question",
        '{"context": "C.", "id": [1]}': r"bad.jsonl:2.*id",
    }
    for row, pattern in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"context": "fine."}\n' + row + "\n")
        with pytest.raises(DataError, match=pattern):
            suite.items(bad)


def test_cli_runs_the_suite_on_a_tiny_model(tmp_path) -> None:
    from alignlab.cli import main
    from alignlab.models.tiny import init_tiny_model

    tiny = init_tiny_model(tmp_path / "tiny", hidden_size=32, layers=1, heads=2, intermediate=32)
    out = tmp_path / "out"
    assert main(["eval", "--suite", "consistency", "--model", str(tiny), "--max-new-tokens", "4",
                 "--out", str(out)]) == 0
    result = json.loads((out / "consistency.json").read_text())
    assert result["suite"] == "consistency" and len(result["rows"]) == 12
    assert {m["name"] for m in result["metrics"]} == {"response_consistency", "response_consistent_share",
                                                      "scorer_auc", "scorer_accuracy"}
    assert "consistency" in (out / "report.html").read_text()

"""Inference-time alignment: the one sampling engine, and the strategies built on it.

Example: ``best_of_n(TextSampler(model, tokenizer), prompts, build_reward("testbed_true"), n=16)``
"""

from alignlab.decode.best_of_n import best_of_n, preference_pairs, rejection_sample
from alignlab.decode.candidates import Candidate, Decoded, Selection, TextSampler, score_candidates
from alignlab.decode.cost import Cost
from alignlab.decode.sampling import SampleLogProbs, SamplingOptions, sample, score

__all__ = ["Candidate", "Cost", "Decoded", "SampleLogProbs", "SamplingOptions", "Selection", "TextSampler",
           "best_of_n", "preference_pairs", "rejection_sample", "sample", "score", "score_candidates"]

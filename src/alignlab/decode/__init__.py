"""The one sampling engine under everything that generates, and scoring of what it generates.

Example: ``samples = sample(model, prompts, n=4, options=SamplingOptions(seed=1), eos_id=2, pad_id=0)``
"""

from alignlab.decode.sampling import SampleLogProbs, SamplingOptions, sample, score

__all__ = ["SampleLogProbs", "SamplingOptions", "sample", "score"]

"""A synthetic world with a known true reward: prompts, responses, raters and a word tokenizer.

Example: ``from alignlab.testbed.world import sample_prompts, true_reward``

Importing the package registers its rewards (``testbed_true``, ``testbed_proxy``).
"""

from alignlab.testbed import rewards  # noqa: F401  (registers the testbed's rewards)

"""A synthetic world with a known true reward: prompts, responses, raters and a word tokenizer.

Example: ``from alignlab.testbed.world import sample_prompts, true_reward``
"""

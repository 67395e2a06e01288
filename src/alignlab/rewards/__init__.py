"""Rewards: rules, verifiers, reward models, the DPO implicit reward, transforms and combinations.

Example: ``reward = build_reward("numeric_answer"); reward(prompts, completions, {"answer": answers})``

Importing this package imports each reward module, which registers its rewards in ``REWARDS``.
"""

from alignlab.registry import REWARDS
from alignlab.rewards import models, rules, transforms, verifiers  # noqa: F401  (each registers its rewards)
from alignlab.rewards.base import (
    Columns,
    FunctionReward,
    Reward,
    RewardSpec,
    Scores,
    build_reward,
    register_reward,
    unscorable,
    user_function,
)

__all__ = ["REWARDS", "Columns", "FunctionReward", "Reward", "RewardSpec", "Scores", "build_reward",
           "register_reward", "unscorable", "user_function"]

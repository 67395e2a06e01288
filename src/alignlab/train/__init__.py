"""The training engine: one loop, thin steps per data kind, checkpoints, and the `train` command.

Example: ``from alignlab.train.run import run_training; run_training(load_config("dpo.yaml"))``
"""

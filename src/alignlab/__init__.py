"""alignlab: align language models with human preferences, and prove that it worked.

Example: ``import alignlab; run_dir = alignlab.train("examples/dpo.yaml", train_data=rows)``, or
``from alignlab.data import load_records; result = load_records("pairs.jsonl")``
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # ``alignlab.train(...)`` without importing the package first (it loads torch)
    if name == "train":
        import alignlab.train as train

        return train
    raise AttributeError(f"module 'alignlab' has no attribute {name!r}")

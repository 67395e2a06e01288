"""alignlab: align language models with human preferences, and prove that it worked.

Example: ``from alignlab.data import load_records; result = load_records("pairs.jsonl")``
"""

__version__ = "0.1.0"

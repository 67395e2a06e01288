"""Loading models and tokenizers from Hugging Face ids or local folders, safely.

Example: ``tokenizer = load_tokenizer("path/to/model")``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """An ``AutoTokenizer``; remote code runs only when asked for by name (DESIGN §9)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AlignlabError(
            f"cannot load tokenizer {str(name_or_path)!r}: {str(exc).splitlines()[0]}\n"
            "  hint: give a local folder holding tokenizer.json / tokenizer_config.json "
            "(hub ids need network access)"
        ) from None

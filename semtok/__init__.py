"""SemTok: semantic one-dimensional tokenizer and masked autoregressive generator (arXiv 2603.16373).

`from semtok import SemTok, MaskedGenerator` — imported lazily, so that the workflow and the command
line pay for torch only when a command needs it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MaskedGenerator", "SemTok"]


def __getattr__(name: str) -> Any:
    if name == "SemTok":
        from semtok.models.tokenizer import SemTok

        return SemTok
    if name == "MaskedGenerator":
        from semtok.models.generator import MaskedGenerator

        return MaskedGenerator
    raise AttributeError(f"module 'semtok' has no attribute {name!r}")

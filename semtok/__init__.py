"""SemTok: semantic one-dimensional tokenizer and masked autoregressive generator (arXiv 2603.16373).

`from semtok import SemTok, MaskedGenerator, SemTokPipeline` — imported lazily, so that the workflow and
the command line pay for torch only when a command needs it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["MaskedGenerator", "SemTok", "SemTokPipeline"]

_EXPORTS = {
    "SemTok": "semtok.models.tokenizer",
    "MaskedGenerator": "semtok.models.generator",
    "SemTokPipeline": "semtok.sampling.pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'semtok' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)

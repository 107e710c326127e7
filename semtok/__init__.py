"""SemTok: semantic one-dimensional tokenizer and masked autoregressive generator (arXiv 2603.16373)."""

__version__ = "0.1.0"

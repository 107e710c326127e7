"""Clear errors when a saved model folder is missing or incomplete.

diffusers treats any path that is not a local folder as a Hugging Face Hub id, so a typo in
`results/tokenizer/b18/stage2` (or a stage that has not run yet) surfaces as "couldn't connect to
huggingface.co". Our model classes check the path first and name it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_saved_model(path: str | os.PathLike, kind: str) -> None:
    """Raise FileNotFoundError naming `path` unless it is a folder with a config.json, or a string of
    the form `owner/name` that is not a local path (left to the Hub)."""
    folder = Path(path)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a saved {kind}: it has no config.json (written last by save_pretrained; "
                "an interrupted export leaves none, rerun the rule that writes it)"
            )
        return
    if folder.exists():
        raise FileNotFoundError(f"{folder} is a file, not a saved {kind} folder")
    if not HUB_ID.fullmatch(str(path)):
        raise FileNotFoundError(
            f"no saved {kind} at {folder} (a folder written by save_pretrained, such as "
            "results/tokenizer/b18/stage2 or results/generator/ar-l; has its rule run?)"
        )


class SavedModelMixin:
    """Put before diffusers' ConfigMixin: `from_pretrained` and `load_config` check the path first."""

    @classmethod
    def load_config(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        subfolder = kwargs.get("subfolder")
        local = Path(pretrained_model_name_or_path)
        check_saved_model(
            local / subfolder if subfolder and local.is_dir() else pretrained_model_name_or_path, cls.__name__
        )
        try:
            return super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as err:
            if Path(pretrained_model_name_or_path).exists():
                raise
            raise FileNotFoundError(
                f"{pretrained_model_name_or_path} is not a local folder, and loading it as a Hugging Face Hub "
                f"id failed: {err}"
            ) from err

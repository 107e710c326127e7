"""A missing or incomplete model folder is named in the error, never reported as a Hub connection failure."""

from __future__ import annotations

import pytest

from semtok import MaskedGenerator, SemTok
from semtok.models.saved import check_saved_model


@pytest.mark.parametrize("cls", [SemTok, MaskedGenerator])
def test_missing_folder_is_named(cls, tmp_path):
    missing = tmp_path / "tokenizer" / "b18" / "stage2"
    with pytest.raises(FileNotFoundError, match=f"no saved {cls.__name__} at {missing}"):
        cls.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="has its rule run"):
        cls.load_config(str(missing))


def test_folder_without_config_and_a_file_are_rejected(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        SemTok.from_pretrained(tmp_path / "half")
    (tmp_path / "table.md").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        SemTok.from_pretrained(tmp_path / "table.md")


def test_hub_ids_and_saved_folders_pass_the_check(tmp_path):
    check_saved_model("stabilityai/stable-diffusion-3.5-medium", "SemTok")  # left to the Hub
    (tmp_path / "config.json").write_text("{}")
    check_saved_model(tmp_path, "SemTok")
    with pytest.raises(FileNotFoundError):
        check_saved_model("./results/ar-l", "MaskedGenerator")

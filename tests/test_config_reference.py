"""The parameter reference (config/README.md): generated from the schema, complete, and in sync."""

from __future__ import annotations

from pathlib import Path

import yaml

from semtok import config_reference as ref
from semtok.cli.main import main as cli_main
from semtok.config import EvalConfig, SyntheticConfig, json_schema, load

ROOT = Path(__file__).resolve().parents[1]
PAPER, TINY = ROOT / "config" / "paper.yaml", ROOT / "config" / "config.yaml"


def rows(text: str) -> dict[str, list[str]]:
    """{key: its cells} of every row of the reference's key tables."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == len(ref.COLUMNS):
            out[cells[0].strip("`")] = cells
    return out


def leaves(schema: dict, prefix: str = "") -> set[str]:
    """Every key of the JSON schema whose value is not a section of its own."""
    out = set()
    for name, sub in schema["properties"].items():
        path = prefix + name
        out |= leaves(sub, path + ".") if "properties" in sub else {path}
    return out


def test_committed_reference_is_in_sync_with_the_schema_and_the_configs():
    committed = (ROOT / "config" / "README.md").read_text()
    assert committed == ref.write(PAPER, TINY), "run: semtok config-reference --output config/README.md"


def test_every_key_of_the_schema_has_a_row():
    table = rows(ref.write(PAPER, TINY))
    assert set(table) == leaves(json_schema())


def test_a_row_gives_type_range_default_paper_tiny_and_the_schemas_comment():
    table = rows(ref.write(PAPER, TINY))
    assert table["generator.sample.cfg_scale"] == [
        "`generator.sample.cfg_scale`",
        "float",
        ">= 0",
        "`6.0`",
        "`6.0`",
        "`3.0`",
        'classifier-free guidance scale (the maximum under "linear")',
    ]
    assert table["tokenizer.encoder.heads"][2] == ">= 1; must divide width"  # a relation checked at load
    assert table["tokenizer.entropy.group_size"][2] == ">= 1 and <= 16; must divide tokenizer.bits"
    tiny_steps = yaml.safe_load(Path(TINY).read_text())["tokenizer"]["stage2"]["optim"]["steps"]
    assert table["tokenizer.stage2.optim.steps"][3:6] == ["`100000`", "`100000`", f"`{tiny_steps}`"]
    assert table["generator.optim.betas"][2:4] == [">= 0 and < 1; 2 values", "`[0.9, 0.95]`"]
    assert table["tokenizer_variants"][3] == "[see Variants](#variants)"


def test_comments_above_and_beside_a_field_are_its_description():
    comments = ref.field_comments()
    assert comments["OptimConfig", "batch_size"] == "global batch"
    assert comments["SyntheticConfig", "min_size"].startswith(
        "images get random sizes in [min_size, max_size]"
    )
    assert comments["EvalConfig", "fid_reference"].startswith(
        "ADM's reference batch (arr_0 images, mu/sigma)"
    )
    assert {f for c, f in comments if c == SyntheticConfig.__name__} <= set(
        SyntheticConfig.__dataclass_fields__
    )
    assert ("EvalConfig", "sweeps") not in comments and EvalConfig


def test_the_paper_column_is_read_from_the_paper_config(tmp_path):
    raw = yaml.safe_load(PAPER.read_text())
    raw["generator"]["sample"]["top_p"] = 0.6
    raw["tokenizer_variants"]["b64"] = {"bits": 64 - 2}
    changed = tmp_path / "paper.yaml"
    changed.write_text(yaml.safe_dump(raw))
    text = ref.write(changed, TINY)
    assert rows(text)["generator.sample.top_p"][3:6] == ["`0.75`", "`0.6`", "`0.75`"]
    assert "| `b64` | `{bits: 62}` | – |" in text
    assert load(changed).generator.sample.top_p == 0.6


def test_config_reference_command(tmp_path):
    out = tmp_path / "README.md"
    assert (
        cli_main(["config-reference", "--paper", str(PAPER), "--tiny", str(TINY), "--output", str(out)]) == 0
    )
    assert out.read_text() == ref.write(PAPER, TINY)

"""The resources table: benchmark records of real Snakemake jobs and hand-written ones, against a profile."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from semtok.cli.main import main as cli_main
from semtok.report import resources
from semtok.report.resources import Request, ResourcesError

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def tsv(path: Path, *runs: tuple[float, float | str]) -> Path:
    """A benchmark TSV in Snakemake's format, one row per (seconds, max_rss) run."""
    rows = "".join(
        f"{s:.4f}\t0:00:01\t{rss}\t900.1\t{rss}\t{rss}\t0.01\t0.02\t55.0\t1.5\n" for s, rss in runs
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + rows)
    return path


def profile(path: Path, rules: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump({"set-resources": rules}, sort_keys=False))
    return path


# A workflow whose jobs Snakemake itself benchmarks: `grow` holds ~300 MB for ~1.5 s, `quick` nothing.
SNAKEFILE = """
rule all:
    input: expand("out/grow-{i}.txt", i=["01", "02"]), "out/quick.txt"

rule grow:
    output: "out/grow-{i,\\\\d{2}}.txt"
    benchmark: "bench/grow_{i,\\\\d{2}}.tsv"
    shell: "python3 -c 'import time; b = bytearray(300 * 2**20); b[::4096] = b\\"x\\" * len(b[::4096]); time.sleep(1.5)' && touch {output}"

rule quick:
    output: "out/quick.txt"
    benchmark: "bench/quick.tsv"
    shell: "touch {output}"
"""


@pytest.fixture(scope="module")
def snakemake_benchmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark folder of a real (tiny) Snakemake run."""
    wf = tmp_path_factory.mktemp("bench-wf")
    (wf / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--benchmark-extended"],
        cwd=wf,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return wf / "bench"


PATTERNS = {"grow": "grow_{i,\\d{2}}.tsv", "quick": "quick.tsv"}


def test_snakemake_benchmarks_against_the_profile(snakemake_benchmarks, tmp_path):
    prof = profile(
        tmp_path / "profile.yaml", {"grow": {"runtime": 60, "mem_mb": 100}, "quick": {"mem_mb": 64000}}
    )
    out = {"csv": tmp_path / "resources.csv", "md": tmp_path / "resources.md"}
    resources.write(snakemake_benchmarks, prof, PATTERNS, out, forkserver=False)
    table = pd.read_csv(out["csv"]).set_index("rule")
    grow = [pd.read_csv(p, sep="\t") for p in sorted(snakemake_benchmarks.glob("grow_*.tsv"))]
    assert table.loc["grow", "jobs"] == 2 and table.loc["quick", "jobs"] == 1
    assert table.loc["grow", "max_s"] == pytest.approx(max(f["s"].max() for f in grow))
    assert table.loc["grow", "max_rss_mb"] == pytest.approx(max(f["max_rss"].max() for f in grow))
    print(f"grow: {table.loc['grow', 'max_s']:.2f} s, {table.loc['grow', 'max_rss_mb']:.0f} MB peak")
    assert table.loc["grow", "max_rss_mb"] > 250  # the 300 MB the job held
    assert table.loc["grow", "flags"] == "runtime:far-under mem_mb:over"
    assert table.loc["grow", "runtime_share"] == pytest.approx(table.loc["grow", "max_s"] / 3600)
    text = out["md"].read_text()
    assert "| grow | 2 |" in text and "(over)" in text and "| quick | 1 |" in text


def test_max_over_jobs_and_repeats_and_unmeasured_memory(tmp_path):
    bench = tmp_path / "benchmarks"
    tsv(bench / "stage1_b18.tsv", (100.0, 5000.0), (130.0, 4000.0))  # two repeats
    tsv(bench / "stage1_b32.tsv", (90.0, 7000.0))
    tsv(bench / "index_train.tsv", (2.0, "NA"))  # ended before Snakemake's first sample
    tsv(bench / "old_rule_x.tsv", (1.0, 10.0))
    prof = profile(
        tmp_path / "p.yaml", {"stage1": {"runtime": 2, "mem_mb": 8000}, "index_split": {"mem_mb": 16000}}
    )
    used, unmatched = resources.usage(
        bench, {"stage1": "stage1_{tok}.tsv", "index_split": "index_{split}.tsv"}
    )
    assert unmatched == ["old_rule_x.tsv"]
    assert used["stage1"] == resources.Usage(jobs=2, seconds=130.0, max_rss=7000.0)
    assert used["index_split"].max_rss is None
    table = resources.lines(used, resources.read_profile(prof))
    assert [line.rule for line in table] == ["stage1", "index_split"]  # the profile's order
    stage1, index = table
    assert stage1.share("runtime") == pytest.approx(130 / 120) and stage1.flag("runtime") == resources.OVER
    assert stage1.share("mem_mb") == pytest.approx(7000 / 8000) and stage1.flag("mem_mb") == ""
    assert index.share("mem_mb") is None and index.share("runtime") is None
    text = resources.to_markdown(table, resources.notes(table, unmatched, prof, forkserver=True))
    assert "| stage1 | 2 | 0:02:10 | 0:02:00 | 108% (over) | 7.0 GB | 8.0 GB | 88% |" in text
    assert "| index_split | 1 | 0:00:02 | – | – | – | 16.0 GB | – |" in text
    assert "old_rule_x.tsv" in text and "compute.forkserver is on" in text


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("eval_recon_b18-refiner.tsv", "eval_recon"),
        ("eval_recon_b18-diffusion.tsv", "eval_recon_diffusion"),
        ("eval_reference.tsv", "eval_reference"),
        ("encode_latents_train-00003.tsv", "encode_shard"),
        ("encode_latents_train-3.tsv", None),  # the shard wildcard's constraint: five digits
        ("sample_ar-l-cfg-linear-3.0.tsv", "sample"),
    ],
)
def test_rule_of_a_benchmark_file(name, rule):
    patterns = {
        "eval_recon": "eval_recon_{tok}-refiner.tsv",
        "eval_recon_diffusion": "eval_recon_{tok}-diffusion.tsv",
        "eval_reference": "eval_reference.tsv",
        "encode_shard": "encode_{kind}_{split,train|val}-{shard,\\d{5}}.tsv",
        "sample": "sample_{gen}-{setting}.tsv",
    }
    assert resources.rule_of(name, patterns) == rule


def test_the_more_specific_pattern_wins_and_a_tie_is_an_error():
    assert resources.rule_of("eval_reference.tsv", {"a": "eval_{x}.tsv", "b": "eval_reference.tsv"}) == "b"
    with pytest.raises(ResourcesError, match=r"matches the patterns of rules \['a', 'b'\] equally"):
        resources.rule_of("x_y.tsv", {"a": "x_{p}.tsv", "b": "{q}_y.tsv"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"set-resources": {"stage1": {"mem_mb": "lots"}}},
            r"set-resources\.stage1\.mem_mb: expected a positive number",
        ),
        (
            {"set-resources": {"stage1": {"runtime": -5}}},
            r"set-resources\.stage1\.runtime: expected a positive",
        ),
        ({"set-resources": ["stage1"]}, "set-resources: expected a mapping of rule to resources"),
        ({"set-resources": {"stage1": 4}}, r"set-resources\.stage1: expected a mapping of resources"),
    ],
)
def test_a_bad_profile_names_the_key(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ResourcesError, match=message):
        resources.read_profile(path)


def test_a_file_that_is_not_a_benchmark_names_itself(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(ResourcesError, match=r"x\.tsv: not a Snakemake benchmark TSV"):
        resources.read_benchmark(path)


def test_the_shipped_profile_reads():
    asked = resources.read_profile(
        Path(__file__).resolve().parents[2] / "workflow/profiles/default/config.yaml"
    )
    assert asked["stage1"] == Request(runtime=2880, mem_mb=900000)
    assert all(r.runtime and r.mem_mb for r in asked.values())


def test_resources_command(tmp_path):
    tsv(tmp_path / "benchmarks" / "stage2_b18.tsv", (61.0, 2500.0))
    prof = profile(tmp_path / "p.yaml", {"stage2": {"runtime": 10, "mem_mb": 4000}})
    argv = [
        "resources",
        "--config",
        str(Path(__file__).parents[2] / "config" / "config.yaml"),
        "--results",
        str(tmp_path),
        "--profile",
        str(prof),
        "--patterns",
        "stage2=stage2_{tok}.tsv",
    ]
    assert cli_main(argv) == 0
    text = (tmp_path / "tables" / "resources.md").read_text()
    assert "| stage2 | 1 | 0:01:01 | 0:10:00 | 10% (far under) | 2.5 GB | 4.0 GB | 62% |" in text


def test_no_records_give_an_empty_table_that_says_so(tmp_path):
    prof = profile(tmp_path / "p.yaml", {"stage2": {"runtime": 10, "mem_mb": 4000}})
    out = {"csv": tmp_path / "r.csv", "md": tmp_path / "r.md"}
    assert (
        resources.write(tmp_path / "benchmarks", prof, {"stage2": "stage2_{tok}.tsv"}, out, False)["rules"]
        == 0
    )
    assert pd.read_csv(out["csv"]).empty
    assert f"No benchmark records of any rule under {tmp_path / 'benchmarks'}." in out["md"].read_text()

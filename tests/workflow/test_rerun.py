"""Rerun exactly what changed: on the finished default run, `snakemake -n all_tables` with one override
plans exactly the jobs whose settings key the override changes (tests/test_keys.py's table, there
checked on the keys alone) and the report jobs that read them, nothing else: a sampling setting
retrains no generator, a Stage II setting reruns no Stage I, a sweep change reruns only its points, and
what cannot change a number (evaluation batch size, workers, threads, trackers) plans nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from test_keys import BASE, EXPECTED

pytestmark = [pytest.mark.slow, pytest.mark.rerun_table]

# A job of the DAG as the keys test names it: (key function, its arguments). Jobs of several shards
# (image shards, feature shards, token dumps) are one key job.
RULE_JOBS = {
    "synthetic_imagenet": lambda w: ("synthetic",),
    "shard_images": lambda w: ("shard",),
    "index_split": lambda w: ("index", w["split"]),
    "teacher": lambda w: ("teacher", w["teacher"]),
    "encode_shard": lambda w: ("encode", w["kind"]),
    "eval_reference": lambda w: ("reference",),
    "stage1": lambda w: ("stage1", w["tok"]),
    "stage2": lambda w: ("stage2", w["tok"]),
    "dump_tokens": lambda w: ("tokens", w["tok"]),
    "eval_vae": lambda w: ("recon", None, "vae"),
    "eval_recon": lambda w: ("recon", w["tok"], "refiner"),
    "eval_recon_diffusion": lambda w: ("recon", w["tok"], "diffusion"),
    "train_ar": lambda w: ("generator", w["gen"]),
    "sample": lambda w: ("sample", w["gen"], w["setting"]),
    "eval_gen": lambda w: ("gen", w["gen"], w["setting"]),
}
# Rules that only gather or present what the jobs above computed: planned when their inputs are.
REPORT_RULES = re.compile(r"^(table\d+|fig\d+|learning|claims|resources|table_html|data_summary|all_tables)$")

# The three overrides the issue measured as too wide, two more that cannot change a number, then one per
# stage (data, teachers, Stage I, flow decoding, generator training, a sweep, the metrics). Each dry run
# parses the workflow and builds the 174-job DAG (about 13 s here); tests/test_keys.py checks the whole
# table on the keys.
OVERRIDES = [
    "generator.sample.top_p=0.8",
    "tokenizer.stage2.optim.lr=0.001",
    "evaluation.batch_size=8",
    "compute.num_workers=3",
    "compute.trackers=[]",
    "data.val_shards=2",
    "pretrained.inception.lr=0.003",
    "tokenizer_variants.b32.bits=30",
    "tokenizer.sampler.steps=12",
    "generator_variants.ar-xl.optim.lr=0.001",
    "evaluation.sweeps.cfg_linear=[1.0, 3.0, 7.0]",
    "evaluation.pr_k=5",
]


# Where the DAG plans more than the keys change: resharding the validation split writes new shard files
# (the same images, split in two), so Snakemake re-shards and re-encodes them and reruns every
# evaluation that reads them (the FID reference, hence every generation metric, and every
# reconstruction metric), although no job's settings key but the index's changed.
# And a sweep point that repeated the main sample config (ar-l's topp-0.75 in the default: its job copied
# main's samples, declared as its input) and no longer does once main's top-p changes: its inputs change,
# so Snakemake samples it (the same images as the copy) and evaluates it again.
DAG_ALSO = {
    "data.val_shards=2": {("shard",), ("encode", "latents"), ("encode", "siglip")}
    | {job for job in BASE if job[0] in ("reference", "recon", "gen")},
    "generator.sample.top_p=0.8": {("sample", "ar-l", "topp-0.75"), ("gen", "ar-l", "topp-0.75")},
}


def expected(override: str) -> set[tuple]:
    return EXPECTED[override] | DAG_ALSO.get(override, set())


def planned_jobs(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists."""
    for block in re.split(r"\n(?=\[[^\]]+\]\n|(?:local)?rule \w+:)", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if rule is None:
            continue
        found = re.search(r"^\s+wildcards: (.+)$", block, re.M)
        wildcards = dict(p.split("=", 1) for p in found.group(1).split(", ")) if found else {}
        yield rule.group(1), wildcards


@pytest.fixture(scope="module")
def finished(default_run: Any, copy_workflow: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The finished default run at the out_dir path it ran in (moved back for the module), seen from a
    fresh copy of the workflow holding Snakemake's records as the run left them (the Slurm tests rerun
    part of the DAG from the run's own workflow folder, into the same path); the resolved settings and
    landing pages the dry runs write are removed after."""
    wf = copy_workflow(tmp_path_factory.mktemp("rerun"))
    shutil.copytree(default_run.metadata, wf / ".snakemake" / "metadata")
    parked = default_run.out.with_name(f"{default_run.out.name}-parked")
    if default_run.out.exists():  # the Slurm tests rerun part of the DAG into the same path
        default_run.out.rename(parked)
    default_run.outputs.rename(default_run.out)
    written_before = set((default_run.out / "config").iterdir())
    try:
        yield SimpleNamespace(wf=wf, out=default_run.out)
    finally:
        for path in set((default_run.out / "config").iterdir()) - written_before:
            path.unlink()
        default_run.out.rename(default_run.outputs)
        if parked.exists():
            parked.rename(default_run.out)


def dry_run(run: Any, *overrides: str) -> str:
    config = "overrides=[" + ", ".join(f'"{o}"' for o in overrides) + "]"
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "all_tables",
        "-n",
        "--config",
        f"out_dir={run.out}",
        config,
    ]
    done = subprocess.run(command, cwd=run.wf, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


def test_the_finished_run_plans_nothing(finished):
    text = dry_run(finished)
    assert list(planned_jobs(text)) == [] and "Nothing to be done" in text, text[-3000:]


@pytest.mark.parametrize("override", OVERRIDES)
def test_an_override_plans_exactly_the_jobs_it_can_change(finished, override):
    text = dry_run(finished, override)
    jobs = list(planned_jobs(text))
    computed = {RULE_JOBS[rule](w) for rule, w in jobs if rule in RULE_JOBS}
    others = {rule for rule, _ in jobs if rule not in RULE_JOBS}
    assert computed == expected(override), text[-3000:]
    assert all(REPORT_RULES.match(rule) for rule in others), others
    # nothing computed, nothing presented again
    assert bool(jobs) == bool(expected(override)), text[-3000:]

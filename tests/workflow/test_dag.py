"""The Snakemake DAG: the paper config against a fake ImageNet tree, validation errors at DAG start,
settings that another invocation cannot change under a run, and paths with spaces and non-ASCII
characters (checkout, out_dir, interpreter) through a chain of real jobs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from semtok import paths
from semtok.data.images import decode_rgb
from semtok.data.shards import read_shard

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# A small synthetic dataset, bootstrapped teachers of a few steps, no fork server unless asked.
SMALL = [
    "data.synthetic={num_classes: 2, train_per_class: 4, val_per_class: 2, min_size: 36, max_size: 44, seed: 0}",
    "data.resolution=32",
    "data.train_shards=2",
    "data.val_shards=1",
    "compute.forkserver=false",
]


def fake_imagenet(root: Path) -> Path:
    """train/<wnid>/*.JPEG for two synsets and the flat val folder with LOC_val_solution.csv."""
    rng = np.random.default_rng(0)
    wnids = ["n01440764", "n01443537"]
    lines = ["ImageId,PredictionString"]
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / f"{wnid}_{i}.JPEG")
        image_id = f"ILSVRC2012_val_{c + 1:08d}"
        (root / "val").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            root / "val" / f"{image_id}.JPEG"
        )
        lines.append(f"{image_id},{wnid} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def dry_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def test_paper_config_dry_run_against_a_fake_imagenet_lists_the_paper_dag(tmp_path):
    root = fake_imagenet(tmp_path / "imagenet")
    batch = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    np.savez(batch, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(4), sigma=np.eye(4))
    done = dry_run(
        "all_tables",
        "--configfile",
        "config/paper.yaml",
        "--config",
        f'overrides=["data.imagenet_root={root}", "evaluation.fid_reference={batch}"]',
        f"out_dir={tmp_path / 'results'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    train, val = 1282, 50
    expected = {
        "index_split": 2,
        "shard_images": train + val,
        "encode_shard": 2 * (train + val),  # latents and SigLIP features per shard
        "stage1": 10,  # b18 b32 lfq no-contra no-distill no-sem raster grid2d, b18's 2 seed replicas
        "stage2": 13,  # + finetune-only lpips-only resnet-only
        "dump_tokens": 8 * train,  # b18 no-sem no-contra no-distill raster grid2d, b18's replicas
        "train_ar": 11,  # 9 + ar-l's 2 seed replicas
        "eval_reference": 1,
        "eval_recon": 13,
        "eval_recon_diffusion": 10,  # every variant with its own Stage I (learning table)
        "eval_vae": 1,
        "learning": 1,
        "claims": 1,
        "data_summary": 1,
        "all_tables": 1,
    }
    for rule, count in expected.items():
        assert counts.get(rule) == count, f"{rule}: {counts.get(rule)} jobs, expected {count}"
    tables = {f"table{i}" for i in (1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14)}
    figures = {f"fig{i}" for i in range(3, 13)} | {"table7"}
    assert tables | figures <= counts.keys()
    assert "teacher" not in counts  # the paper loads real weights, nothing is bootstrapped
    # sampling: every generator's main samples plus the sweeps of config/paper.yaml
    assert counts["sample"] == counts["eval_gen"] + 2  # "progressive" samples feed figures only


def test_the_reference_evaluation_waits_for_the_train_index_whose_class_count_it_reads(tmp_path):
    """The originals' class_acc takes the class count from the train index. With the paper config no
    teacher job links the two, and the paper-shape chain once ran eval_reference before index_split of
    train ('the class count comes from the train index, which does not exist')."""
    root = fake_imagenet(tmp_path / "imagenet")
    out = tmp_path / "results"
    done = dry_run(
        str(paths.fid_reference(out)),
        "--configfile",
        "config/paper.yaml",
        "config/paper-smoke.yaml",
        "--config",
        f'overrides=["data.imagenet_root={root}", "out_dir={out}"]',
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    assert counts["eval_reference"] == 1 and counts["index_split"] == 2, counts  # train and val


def test_paper_config_without_the_reference_batch_stops_saying_what_to_set(tmp_path):
    root = fake_imagenet(tmp_path / "imagenet")
    done = dry_run(
        "all_tables",
        "--configfile",
        "config/paper.yaml",
        "--config",
        f'overrides=["data.imagenet_root={root}", "pretrained.cache_dir={tmp_path / "cache"}"]',
        f"out_dir={tmp_path / 'results'}",
    )
    assert done.returncode != 0
    message = " ".join((done.stdout + done.stderr).split())
    assert (
        f"evaluation.fid_reference: {tmp_path / 'cache'}/ref_batches/VIRTUAL_imagenet256_labeled.npz"
        in message
    )
    assert "run `snakemake prefetch_weights`" in message
    assert "or set evaluation.fid_reference to a local copy" in message
    assert not (tmp_path / "results" / "data").exists()


def test_bad_config_stops_the_dag_naming_the_key(tmp_path):
    done = dry_run(
        "all_tables", "--config", 'overrides=["tokenizer.stage1.optim.lr=fast"]', f"out_dir={tmp_path}"
    )
    assert done.returncode != 0
    assert "tokenizer.stage1.optim.lr: expected float, got str ('fast')" in done.stdout + done.stderr


def test_an_out_dir_with_braces_is_refused_naming_the_key(tmp_path):
    done = dry_run("all_tables", "--config", f"out_dir={tmp_path / 'run{1}'}")
    assert done.returncode != 0
    assert "out_dir:" in done.stdout + done.stderr and "contains a brace" in done.stdout + done.stderr


def test_an_out_dir_that_cannot_be_written_is_refused_naming_the_key(tmp_path):
    (tmp_path / "results").write_text("a file, not a folder")
    done = dry_run("all_tables", "--config", f"out_dir={tmp_path / 'results' / 'run'}")
    message = done.stdout + done.stderr
    assert done.returncode != 0
    assert "out_dir: cannot write the run's settings under" in message and "Not a directory" in message
    assert "Traceback" not in message


def test_imagenet_source_without_a_root_is_refused(tmp_path):
    done = dry_run("all_tables", "--configfile", "config/paper.yaml", "--config", f"out_dir={tmp_path}")
    assert done.returncode != 0
    assert "data.imagenet_root: required" in done.stdout + done.stderr


def test_default_config_dry_run_builds_everything_from_the_synthetic_data(tmp_path):
    done = dry_run("all_tables", "--config", f"out_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    assert counts["synthetic_imagenet"] == 1 and counts["teacher"] == 4
    # + b18-seed1 and ar-l-seed1, the claims table's seed replicas
    assert counts["stage1"] == 9 and counts["stage2"] == 12 and counts["train_ar"] == 10
    # + one HTML page per report table (15) and the resources table
    assert counts["claims"] == 1 and counts["table_html"] == 15 and counts["total"] == 174


def checkout(dest: Path) -> Path:
    """A copy of the repository's workflow and package at `dest` (a checkout in another place)."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", dest)
    for folder in ("workflow", "config", "semtok"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def config_args(out: Path, overrides: list[str]) -> list[str]:
    return ["--config", f"out_dir={out}", "overrides=" + json.dumps(overrides)]


def shard_sizes(out: Path) -> set[tuple[int, ...]]:
    tars = sorted((out / "data" / "shards").rglob("*.tar"))
    return {decode_rgb(s["jpg"]).shape for tar in tars for s in read_shard(tar)}


def test_a_dry_run_with_other_settings_during_a_run_leaves_the_run_unchanged(tmp_path):
    """Run A builds the 32-px image shards; while it is paused between jobs, a dry run B with
    `data.resolution=48` parses the same workflow into the same out_dir. A's later jobs must still
    read A's settings, and afterwards A's configuration has nothing left to do."""
    wf, out = checkout(tmp_path / "wf"), tmp_path / "results"
    target = [str(paths.data_manifest(out))]
    run_a = subprocess.Popen(
        [*SNAKEMAKE, *target, "--cores", "1", *config_args(out, SMALL)],
        cwd=wf,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while (
        not paths.index_file(out, "train").exists() and run_a.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.killpg(run_a.pid, signal.SIGSTOP)  # between the index and the shard jobs
    try:
        # --rerun-incomplete: A's running job is incomplete, which a plain dry run refuses (after
        # parsing the workflow, which is what matters here)
        dry_b = dry_run(
            *target, "--rerun-incomplete", *config_args(out, [*SMALL, "data.resolution=48"]), cwd=wf
        )
        assert dry_b.returncode == 0, dry_b.stderr[-3000:]
    finally:
        os.killpg(run_a.pid, signal.SIGCONT)
    log = run_a.communicate(timeout=900)[0]
    assert run_a.returncode == 0, log[-3000:]
    assert shard_sizes(out) == {(32, 32, 3)}
    again = dry_run(*target, *config_args(out, SMALL), cwd=wf)
    assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]
    other = dry_run(*target, *config_args(out, [*SMALL, "data.resolution=48"]), cwd=wf)
    assert job_counts(other.stdout + other.stderr)["shard_images"] == 3  # its own settings still differ


def interpreter_at(path: Path) -> Path:
    """A virtual environment at `path` that sees this interpreter's packages: its python's path (and so
    sys.executable of the Snakemake it runs) is `path`/bin/python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    site = subprocess.run(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "outer.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    return path / "bin" / "python"


def test_paths_with_spaces_and_non_ascii_characters_run_a_chain_of_real_jobs(tmp_path):
    """Checkout, out_dir and interpreter in folders named with a space and a non-ASCII character:
    synthetic data → index → shards → data summary, bootstrapped teachers → encoded train features →
    Stage I (tiny overrides), with the fork server of the default config."""
    wf = checkout(tmp_path / "check out ä" / "semtok")
    out = tmp_path / "rés ults"
    python = interpreter_at(tmp_path / "py thon ø")
    overrides = [
        *SMALL[:-1],
        "compute.forkserver=true",
        "pretrained.vae.train_steps=2",
        "pretrained.siglip.train_steps=2",
        "tokenizer.stage1.optim={steps: 2, batch_size: 4, warmup: 1, ckpt_every: 1, log_every: 1}",
    ]
    targets = [
        str(paths.table_file(out, "data_summary", "md")),
        str(paths.tokenizer_dir(out, "b18", "stage1")),
    ]
    env = {**os.environ, "PYTHONPATH": str(wf)}
    done = subprocess.run(
        [str(python), "-m", "snakemake", *targets, "--cores", "2", *config_args(out, overrides)],
        cwd=wf,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    counts = job_counts(done.stdout + done.stderr)
    assert counts["teacher"] == 2 and counts["encode_shard"] == 4 and counts["stage1"] == 1
    assert shard_sizes(out) == {(32, 32, 3)}
    assert any(paths.tokenizer_dir(out, "b18", "stage1").iterdir())
    assert "| train | 8 | 2 |" in paths.table_file(out, "data_summary", "md").read_text()
    # an unquoted `> {log}` would have written to a stray file named after the path's first word
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check out ä", "py thon ø", "rés ults"]
    assert sorted(p.name for p in wf.iterdir()) == [".snakemake", "Snakefile", "config", "semtok", "workflow"]


def test_lint_is_clean_but_for_the_variables_the_workflow_sets_itself(tmp_path):
    """`snakemake --lint` with conda deploying the jobs (the only case the rules name the environment:
    Snakemake exports a named environment for each job's metadata, which needs conda): every rule
    declares it; what remains are the two variables the workflow exports to its own jobs
    (docs/DECISIONS.md)."""
    # out_dir: the workflow writes its settings file when parsed; not into the checkout's results/
    lint = [*SNAKEMAKE, "--lint", "--software-deployment-method", "conda", "--config", f"out_dir={tmp_path}"]
    done = subprocess.run(lint, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert list((tmp_path / "config").glob("*.json")), "the settings file went elsewhere"
    text = done.stdout + done.stderr
    lints = [re.sub(r" in line \d+", "", lint) for lint in re.findall(r"^\s+\* (.+?):?$", text, re.M)]
    assert sorted(lints) == [
        "Environment variable SEMTOK_CONFIG used but not asserted with envvars directive.",
        "Environment variable SEMTOK_FORKSERVER used but not asserted with envvars directive.",
    ], text[-3000:]


def test_every_rule_that_runs_a_command_records_its_benchmark_and_environment():
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"^(?=\s*rule\b)", path.read_text(), flags=re.M)[1:]
        for block in blocks:
            if "shell:" in block:
                name = re.match(r"\s*rule\s*(\w*)", block).group(1) or block.split("name:", 1)[1].split()[0]
                assert "benchmark:" in block and "conda:" in block, f"{path.name}: rule {name}"


def test_sweep_points_that_repeat_the_main_setting_copy_its_samples_instead_of_sampling(tmp_path):
    """In the default config cfg-linear-3.0, steps-8 and topp-0.75 are ar-l's main sample config: the
    same seeds draw the same images, so their jobs copy main's file (declared as their input)."""
    out = tmp_path / "results"
    settings = ["cfg-linear-3.0", "steps-8", "topp-0.75", "cfg-linear-5.0", "steps-16"]
    done = subprocess.run(
        [*SNAKEMAKE, *[str(paths.sample_file(out, "ar-l", s)) for s in settings], "-n", "-p"]
        + ["--config", f"out_dir={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [line for line in done.stdout.splitlines() if " -m semtok.cli.launch sample " in line]
    main = str(paths.sample_file(out, "ar-l", "main"))
    by_setting = {re.search(r"--setting (\S+)", c).group(1): c for c in commands}
    assert sorted(by_setting) == sorted([*settings, "main"])
    for setting in ("cfg-linear-3.0", "steps-8", "topp-0.75"):
        assert f"--same-as {main}" in by_setting[setting], by_setting[setting]
    for setting in ("cfg-linear-5.0", "steps-16", "main"):
        assert "--same-as" not in by_setting[setting], by_setting[setting]

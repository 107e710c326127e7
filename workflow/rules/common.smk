# Config validation, the resolved config every job reads, and helpers shared by the rules.
import functools
import hashlib
import os
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

import semtok.config
import semtok.keys
import semtok.paths as P
import semtok.registry

validate(config, workflow.source_path("../schemas/config.schema.json"))
try:
    CFG = semtok.config.from_dict(config)
except semtok.config.ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")
if CFG.data.source == "imagenet" and not CFG.data.imagenet_root:
    raise WorkflowError(
        "invalid configuration: data.imagenet_root: required when data.source is 'imagenet' "
        "(e.g. --config 'overrides=[\"data.imagenet_root=/datasets/imagenet\"]' or a site --configfile)"
    )
OUT = CFG.out
if "{" in str(OUT) or "}" in str(OUT):
    raise WorkflowError(f"invalid configuration: out_dir: {str(OUT)!r} contains a brace, which Snakemake reads as a wildcard")

# Every job reads the validated config from a file named by the hash of its content, written once and
# never changed: another invocation with other settings (even `-n`, or one refused by the lock) writes
# its own file and cannot change the settings under this one's running jobs. The path reaches the jobs
# through an environment variable, not the command text: Snakemake reruns a job whose command text
# changes, and each rule's `params.cfg` (a hash of the sections the rule depends on) already decides
# exactly which jobs rerun when settings change.
_resolved = semtok.config.dumps(CFG)
CONFIG_FILE = P.config_file(OUT, hashlib.sha256(_resolved.encode()).hexdigest()[:16])
try:
    if not CONFIG_FILE.exists() or CONFIG_FILE.read_text() != _resolved:
        CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
        _tmp = CONFIG_FILE.with_name(f"{CONFIG_FILE.name}.tmp-{os.getpid()}")
        _tmp.write_text(_resolved)
        _tmp.replace(CONFIG_FILE)
except OSError as err:  # a file where a folder should be, no permission, a full or read-only disk
    raise WorkflowError(f"out_dir: cannot write the run's settings under {str(OUT)!r}: {err}")
os.environ["SEMTOK_CONFIG"] = str(CONFIG_FILE)

PYTHON = sys.executable  # the interpreter running Snakemake, which has semtok installed
# The one software environment of every rule: the conda environment `environment.yml` creates (named
# "semtok"), activated for each job with `--software-deployment-method conda`. A named environment, not
# the file: the file installs this checkout (`pip install -e .`), which Snakemake's copies of environment
# files under .snakemake/conda cannot. Named only when conda deploys the jobs: Snakemake records each
# job's environment in its metadata (`conda env export`) whenever a rule names one, which fails where
# conda is not installed. Without the flag jobs run with the interpreter above.
_DEPLOYMENT = getattr(getattr(workflow, "deployment_settings", None), "deployment_method", None) or ()
SOFTWARE = "semtok" if any(str(method) == "conda" for method in _DEPLOYMENT) else None


# Every path in a command is quoted (`{input:q}`, `{output:q}`, `{log:q}`): out_dir, the checkout and
# the interpreter may contain spaces or any other character.
def cli(cmd):
    """Shell prefix of a semtok entry point run in the job's own process (SEMTOK_JOB_LOG: the job's log,
    which semtok/utils/logs.py timestamps and keeps the failed attempts of)."""
    return f'SEMTOK_JOB_LOG={{log:q}} {shlex.quote(PYTHON)} -m semtok.cli {cmd} --config "$SEMTOK_CONFIG"'


def launch(cmd):
    """Shell prefix of a training/encoding entry point started by `semtok.cli.launch`
    (semtok/cli/launch.py derives processes, machines and rank from the job's resources and Slurm)."""
    return f'SEMTOK_JOB_LOG={{log:q}} {shlex.quote(PYTHON)} -m semtok.cli.launch {cmd} --config "$SEMTOK_CONFIG"'


@functools.cache  # a key per (job kind, wildcards): computed once even for the paper's 11,000 jobs
def key(job, *args):
    """The settings key of a job (semtok/keys.py): exactly the settings that can change its output, the
    rule's `params.cfg`, so that Snakemake reruns exactly the jobs whose settings changed."""
    return semtok.keys.digest(getattr(semtok.keys, job)(CFG, *args))


# Local runs of many short jobs: fork every job from one process that has imported torch, diffusers
# and transformers already (semtok/cli/forkserver.py); jobs fall back to running in-process without it.
_FORKSERVER = {}


def start_forkserver():
    import subprocess
    import tempfile
    import time

    if not (CFG.compute.forkserver and workflow.local_exec) or os.environ.get("SEMTOK_FORKSERVER"):
        return
    path = Path(tempfile.gettempdir()) / f"semtok-forkserver-{os.getpid()}.sock"
    ready = path.with_name(path.name + ".ready")
    proc = subprocess.Popen(
        [PYTHON, "-m", "semtok.cli.forkserver", "--socket", str(path), "--parent", str(os.getpid())]
    )
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if ready.exists():
        _FORKSERVER["proc"] = proc
        os.environ["SEMTOK_FORKSERVER"] = str(path)
    else:
        proc.kill()
        logger.warning("semtok fork server did not start; jobs import their libraries themselves")


def stop_forkserver():
    proc = _FORKSERVER.pop("proc", None)
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)
        os.environ.pop("SEMTOK_FORKSERVER", None)


onstart:
    start_forkserver()


onsuccess:
    stop_forkserver()


onerror:
    stop_forkserver()


SPLITS = {"train": CFG.data.train_shards, "val": CFG.data.val_shards}


wildcard_constraints:
    split="train|val",
    shard=r"\d{5}",
    teacher="|".join(semtok.registry.BOOTSTRAPPABLE),


def shard_ids(split):
    return [f"{i:05d}" for i in range(SPLITS[split])]


def image_shards(split):
    return [P.image_shard(OUT, split, i) for i in range(SPLITS[split])]


def teacher_input(name):
    """The teacher folder a job needs when component `name` is bootstrapped, else nothing."""
    if getattr(CFG.pretrained, name).source == "bootstrap":
        return [P.teacher_dir(OUT, name)]
    return []


# Input functions of the rules, here so that rule files hold rules only (`snakemake --lint`).


def raw_dataset(wildcards):
    return [P.synthetic_root(OUT)] if CFG.data.source == "synthetic" else []


def encoded_shards(split):
    kinds = ["latents"] + (["siglip"] if CFG.data.precompute_siglip else [])
    return [P.feature_shard(OUT, k, split, i) for k in kinds for i in range(SPLITS[split])]


def stage1_variants():
    return [v for v in CFG.tokenizer_variants if CFG.stage1_source(v) == v]


def stage2_inputs(wildcards):
    source = CFG.stage1_source(wildcards.tok)
    stage1 = [P.tokenizer_dir(OUT, source, "stage1")] if source else []
    return stage1 + image_shards("train") + encoded_shards("train") + teacher_input("resnet") + teacher_input("vae")


def token_shards(tok):
    return [P.token_shard(OUT, tok, i) for i in range(SPLITS["train"])]


def reference_batch(wildcards):
    """ADM's reference batch when `evaluation.fid_reference` is set (its stand-in, written by the rule
    above, for "standin"). A missing file stops the DAG, before any job runs, with a message that says
    what to set."""
    if CFG.evaluation.fid_reference == semtok.registry.REFERENCE_STANDIN:
        return [P.reference_standin(OUT)]
    try:
        path = semtok.registry.reference_batch(CFG)
    except FileNotFoundError as err:
        raise WorkflowError(str(err))
    return [] if path is None else [path]


def val_latents():
    return [*image_shards("val"), *[P.feature_shard(OUT, "latents", "val", i) for i in range(SPLITS["val"])]]


def recon_inputs(stage):
    def inputs(wildcards):
        return [P.tokenizer_dir(OUT, wildcards.tok, stage), P.fid_reference(OUT), *val_latents()]

    return inputs

# Config validation, the resolved config every job reads, and helpers shared by the rules.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

import semtok.config
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

# Every job reads the same validated config. It is rewritten only when its content changes, and it is
# not a declared input: each rule's `params.cfg` holds a hash of the sections that rule depends on,
# so Snakemake's params trigger reruns exactly the jobs whose settings changed.
CONFIG_FILE = OUT / "config.resolved.json"
_resolved = json.dumps(semtok.config.to_dict(CFG), indent=1, sort_keys=True)
if not CONFIG_FILE.exists() or CONFIG_FILE.read_text() != _resolved:
    CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
    _tmp = CONFIG_FILE.with_suffix(".tmp")
    _tmp.write_text(_resolved)
    _tmp.replace(CONFIG_FILE)



PYTHON = sys.executable  # the interpreter running Snakemake, which has semtok installed


def cli(cmd):
    """Shell prefix of a semtok entry point run in the job's own process."""
    return f"{PYTHON} -m semtok.cli {cmd} --config {CONFIG_FILE}"


def launch(cmd):
    """Shell prefix of a training/encoding entry point started through `accelerate launch`
    (semtok/launch.py derives processes, machines and rank from the job's resources and Slurm)."""
    return f"{PYTHON} -m semtok.launch {cmd} --config {CONFIG_FILE}"


def chash(*sections):
    return semtok.config.section_hash(*sections)


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

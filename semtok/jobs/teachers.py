"""Entry points of `workflow/rules/teachers.smk`: download every pretrained component into the cache
(`prefetch`, login node), or bootstrap a tiny frozen teacher of the same class on the configured data
(`teachers`, the offline default; semtok/train/teachers.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from semtok import keys, paths, registry
from semtok.config import Config, ConfigError
from semtok.data.loader import make_loader
from semtok.jobs import EntryPoint
from semtok.train.loop import Objective, StepOutput, Trainer
from semtok.train.teachers import (
    build_teacher,
    latent_statistics,
    save_teacher,
    teacher_loss,
    teacher_optim,
    teacher_seed,
)


def prefetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--done", help="marker file written when everything is cached")


def prefetch(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    fetched = registry.prefetch(cfg)
    if args.done:
        Path(args.done).parent.mkdir(parents=True, exist_ok=True)
        Path(args.done).write_text("\n".join(fetched) + "\n")
    return {"fetched": fetched}


def teacher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, choices=registry.BOOTSTRAPPABLE)
    parser.add_argument("--output", required=True, help="folder to save the teacher into")


def train_teacher(cfg: Config, name: str, output: Path) -> dict[str, Any]:
    comp = registry.component(cfg, name)
    if comp.source != "bootstrap":
        raise ConfigError(
            f"pretrained.{name}.source is {comp.source!r}; only 'bootstrap' components are trained"
        )
    seed = teacher_seed(cfg, name)
    torch.manual_seed(seed)
    model, classifier_config = build_teacher(cfg, name)
    job = f"teacher-{name}"
    trainer = Trainer(
        job,
        {"model": Objective(model, teacher_optim(comp), ema=False)},
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=seed,
        settings=keys.digest(keys.teacher(cfg, name)),
        hparams=keys.hparams(keys.teacher(cfg, name)),
        project=cfg.run_id,
    )

    def make_batches(segment: int):
        loader = make_loader(
            cfg, "train", batch_size=comp.batch_size, features=(), images=True, seed=seed + segment
        )
        for batch in loader:
            yield {k: v.to(trainer.device) for k, v in batch.items() if k in ("image", "cls")}

    def step_fn(tr: Trainer, batch: dict[str, torch.Tensor]) -> StepOutput:
        with tr.autocast():
            loss, logs = teacher_loss(name, tr.modules["model"], batch)
        return StepOutput(losses={"model": loss}, logs=logs)

    trainer.fit(make_batches, step_fn)
    model = trainer.unwrap().eval()
    summary: dict[str, Any] = {"teacher": name, "steps": comp.train_steps}
    if name == "vae":
        batches = [b["image"] for b, _ in zip(make_batches(10_000), range(4), strict=False)]
        shift, scale = latent_statistics(model, batches)
        model.register_to_config(shift_factor=shift, scaling_factor=scale)
        summary |= {"shift_factor": shift, "scaling_factor": scale}
    trainer.export(lambda module, path: save_teacher(name, module, classifier_config, path, summary), output)
    metrics = paths.log_dir(cfg.out, job) / "metrics.jsonl"
    if metrics.exists():
        summary["final"] = json.loads(metrics.read_text().splitlines()[-1])
    return summary


def teachers(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_teacher(cfg, args.name, Path(args.output))


ENTRY_POINTS = {
    "prefetch": EntryPoint(prefetch_arguments, prefetch),
    "teachers": EntryPoint(teacher_arguments, teachers),
}

"""A test-only training command for tests/utils/test_process.py: `semtok toy-train --out DIR --pause
MOMENT` trains a tiny model with the real training loop (12 steps, a checkpoint every 4) and exports it
to DIR/final, pausing at MOMENT so that a test can send it a signal then:

    startup   before the trainer exists (the imports, the config, the model are done)
    resume    inside Trainer.resume, before the checkpoint is loaded
    train     in the step function of step 6
    export    inside the export's save function
    result    after the command has returned its result, in an atexit handler (interpreter exit)

At a pause it writes DIR/paused and waits until a signal is noted (where the job defers or ignores it:
resume, train, export, result; at most 60 s), while a signal ends it at start-up.
Run it as its own process with `python -c "import signal_job; ..."` (this folder on PYTHONPATH) or
through a fork server started with `--preload signal_job`.
"""

from __future__ import annotations

import argparse
import atexit
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from semtok.cli import dispatch
from semtok.config import ComputeConfig, OptimConfig, section_hash
from semtok.jobs import EntryPoint
from semtok.train.loop import Objective, StepOutput, Trainer
from semtok.utils.process import received_signal

MOMENTS = ("none", "startup", "resume", "train", "export", "result")

dispatch.COMMANDS["toy-train"] = dispatch.Command(
    __name__, "test only: train a toy model, pausing at --pause"
)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--pause", choices=MOMENTS, default="none")


def pause(out: Path, wait_for_signal: bool) -> None:
    (out / "paused").write_text("")
    deadline = time.time() + 60
    while time.time() < deadline and not (wait_for_signal and received_signal() is not None):
        time.sleep(0.01)


def batches(segment: int):
    gen = torch.Generator().manual_seed(1000 + segment)
    while True:
        x = torch.randn(8, 4, generator=gen)
        yield x, x.sum(-1, keepdim=True)


def toy_train(args: argparse.Namespace, _cfg: object) -> dict[str, int]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.pause == "startup":
        pause(out, wait_for_signal=False)
    torch.manual_seed(0)
    optim = OptimConfig(steps=12, batch_size=8, lr=0.05, warmup=2, ema=0.9, ckpt_every=4, log_every=4)
    compute = ComputeConfig(
        mixed_precision="no", compile=False, grad_checkpointing=False, fused_adam=False, threads=1
    )
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    trainer = Trainer(
        "toy",
        {"model": Objective(model, optim)},
        compute,
        out / "ckpt",
        out / "logs",
        seed=0,
        settings=section_hash(optim),
    )
    if args.pause == "resume":
        resume = trainer.resume
        trainer.resume = lambda: (pause(out, wait_for_signal=True), resume())[1]

    def step(tr: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        if args.pause == "train" and tr.step == 6:
            pause(out, wait_for_signal=True)
        x, y = batch
        return StepOutput(losses={"model": ((tr.modules["model"](x) - y) ** 2).mean()})

    def save(module: nn.Module, path: Path) -> None:
        if args.pause == "export":
            pause(out, wait_for_signal=True)
        path.mkdir(parents=True)
        save_file(module.state_dict(), str(path / "model.safetensors"))

    trainer.fit(batches, step)
    trainer.export(save, out / "final")
    if args.pause == "result":
        atexit.register(pause, out, True)
    return {"steps": trainer.step}


ENTRY_POINTS = {"toy-train": EntryPoint(arguments, toy_train)}

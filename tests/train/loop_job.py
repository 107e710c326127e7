"""A toy training job on the real shard loader with 2 DataLoader workers, for test_loop.py:

    python loop_job.py CONFIG OUT PAUSE_AT [--signal-rank R]

At step PAUSE_AT (-1: never) its step function writes OUT/paused and waits until the job receives a
checkpoint signal (the test sends SIGTERM to the job's whole process group from outside, as Slurm does
on preemption or `scancel`); with --signal-rank (under torchrun) the process of rank R instead sends
SIGUSR1 to itself alone and carries on. Writes OUT/live.safetensors (the trained weights) and OUT/final
(the exported EMA weights) when it finishes.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from semtok.config import OptimConfig, load, section_hash
from semtok.data.loader import make_loader
from semtok.train.loop import Objective, StepOutput, Trainer


def main(config: str, out: Path, pause_at: int, signal_rank: int | None) -> None:
    cfg = load(config)
    optim = OptimConfig(steps=15, batch_size=4, lr=0.01, warmup=1, ema=0.9, ckpt_every=5, log_every=5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(1))
    model(torch.zeros(1, 4, 8, 8))
    trainer = Trainer(
        "group-signal",
        {"model": Objective(model, optim)},
        cfg.compute,
        out / "ckpt",
        out / "logs",
        seed=0,
        settings=section_hash(optim),
    )

    def make_batches(segment: int):
        loader = make_loader(cfg, "train", batch_size=4, features=("latents",), seed=segment, num_workers=2)
        for batch in loader:
            yield batch["latent"], batch["cls"].float()

    def step_fn(tr: Trainer, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        if tr.step == pause_at and signal_rank is not None:
            if tr.accelerator.process_index == signal_rank:
                os.kill(os.getpid(), signal.SIGUSR1)
        elif tr.step == pause_at:
            (out / "paused").touch()
            deadline = time.time() + 120
            while tr._signal is None and time.time() < deadline:
                time.sleep(0.01)
        x, y = batch
        noise = torch.randn_like(y) * 0.01  # the global RNG: a resume must restore it exactly
        loss = ((tr.modules["model"](x).squeeze(-1) - y - noise) ** 2).mean()
        return StepOutput(losses={"model": loss})

    trainer.fit(make_batches, step_fn)
    save_file(trainer.unwrap().state_dict(), str(out / "live.safetensors"))

    def save(module: nn.Module, path: Path) -> None:
        path.mkdir(parents=True)
        save_file(module.state_dict(), str(path / "ema.safetensors"))

    trainer.export(save, out / "final")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out", type=Path)
    parser.add_argument("pause_at", type=int)
    parser.add_argument("--signal-rank", type=int)
    args = parser.parse_args()
    main(args.config, args.out, args.pause_at, args.signal_rank)

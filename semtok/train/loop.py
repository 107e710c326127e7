"""The one training loop that Stage I, Stage II, the generator and the teachers share.

A stage supplies the modules, a `make_batches(segment)` data factory and a `step_fn` returning its
losses; the loop does the rest: accelerate (multi-GPU, bf16), AdamW, warmup + cosine, gradient
clipping, EMA, atomic checkpoints kept on a step interval and written on SIGTERM/SIGUSR1 (Slurm's
warning before a time limit or a preemption), exact resume, a progress bar, TensorBoard scalars and
a `metrics.jsonl` with every loss term logged separately.

Exact resume: the data stream is cut into *segments* of `ckpt_every` steps, each drawn from
`make_batches(segment)` with a seed derived from the segment, so a run resumed from a checkpoint
sees exactly the batches an uninterrupted run sees (a checkpoint written mid-segment by a signal
fast-forwards through the consumed batches of its segment). Model, EMA, optimizers, schedulers, RNG
states and the step are restored; the resumed run ends with the same weights.

Layout of a checkpoint folder (`checkpoints/<job>/step-XXXXXXXX/`): accelerate's `save_state`
(safetensors models, optimizer/scheduler/RNG states loaded with weights_only=True), `ema.safetensors`,
`meta.json`. Written to `tmp-*` and renamed when complete; the newest `keep_ckpts` are kept. With
`compute.fsdp` and several processes, models, optimizers and EMA are sharded (semtok/train/fsdp.py) and
saved as one safetensors file of shards per process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semtok.config import ComputeConfig, OptimConfig
from semtok.train.ema import EMA

log = logging.getLogger("semtok.train")

CHECKPOINT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CHECKPOINTED = 75  # EX_TEMPFAIL: checkpointed on a signal; the scheduler should retry/requeue


@dataclass
class Objective:
    """A module trained by its own optimizer (the model; the Stage II discriminator)."""

    module: nn.Module
    optim: OptimConfig
    lr: float | None = None  # overrides optim.lr (the discriminator's lr)
    ema: bool = True


@dataclass
class StepOutput:
    """What a stage's `step_fn` returns: one loss per objective name, and scalars to log."""

    losses: dict[str, torch.Tensor]
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup then cosine decay to `min_ratio` of the peak (SPEC §2, §4)."""

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _scalar(out: StepOutput, key: str) -> float:
    return float(out.losses[key].detach())


def _atomic_dir_replace(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


class Trainer:
    def __init__(
        self,
        name: str,
        objectives: dict[str, Objective],
        compute: ComputeConfig,
        ckpt_dir: Path,
        log_dir: Path,
        seed: int,
        main: str = "model",
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        if main not in objectives:
            raise ValueError(f"objectives must contain the main objective {main!r}")
        self.name, self.main = name, main
        self.ckpt_dir, self.log_dir = Path(ckpt_dir), Path(log_dir)
        self.optim = objectives[main].optim
        cuda = torch.cuda.is_available()
        self.accelerator = Accelerator(
            mixed_precision=compute.mixed_precision if cuda else "no",
            cpu=not cuda,
            step_scheduler_with_optimizer=False,
        )
        if compute.threads and not cuda:
            torch.set_num_threads(compute.threads)
        if cuda and compute.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        set_seed(seed, device_specific=True)
        self.fsdp = self._fsdp(compute)

        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.clip: dict[str, float] = {}
        self.emas: dict[str, EMA] = {}
        for key, obj in objectives.items():
            module = self.fsdp.shard(key, obj.module) if self.fsdp else obj.module
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"objective {key!r} has no trainable parameters")
            decay, no_decay = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
            opt = torch.optim.AdamW(
                [
                    {"params": decay, "weight_decay": obj.optim.weight_decay},
                    {"params": no_decay, "weight_decay": 0.0},
                ],
                lr=obj.lr if obj.lr is not None else obj.optim.lr,
                betas=tuple(obj.optim.betas),
                fused=bool(compute.fused_adam and cuda),
            )
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda(obj.optim.warmup, obj.optim.steps, obj.optim.min_lr_ratio)
            )
            if self.fsdp:  # sharded: the loop checkpoints model and optimizer itself (semtok/train/fsdp.py)
                sched = self.accelerator.prepare(sched)
            else:
                module, opt, sched = self.accelerator.prepare(module, opt, sched)
            self.modules[key], self.optimizers[key], self.schedulers[key] = module, opt, sched
            self.clip[key] = obj.optim.grad_clip
            if obj.ema:
                self.emas[key] = EMA(self.unwrap(key), obj.optim.ema)
        self.step = 0
        self._signal: int | None = None

    # -- helpers --------------------------------------------------------------------------------
    def _fsdp(self, compute: ComputeConfig) -> Any:
        """The sharding of `compute.fsdp` (semtok/train/fsdp.py) with more than one process, else None."""
        if not (compute.fsdp and self.accelerator.num_processes > 1):
            return None
        from semtok.train.fsdp import FSDP

        return FSDP(compute, self.accelerator.process_index, self.accelerator.num_processes)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def unwrap(self, key: str | None = None) -> nn.Module:
        return self.accelerator.unwrap_model(self.modules[key or self.main])

    def autocast(self) -> Any:
        return self.accelerator.autocast()

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.exists():
            return []
        done = [p for p in self.ckpt_dir.glob("step-*") if (p / "meta.json").exists()]
        return sorted(done, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self, segment_offset: int) -> Path:
        from safetensors.torch import save_file

        final = self.ckpt_dir / f"step-{self.step:08d}"
        tmp = self.ckpt_dir / f"tmp-{self.step:08d}"
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp), safe_serialization=True)
        if self.fsdp:
            self.fsdp.save(tmp, self.modules, self.optimizers, self.emas)
        elif self.is_main:
            for key, ema in self.emas.items():
                save_file(ema.state_dict(), str(tmp / f"ema_{key}.safetensors"))
        self.accelerator.wait_for_everyone()  # every process's files (RNG states, shards) are written
        if self.is_main:
            meta = {
                "step": self.step,
                "segment_offset": segment_offset,
                "job": self.name,
                "time": time.time(),
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            _atomic_dir_replace(tmp, final)
            for old in self.checkpoints()[: -max(1, self.optim.keep_ckpts)]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.ckpt_dir.glob("tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def resume(self) -> int:
        """Load the newest complete checkpoint; returns the number of batches of the current segment
        that were already consumed (0 at a segment boundary)."""
        from safetensors.torch import load_file

        ckpts = self.checkpoints()
        if not ckpts:
            return 0
        latest = ckpts[-1]
        self.accelerator.load_state(str(latest))
        if self.fsdp:
            self.fsdp.load(latest, self.modules, self.optimizers, self.emas)
        else:
            for key, ema in self.emas.items():
                ema.load_state_dict(load_file(str(latest / f"ema_{key}.safetensors")))
        meta = json.loads((latest / "meta.json").read_text())
        self.step = int(meta["step"])
        if self.is_main:
            log.warning("%s: resumed from %s (step %d)", self.name, latest, self.step)
        return int(meta["segment_offset"])

    # -- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signal = signum

    def _agreed_signal(self) -> int | None:
        """The checkpoint signal that any process received, else None: every process must stop and
        checkpoint after the same step, also when the signal reaches them a step apart."""
        if self.accelerator.num_processes == 1:
            return self._signal
        flag = torch.tensor([self._signal or 0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    # -- the loop -------------------------------------------------------------------------------
    def fit(
        self,
        make_batches: Callable[[int], Iterator[Any]],
        step_fn: Callable[[Trainer, Any], StepOutput],
    ) -> None:
        """Train to `optim.steps`, resuming from the newest checkpoint when there is one.

        make_batches(segment) must return the batches of steps [segment·ckpt_every, ...) — an
        iterator deterministic in `segment` (seed the loader from it)."""
        from tqdm.auto import tqdm

        total, every = self.optim.steps, max(1, self.optim.ckpt_every)
        consumed = self.resume()
        previous = {s: signal.signal(s, self._on_signal) for s in CHECKPOINT_SIGNALS}
        writer = self._writer()
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=self.name,
            disable=not self.is_main,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        batches: Iterator[Any] | None = None
        started = time.time()
        try:
            while self.step < total:
                if batches is None or self.step % every == 0:
                    batches = make_batches(self.step // every)
                    for _ in range(consumed):
                        next(batches)
                    consumed = 0
                out = step_fn(self, next(batches))
                logs = self._optimise(out)
                self.step += 1
                bar.update(1)
                if self.step % self.optim.log_every == 0 or self.step == total:
                    self._log(writer, out, logs, started)
                    bar.set_postfix(loss=f"{_scalar(out, self.main):.4f}")
                signum = self._agreed_signal()
                if signum is not None:
                    self.save_checkpoint(self.step % every)
                    log.warning("%s: checkpointed at step %d on signal %d", self.name, self.step, signum)
                    raise SystemExit(EXIT_CHECKPOINTED)
                if self.step % every == 0 and self.step < total:
                    self.save_checkpoint(0)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _optimise(self, out: StepOutput) -> dict[str, torch.Tensor]:
        logs: dict[str, torch.Tensor] = {}
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        for key, loss in out.losses.items():
            if key not in self.modules:
                raise KeyError(f"step_fn returned a loss for unknown objective {key!r}")
            # Earlier objectives' backward passes may leave gradients on this module (the generator's
            # adversarial loss reaches the discriminator); only this objective's own loss counts.
            self.optimizers[key].zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
            if self.clip[key] > 0:
                logs[f"grad_norm/{key}"] = self.accelerator.clip_grad_norm_(
                    self.modules[key].parameters(), self.clip[key]
                )
            self.optimizers[key].step()
            self.schedulers[key].step()
            if key in self.emas:
                self.emas[key].update(self.unwrap(key))
        return logs

    def _writer(self) -> Any:
        if not self.is_main:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency; keep training if a site lacks it
            return None
        return SummaryWriter(str(self.log_dir / "tensorboard"), purge_step=self.step)

    def _log(self, writer: Any, out: StepOutput, extra: dict[str, torch.Tensor], started: float) -> None:
        scalars = {f"loss/{k}": v for k, v in out.losses.items()} | out.logs | extra
        values = {k: float(self.accelerator.reduce(v.detach().float(), "mean")) for k, v in scalars.items()}
        values["lr"] = self.schedulers[self.main].get_last_lr()[0]
        values["elapsed_s"] = time.time() - started
        if not self.is_main:
            return
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(k, v, self.step)
        with open(self.log_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **values}) + "\n")

    # -- export ---------------------------------------------------------------------------------
    def export(self, save: Callable[[nn.Module, Path], None], output: Path, key: str | None = None) -> None:
        """Write the final model (EMA weights when kept) with `save(module, dir)` into `output`,
        atomically: the declared output appears only when complete."""
        key = key or self.main
        output = Path(output)
        self.accelerator.wait_for_everyone()
        module = self.unwrap(key)
        with self.emas[key].swapped(module) if key in self.emas else contextlib.nullcontext():
            whole = self.fsdp.gather(key, module) if self.fsdp else module  # FSDP: collective
            if self.is_main:
                tmp = output.with_name(output.name + ".tmp")
                if tmp.exists():
                    shutil.rmtree(tmp)
                save(whole, tmp)
                _atomic_dir_replace(tmp, output)
        self.accelerator.wait_for_everyone()

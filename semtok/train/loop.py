"""The one training loop that Stage I, Stage II, the generator and the teachers share.

A stage supplies the modules, a `make_batches(segment)` data factory and a `step_fn` returning its
losses; the loop does the rest: accelerate (multi-GPU, bf16), AdamW, warmup + cosine, gradient
clipping, EMA, atomic checkpoints kept on a step interval and written on SIGTERM/SIGUSR1 (Slurm's
warning before a time limit, a preemption or `scancel`), exact resume, a progress bar, accelerate's
experiment trackers (`compute.trackers`: TensorBoard under the job's log folder, Weights & Biases when
installed and chosen; the project is the run id, the run the job) and a `metrics.jsonl` with every loss
term logged separately.

Exact resume: the data stream is cut into *segments* of `ckpt_every` steps, each drawn from
`make_batches(segment)` with a seed derived from the segment, so a run resumed from a checkpoint
sees exactly the batches an uninterrupted run sees (a checkpoint written mid-segment by a signal
fast-forwards through the consumed batches of its segment). Model, EMA, optimizers, schedulers, RNG
states and the step are restored; the resumed run ends with the same weights.

Signals: from resume to the end of the export a checkpoint signal is only noted (`deferred_signals`,
semtok/utils/process.py; in a `semtok` job the process-level handler, which ends the job with 75 before
training and lets it exit 0 once its output is written). Batches are fetched with the checkpoint signals
held back, so DataLoader workers started then never see a signal sent to the whole process group; the
main process checkpoints (also when a fetch failed because of the signal) and exits with 75. All
processes agree on the step to stop at.

Layout of a checkpoint folder (`checkpoints/<job>/step-XXXXXXXX/`): accelerate's `save_state`
(safetensors models, optimizer/scheduler/RNG states loaded with weights_only=True), `ema_*.safetensors`,
`meta.json` (step, offset in the segment, the job's settings hash, a fingerprint of the trained
modules' structure, and the size and SHA-256 of every file). Written to `tmp-*`, synced, renamed when
complete; the newest `keep_ckpts` are kept. A job resumes only from a checkpoint that verifies and was
written under the same settings and structure: one of other settings is deleted, a corrupt one is
renamed `corrupt-step-*` and the previous one is used, each with a warning naming it. Once the job's
declared output is written, its checkpoints are removed. With `compute.fsdp` and several processes,
models, optimizers and EMA are sharded (semtok/train/fsdp.py) and saved as one safetensors file of
shards per process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semtok.config import ComputeConfig, ConfigError, OptimConfig
from semtok.models.saved import check_finite
from semtok.train.ema import EMA
from semtok.utils.devices import job_device
from semtok.utils.io import follow_umask
from semtok.utils.process import (
    CHECKPOINT_SIGNALS,
    EXIT_CHECKPOINTED,
    EXIT_DIVERGED,
    deferred_signals,
    held_signals,
    job_finished,
    received_signal,
)
from semtok.utils.progress import progress

log = logging.getLogger("semtok.train")


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


def segment_seed(seed: int, segment: int) -> int:
    """The seed of the data stream of checkpoint segment `segment` of a run seeded `seed` (exact resume)."""
    return seed * 100_003 + segment


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup then cosine decay to `min_ratio` of the peak (SPEC §2, §4)."""

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def trackers(compute: ComputeConfig) -> list[str]:
    """accelerate's trackers of `compute.trackers`; a ConfigError naming the setting for one whose
    package is not installed."""
    import importlib.util

    missing = [name for name in compute.trackers if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"compute.trackers: {missing[0]} is not installed (pip install {missing[0]}), or remove it"
        )
    return list(compute.trackers)


def _scalar(out: StepOutput, key: str) -> float:
    return float(out.losses[key].detach())


def _atomic_dir_replace(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _sync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Checkpoint integrity


class CorruptCheckpoint(Exception):
    """A checkpoint folder that fails verification; the message names the bad file."""


def structure_fingerprint(modules: dict[str, nn.Module]) -> str:
    """A short hash of every module's parameter and buffer names, shapes, dtypes and trainability:
    a checkpoint of other modules (changed code or architecture) cannot be loaded into these."""
    layout = {
        key: [
            (name, list(t.shape), str(t.dtype), t.requires_grad)
            for name, t in [*module.named_parameters(), *module.named_buffers()]
        ]
        for key, module in sorted(modules.items())
    }
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:12]


def _sha256(path: Path, sync: bool = False) -> str:
    with open(path, "rb") as f:
        if sync:
            os.fsync(f.fileno())
        return hashlib.file_digest(f, "sha256").hexdigest()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """{path relative to `folder`: {"size", "sha256"}} of every file in it, each synced to disk."""
    return {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path, sync=True)}
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    }


def _meta_checksum(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    with open(folder / "meta.json", "w") as f:
        json.dump(meta | {"checksum": _meta_checksum(meta)}, f)
        f.flush()
        os.fsync(f.fileno())


def read_meta(folder: Path) -> dict[str, Any]:
    """A checkpoint's meta.json, checked against its own checksum."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"{path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or "checksum" not in meta:
        raise CorruptCheckpoint(f"{path}: no checksum (damaged, or written by an older semtok)")
    if meta["checksum"] != _meta_checksum(meta):
        raise CorruptCheckpoint(f"{path}: content does not match its checksum")
    return meta


def verify_files(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Raise CorruptCheckpoint unless every file recorded in meta.json has its recorded size and hash."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{path}: missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CorruptCheckpoint(f"{path}: {size} bytes, {expected['size']} when written (truncated?)")
        if _sha256(path) != expected["sha256"]:
            raise CorruptCheckpoint(f"{path}: content differs from the SHA-256 recorded when written")


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
        *,
        settings: str,
        project: str = "semtok",
        hparams: dict[str, bool | int | float | str] | None = None,
    ) -> None:
        """settings: the job's settings key (semtok/keys.py, as the workflow rule's params hash it);
        checkpoints written under another key, or sharded differently (compute.fsdp), are never resumed
        from. project: the trackers' project (the run id), `name` the run; hparams: the run's
        hyperparameters for the trackers (semtok.keys.hparams of the job's key)."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        if main not in objectives:
            raise ValueError(f"objectives must contain the main objective {main!r}")
        self.name, self.main = name, main
        self.settings, self.project, self.hparams = settings, project, hparams or {}
        self.structure = structure_fingerprint({k: o.module for k, o in objectives.items()})
        self.ckpt_dir, self.log_dir = Path(ckpt_dir), Path(log_dir)
        self.optim = objectives[main].optim
        cuda = job_device(compute).type == "cuda"
        self.accelerator = Accelerator(
            mixed_precision=compute.mixed_precision,
            cpu=not cuda,
            step_scheduler_with_optimizer=False,
            log_with=trackers(compute),
            project_dir=str(self.log_dir),
        )
        if cuda and compute.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        set_seed(seed, device_specific=True)
        self.fsdp = self._fsdp(compute)
        if self.is_main:
            log.info(
                "%s: %d process(es) on %s, mixed precision %s, %d CPU thread(s) each, %s",
                name,
                self.accelerator.num_processes,
                self.accelerator.device,
                compute.mixed_precision,
                torch.get_num_threads(),
                "FSDP" if self.fsdp else "DDP" if self.accelerator.num_processes > 1 else "one process",
            )

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
                fused=compute.fused_adam,
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
        self._saved_step: int | None = None  # the step of the checkpoint on disk that this run matches
        # per loss term or logged scalar: the first step whose value was not finite (-1: none yet), kept
        # on the device so that watching costs no host sync; read at log steps, checkpoints and export
        self._first_nonfinite: dict[str, torch.Tensor] = {}

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
        """The job's checkpoint folders, oldest first (not yet verified)."""
        if not self.ckpt_dir.exists():
            return []
        found = [p for p in self.ckpt_dir.glob("step-*") if p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

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
            follow_umask(tmp)
            meta = {
                "step": self.step,
                "segment_offset": segment_offset,
                "job": self.name,
                "settings": self.settings,
                "structure": self.structure,
                "sharded": bool(self.fsdp),
                "time": time.time(),
                "files": _manifest(tmp),
            }
            _write_meta(tmp, meta)
            _atomic_dir_replace(tmp, final)
            _sync_dir(self.ckpt_dir)
            for old in self.checkpoints()[: -max(1, self.optim.keep_ckpts)]:
                shutil.rmtree(old, ignore_errors=True)
            for stale in self.ckpt_dir.glob("tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._saved_step = self.step
        return final

    def _usable_checkpoint(self) -> tuple[str, dict[str, Any]] | None:
        """(folder, meta) of the newest checkpoint written under this job's settings that verifies.
        Checkpoints of other settings are deleted; a corrupt one is renamed `corrupt-step-*`."""
        for ckpt in reversed(self.checkpoints()):
            try:
                meta = read_meta(ckpt)
                written = (meta.get("settings"), meta.get("structure"), meta.get("sharded", False))
                if written != (self.settings, self.structure, bool(self.fsdp)):
                    log.warning(
                        "%s: discarded checkpoint %s: written under other settings, modules or sharding "
                        "(settings %s, structure %s, FSDP %s; this job has %s, %s, %s)",
                        self.name,
                        ckpt,
                        *written,
                        self.settings,
                        self.structure,
                        bool(self.fsdp),
                    )
                    shutil.rmtree(ckpt)
                    continue
                verify_files(ckpt, meta["files"])
            except CorruptCheckpoint as err:
                bad = ckpt.with_name(f"corrupt-{ckpt.name}")
                log.warning("%s: checkpoint %s is corrupt: %s; moved to %s", self.name, ckpt, err, bad)
                if bad.exists():
                    shutil.rmtree(bad)
                os.replace(ckpt, bad)
                continue
            return str(ckpt), meta
        return None

    def resume(self) -> int:
        """Load the newest usable checkpoint (see `_usable_checkpoint`; the main process chooses, all
        load it); returns the number of batches of the current segment already consumed."""
        from accelerate.utils import broadcast_object_list
        from safetensors.torch import load_file

        choice = broadcast_object_list([self._usable_checkpoint() if self.is_main else None])[0]
        if choice is None:
            return 0
        folder, meta = Path(choice[0]), choice[1]
        self.accelerator.load_state(str(folder))
        if self.fsdp:
            self.fsdp.load(folder, self.modules, self.optimizers, self.emas)
        else:
            for key, ema in self.emas.items():
                ema.load_state_dict(load_file(str(folder / f"ema_{key}.safetensors")))
        self.step = self._saved_step = int(meta["step"])
        if self.is_main:
            log.warning("%s: resumed from %s (step %d)", self.name, folder, self.step)
            log.warning("%s: its data segment continues at batch %d", self.name, int(meta["segment_offset"]))
        return int(meta["segment_offset"])

    def remove_checkpoints(self) -> None:
        """Delete the job's checkpoint folder (once its declared output is written)."""
        self.accelerator.wait_for_everyone()
        if self.is_main and self.ckpt_dir.exists():
            shutil.rmtree(self.ckpt_dir)
            log.warning("%s: output written; removed its checkpoints %s", self.name, self.ckpt_dir)

    # -- signals --------------------------------------------------------------------------------
    @property
    def _signal(self) -> int | None:
        """The checkpoint signal noted since the loop deferred them (`deferred_signals`), or None."""
        return received_signal()

    def _stop_requested(self) -> bool:
        """Whether any process received a checkpoint signal (all processes agree, so that they
        checkpoint at the same step)."""
        if self.accelerator.num_processes == 1:
            return self._signal is not None
        flag = torch.tensor(float(self._signal is not None), device=self.device)
        return bool(self.accelerator.reduce(flag, "sum") > 0)

    def _checkpoint_and_exit(self, every: int) -> None:
        self.stop_if_diverged()
        if self.step not in (0, self._saved_step):  # nothing trained since the last one: nothing to save
            self.save_checkpoint(self.step % every)
        received = signal.Signals(self._signal).name if self._signal else "a signal to another process"
        log.warning("%s: checkpointed at step %d on %s", self.name, self.step, received)
        raise SystemExit(EXIT_CHECKPOINTED)

    def _next_batch(self, batches: Iterator[Any], skip: int) -> Any:
        """The next batch after skipping `skip` (a resumed segment's consumed batches), fetched with
        the checkpoint signals held back: DataLoader workers started meanwhile inherit them blocked,
        so a signal to the whole process group reaches this process only. None when a checkpoint
        signal arrived meanwhile and the fetch failed (a worker killed by it)."""
        try:
            with held_signals(CHECKPOINT_SIGNALS):
                for _ in range(skip):
                    next(batches)
                return next(batches)
        except Exception:
            if self._signal is None:
                raise
            log.warning("%s: fetching a batch failed after a checkpoint signal", self.name, exc_info=True)
            return None

    # -- the loop -------------------------------------------------------------------------------
    def fit(
        self,
        make_batches: Callable[[int], Iterator[Any]],
        step_fn: Callable[[Trainer, Any], StepOutput],
    ) -> None:
        """Train to `optim.steps`, resuming from the newest usable checkpoint when there is one.

        make_batches(segment) must return the batches of steps [segment·ckpt_every, ...) — an
        iterator deterministic in `segment` (seed the loader from it)."""
        total, every = self.optim.steps, max(1, self.optim.ckpt_every)
        with deferred_signals():
            consumed = self.resume()
            self._trim_metrics()
            self._start_trackers()
            bar = self._progress_bar(total)
            batches: Iterator[Any] | None = None
            started = time.time()
            try:
                while self.step < total:
                    skip = 0
                    if batches is None or self.step % every == 0:
                        batches, skip, consumed = make_batches(self.step // every), consumed, 0
                    batch = self._next_batch(batches, skip)
                    if self._stop_requested():
                        self._checkpoint_and_exit(every)
                    self._train_step(step_fn, batch, bar, started)
                    if self.step % every == 0 and self.step < total:
                        self.stop_if_diverged()
                        self.save_checkpoint(0)
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # a generator over a DataLoader: stop its workers now
                bar.close()
                for tracker in self.accelerator.trackers:
                    tracker.finish()

    def _train_step(
        self, step_fn: Callable[[Trainer, Any], StepOutput], batch: Any, bar: Any, started: float
    ) -> None:
        out = step_fn(self, batch)
        self._watch(out)
        logs = self._optimise(out)
        self.step += 1
        bar.update(1)
        if self.step % self.optim.log_every == 0 or self.step == self.optim.steps:
            self.stop_if_diverged()
            self._log(out, logs, started)
            bar.set_postfix(loss=f"{_scalar(out, self.main):.4f}")

    # -- divergence ----------------------------------------------------------------------------
    def _watch(self, out: StepOutput) -> None:
        """Record, on the device, the first step at which each loss (and logged term) is not finite."""
        for key, value in [*out.losses.items(), *out.logs.items()]:
            bad = ~torch.isfinite(value.detach()).all()
            first = self._first_nonfinite.get(key)
            if first is None:
                first = self._first_nonfinite[key] = torch.full((), -1, dtype=torch.long, device=value.device)
            first.copy_(torch.where(bad & (first < 0), self.step + 1, first))

    def stop_if_diverged(self) -> None:
        """Stop the job (exit EXIT_DIVERGED, nothing exported, no checkpoint written) when a loss became
        non-finite since the run started: the error names the step, the terms and the last good
        checkpoint. All processes agree (one reduction); called at log steps, checkpoints and export."""
        firsts = {k: int(v) for k, v in self._first_nonfinite.items()}  # the host sync
        bad = {k: v for k, v in firsts.items() if v >= 0}
        step = min(bad.values(), default=-1)
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            flag = torch.tensor(step if step >= 0 else 2**62, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            step = int(flag) if int(flag) < 2**62 else -1
        if step < 0:
            return
        terms = ", ".join(f"{k} (from step {v})" for k, v in sorted(bad.items(), key=lambda kv: kv[1]))
        good = self.checkpoints()
        last = (
            f"the last good checkpoint is {good[-1]}, which a retry resumes from"
            if good
            else "no checkpoint was written yet, so a retry starts from scratch"
        )
        log.error(
            "%s: training diverged: the loss is not finite at step %d (%s); %s. Stopped at step %d "
            "without exporting: lower the learning rate (or fix the data) and rerun.",
            self.name,
            step,
            terms or "on another process",
            last,
            self.step,
        )
        raise SystemExit(EXIT_DIVERGED)

    def _progress_bar(self, total: int) -> Any:
        """A bar in a terminal; in a job's log a line at a fixed interval (semtok/utils/progress.py)."""
        return progress(total=total, initial=self.step, desc=self.name, unit="step", disable=not self.is_main)

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

    def _trim_metrics(self) -> None:
        """Drop the lines `metrics.jsonl` holds beyond the step this run starts from (logged by a run
        whose later progress was lost, or by a run of other settings) and a line cut by a kill."""
        path = self.log_dir / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        path.write_text("".join(kept))

    def _start_trackers(self) -> None:
        """Start the trackers at the step this run starts from: TensorBoard drops the events a run
        logged beyond it (lost progress), like `metrics.jsonl`."""
        if self.is_main:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator.init_trackers(
            self.project,
            config=self.hparams or None,
            init_kwargs={
                "tensorboard": {"purge_step": self.step},
                "wandb": {"name": self.name, "dir": str(self.log_dir)},
            },
        )

    def _log(self, out: StepOutput, extra: dict[str, torch.Tensor], started: float) -> None:
        scalars = {f"loss/{k}": v for k, v in out.losses.items()} | out.logs | extra
        values = {k: float(self.accelerator.reduce(v.detach().float(), "mean")) for k, v in scalars.items()}
        values["lr"] = self.schedulers[self.main].get_last_lr()[0]
        values["elapsed_s"] = time.time() - started
        if not self.is_main:
            return
        self.accelerator.log(values, step=self.step)
        with open(self.log_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **values}) + "\n")

    # -- export ---------------------------------------------------------------------------------
    def export(self, save: Callable[[nn.Module, Path], None], output: Path, key: str | None = None) -> None:
        """Write the final model (EMA weights when kept) with `save(module, dir)` into `output`,
        atomically: the declared output appears only when complete; then remove the checkpoints.

        A checkpoint signal meanwhile is noted, not obeyed: training is over, so finishing is the best
        use of the grace time (a job killed here resumes from its checkpoints, which still exist; one
        that died after removing them would have to start over). Once the output is written the job is
        finished (`job_finished`): a signal after it no longer fails the job."""
        key = key or self.main
        output = Path(output)
        self.stop_if_diverged()
        with deferred_signals():
            self.accelerator.wait_for_everyone()
            module = self.unwrap(key)
            with self.emas[key].swapped(module) if key in self.emas else contextlib.nullcontext():
                whole = self.fsdp.gather(key, module) if self.fsdp else module  # FSDP: collective
                if self.is_main:
                    check_finite(whole.state_dict().items(), f"{self.name}: the weights to export")
                    tmp = output.with_name(output.name + ".tmp")
                    if tmp.exists():
                        shutil.rmtree(tmp)
                    save(whole, tmp)
                    follow_umask(tmp)
                    _atomic_dir_replace(tmp, output)
            self.remove_checkpoints()
            job_finished()

"""The shared training loop: schedule, exact resume after a crash, atomic checkpoints, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from semtok.config import ComputeConfig, OptimConfig, section_hash, to_dict
from semtok.train.loop import Objective, StepOutput, Trainer, lr_lambda
from semtok.utils.process import EXIT_CHECKPOINTED

COMPUTE = ComputeConfig(
    mixed_precision="no", compile=False, grad_checkpointing=False, fused_adam=False, threads=1
)


def make_batches(segment: int):
    """Deterministic in the segment, like the real loaders seeded from it."""
    gen = torch.Generator().manual_seed(1000 + segment)
    while True:
        x = torch.randn(8, 4, generator=gen)
        yield x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def step_fn(trainer: Trainer, batch):
    x, y = batch
    model = trainer.modules["model"]
    noise = torch.randn_like(y) * 0.01  # consumes the global RNG, which resume must restore
    loss = ((model(x) - y - noise) ** 2).mean()
    return StepOutput(losses={"model": loss}, logs={"mse": loss.detach()})


def _trainer(tmp: Path, steps: int = 20, every: int = 5, lr: float = 0.05, depth: int = 1) -> Trainer:
    """A toy job; its settings hash covers what a stage's would (optimizer settings, architecture)."""
    torch.manual_seed(0)
    optim = OptimConfig(
        steps=steps, batch_size=8, lr=lr, warmup=2, ema=0.9, ckpt_every=every, keep_ckpts=2, log_every=5
    )
    hidden = [layer for _ in range(depth - 1) for layer in (nn.Linear(16, 16), nn.Tanh())]
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), *hidden, nn.Linear(16, 1))
    return Trainer(
        "toy",
        {"model": Objective(model, optim)},
        COMPUTE,
        tmp / "ckpt",
        tmp / "logs",
        seed=0,
        settings=section_hash(optim, {"depth": depth}),
    )


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda(warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_crash_and_resume_gives_identical_weights(tmp_path):
    ref = _trainer(tmp_path / "ref")
    ref.fit(make_batches, step_fn)
    expected = {k: v.clone() for k, v in ref.unwrap().state_dict().items()}
    expected_ema = {k: v.clone() for k, v in ref.emas["model"].state_dict().items()}

    crashing = _trainer(tmp_path / "run")

    def crash_at_13(trainer, batch):
        if trainer.step == 13:
            raise RuntimeError("node failure")
        return step_fn(trainer, batch)

    with pytest.raises(RuntimeError, match="node failure"):
        crashing.fit(make_batches, crash_at_13)
    assert [p.name for p in crashing.checkpoints()] == ["step-00000005", "step-00000010"]

    resumed = _trainer(tmp_path / "run")
    resumed.fit(make_batches, step_fn)
    assert resumed.step == 20
    for k, v in resumed.unwrap().state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    for k, v in resumed.emas["model"].state_dict().items():
        torch.testing.assert_close(v, expected_ema[k], rtol=0, atol=0)
    # it really resumed (from step 10), it did not start over
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run/logs/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [5, 10, 15, 20]


def test_signal_checkpoints_mid_segment_and_resumes_exactly(tmp_path):
    ref = _trainer(tmp_path / "ref")
    ref.fit(make_batches, step_fn)

    run = _trainer(tmp_path / "run")

    def signal_at_7(trainer, batch):
        if trainer.step == 7:
            os.kill(os.getpid(), signal.SIGUSR1)
        return step_fn(trainer, batch)

    with pytest.raises(SystemExit) as exit_info:
        run.fit(make_batches, signal_at_7)
    assert exit_info.value.code == EXIT_CHECKPOINTED
    assert run.checkpoints()[-1].name == "step-00000008"
    assert json.loads((run.checkpoints()[-1] / "meta.json").read_text())["segment_offset"] == 3

    resumed = _trainer(tmp_path / "run")
    resumed.fit(make_batches, step_fn)
    for k, v in resumed.unwrap().state_dict().items():
        torch.testing.assert_close(v, ref.unwrap().state_dict()[k], rtol=0, atol=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the 20-step toy run without interruption."""
    ref = _trainer(tmp_path_factory.mktemp("ref"))
    ref.fit(make_batches, step_fn)
    return {k: v.clone() for k, v in ref.unwrap().state_dict().items()}


def _crash(trainer: Trainer, at: int) -> None:
    """Run `trainer` until a crash just before step `at` (its checkpoints stay behind)."""

    def crashing(tr, batch):
        if tr.step == at:
            raise RuntimeError("node failure")
        return step_fn(tr, batch)

    with pytest.raises(RuntimeError, match="node failure"):
        trainer.fit(make_batches, crashing)


def _assert_same_weights(trainer: Trainer, expected: dict[str, torch.Tensor]) -> None:
    state = trainer.unwrap().state_dict()
    assert state.keys() == expected.keys()
    for k, v in state.items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":  # same size, one byte changed in the middle
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "ema_model.safetensors", "meta.json", "optimizer.bin", "random_states_0.pkl"],
)
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, uninterrupted, caplog, name, how):
    """A damaged file of the newest checkpoint is detected by the sizes and hashes recorded when it was
    written; the job warns naming it, resumes from the previous checkpoint and ends as if never
    interrupted."""
    _crash(_trainer(tmp_path / "run"), at=13)  # leaves step-5 and step-10
    _damage(tmp_path / "run/ckpt/step-00000010" / name, how)
    resumed = _trainer(tmp_path / "run")
    with caplog.at_level("WARNING", logger="semtok.train"):
        resumed.fit(make_batches, step_fn)
    assert f"step-00000010/{name}" in caplog.text and "corrupt" in caplog.text
    assert "resumed from" in caplog.text and "step 5)" in caplog.text
    assert (tmp_path / "run/ckpt/corrupt-step-00000010").is_dir()  # kept aside for inspection
    _assert_same_weights(resumed, uninterrupted)


def test_no_usable_checkpoint_starts_over(tmp_path, uninterrupted, caplog):
    """Every checkpoint damaged (or a folder left without meta.json): train from step 0."""
    _crash(_trainer(tmp_path / "run"), at=13)
    _damage(tmp_path / "run/ckpt/step-00000010/model.safetensors", "truncate")
    (tmp_path / "run/ckpt/step-00000005/meta.json").unlink()
    (tmp_path / "run/ckpt/tmp-00000015").mkdir()  # a checkpoint being written when the job died
    (tmp_path / "run/ckpt/step-backup").mkdir()  # not a checkpoint name
    again = _trainer(tmp_path / "run")
    with caplog.at_level("WARNING", logger="semtok.train"):
        assert again.resume() == 0 and again.step == 0
    assert "step-00000010/model.safetensors" in caplog.text and "step-00000005/meta.json" in caplog.text
    again.fit(make_batches, step_fn)
    _assert_same_weights(again, uninterrupted)


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"steps": 25}, {"depth": 2}], ids=["lr", "steps", "depth"])
def test_checkpoints_of_other_settings_are_discarded(tmp_path, caplog, change):
    """A rerun after a settings change (Snakemake reruns the job when its params change) equals a run
    from scratch with the new settings: it neither resumes at the old settings (lr), nor exports the
    old model (fewer steps than the checkpoint's), nor fails to load it (architecture)."""
    _crash(_trainer(tmp_path / "run", steps=40, every=10), at=33)  # leaves step-20 and step-30
    rerun = _trainer(tmp_path / "run", **{"steps": 40, "every": 10} | change)
    with caplog.at_level("WARNING", logger="semtok.train"):
        rerun.fit(make_batches, step_fn)
    assert "discarded checkpoint" in caplog.text and "resumed from" not in caplog.text
    scratch = _trainer(tmp_path / "scratch", **{"steps": 40, "every": 10} | change)
    scratch.fit(make_batches, step_fn)
    assert rerun.step == scratch.step == change.get("steps", 40)
    _assert_same_weights(rerun, scratch.unwrap().state_dict())
    for k, v in rerun.emas["model"].state_dict().items():
        torch.testing.assert_close(v, scratch.emas["model"].state_dict()[k], rtol=0, atol=0)
    logged = [(tmp_path / run / "logs/metrics.jsonl").read_text() for run in ("run", "scratch")]
    steps = [[json.loads(line)["step"] for line in text.splitlines()] for text in logged]
    assert steps[0] == steps[1]  # the old run's lines are gone too


def test_signal_during_export_lets_the_job_finish(tmp_path):
    """Training is over when the output is written: a checkpoint signal then is noted, not obeyed
    (dying after the checkpoints are removed would cost the whole run), and the handler the process
    had before is back afterwards."""
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: received.append(signum))
    try:
        run = _trainer(tmp_path / "run", steps=10)
        run.fit(make_batches, step_fn)

        def save(module, path):
            os.kill(os.getpid(), signal.SIGUSR1)
            path.mkdir(parents=True)
            torch.save(module.state_dict(), path / "w.pt")

        run.export(save, tmp_path / "final")
        assert (tmp_path / "final/w.pt").exists() and not (tmp_path / "run/ckpt").exists()
        assert received == [] and run._signal == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGUSR1)
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_fetch_failing_after_a_signal_checkpoints(tmp_path, uninterrupted):
    """A signal to the process group can kill a DataLoader worker before the main process acts on it:
    the failed fetch must end in a checkpoint and exit 75, not a crash."""

    def workers_killed(segment: int):
        batches = make_batches(segment)
        for i in range(100):
            if segment == 1 and i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")
            yield next(batches)

    run = _trainer(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        run.fit(workers_killed, step_fn)
    assert exit_info.value.code == EXIT_CHECKPOINTED
    assert json.loads((run.checkpoints()[-1] / "meta.json").read_text())["step"] == 7
    resumed = _trainer(tmp_path / "run")
    resumed.fit(make_batches, step_fn)
    _assert_same_weights(resumed, uninterrupted)


def test_export_writes_ema_weights_atomically(tmp_path):
    run = _trainer(tmp_path / "run", steps=10)
    run.fit(make_batches, step_fn)
    out = tmp_path / "final"

    def save(module, path):
        path.mkdir(parents=True)
        torch.save(module.state_dict(), path / "w.pt")

    assert run.checkpoints()
    run.export(save, out)
    assert not (tmp_path / "run/ckpt").exists(), "a job's checkpoints are removed once its output is written"
    saved = torch.load(out / "w.pt", weights_only=True)
    ema = run.emas["model"].state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, ema[k])
    assert not (tmp_path / "final.tmp").exists()
    # the live weights are restored after the export
    assert not torch.equal(run.unwrap().state_dict()["0.weight"], ema["0.weight"])


def test_sigterm_to_the_process_group_with_loader_workers_checkpoints_and_resumes_exactly(
    built_cfg, tmp_path
):
    """Slurm signals the whole process group: with 2 DataLoader workers on the real shard loader, a
    SIGTERM at an odd step ends the job with a checkpoint and exit 75 (the workers must not die of it),
    and the resumed run ends with the uninterrupted run's weights bit for bit (the loader's iterator
    must not draw from the restored global RNG)."""
    config = tmp_path / "config.json"
    raw = to_dict(built_cfg)
    raw["compute"]["threads"] = 1
    config.write_text(json.dumps(raw))
    env = {**os.environ, "SEMTOK_FORKSERVER": ""}

    def job(out: str, pause_at: int = -1) -> subprocess.Popen:
        command = [
            sys.executable,
            str(Path(__file__).with_name("loop_job.py")),
            str(config),
            str(tmp_path / out),
        ]
        return subprocess.Popen(
            [*command, str(pause_at)], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
        )

    def finish(proc: subprocess.Popen) -> tuple[int, str]:
        _, stderr = proc.communicate(timeout=300)
        return proc.returncode, stderr

    status, stderr = finish(job("ref"))
    assert status == 0, stderr[-3000:]
    killed = job("run", pause_at=7)
    deadline = time.time() + 300
    while not (tmp_path / "run/paused").exists():
        assert killed.poll() is None and time.time() < deadline, killed.stderr.read()[-3000:]
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGTERM)
    status, stderr = finish(killed)
    assert status == EXIT_CHECKPOINTED, stderr[-3000:]
    assert "checkpointed at step 8 on SIGTERM" in stderr
    status, stderr = finish(job("run"))
    assert status == 0, stderr[-3000:]
    assert "resumed from" in stderr and "step 8)" in stderr
    for name in ("live.safetensors", "final/ema.safetensors"):
        expected, got = load_file(str(tmp_path / "ref" / name)), load_file(str(tmp_path / "run" / name))
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(value, got[key]), (name, key, (value - got[key]).abs().max())


def test_a_signal_to_one_process_checkpoints_all_at_the_same_step(built_cfg, tmp_path):
    """Under torchrun (2 CPU processes), a signal that reaches rank 1 alone: both processes checkpoint at
    the same step and stop (none is left waiting in a collective), and the rerun resumes and finishes."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(to_dict(built_cfg)))
    env = {**os.environ, "SEMTOK_FORKSERVER": "", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    job = [str(Path(__file__).with_name("loop_job.py")), str(config), str(tmp_path / "run")]
    signalled = subprocess.run(
        [*torchrun, *job, "7", "--signal-rank", "1"], env=env, capture_output=True, text=True, timeout=300
    )
    assert "checkpointed at step 8 on SIGUSR1" in signalled.stderr, signalled.stderr[-4000:]
    assert "checkpointed at step 8 on a signal to another process" in signalled.stderr
    assert max(int(p.name.split("-")[1]) for p in (tmp_path / "run/ckpt").glob("step-*")) == 8
    resumed = subprocess.run([*torchrun, *job, "-1"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr and "step 8)" in resumed.stderr
    assert (tmp_path / "run/final/ema.safetensors").exists()


def test_ema_is_diffusers_ema_model_with_a_constant_decay(tmp_path):
    """The EMA after training is the lerp recurrence ema ← ema + (1 − decay)·(θ − ema) from the initial
    weights on every step's parameters, bit for bit, kept by diffusers' EMAModel."""
    from diffusers.training_utils import EMAModel

    trainer = _trainer(tmp_path)
    model = trainer.unwrap()
    expected = [p.detach().clone() for p in model.parameters()]
    recorded: list[list[torch.Tensor]] = []
    update = trainer.emas["model"].update

    def watched(module):
        recorded.append([p.detach().clone() for p in module.parameters()])
        update(module)

    trainer.emas["model"].update = watched
    trainer.fit(make_batches, step_fn)
    for params in recorded:
        expected = [torch.lerp(e, p, 1 - 0.9) for e, p in zip(expected, params, strict=True)]
    assert isinstance(trainer.emas["model"].average, EMAModel) and len(recorded) == 20
    for got, want in zip(trainer.emas["model"].shadow, expected, strict=True):
        assert torch.equal(got, want)


def test_scalars_go_to_tensorboard_through_accelerate(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(tmp_path)
    trainer.fit(make_batches, step_fn)
    assert [type(t).__name__ for t in trainer.accelerator.trackers] == ["TensorBoardTracker"]
    runs = list((tmp_path / "logs").glob("*/events.out.tfevents.*"))
    assert len(runs) == 1 and runs[0].parent.name == "semtok"  # the project: the run id in a job
    events = EventAccumulator(str(runs[0].parent))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/model")]
    logged = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [line["step"] for line in logged] == [5, 10, 15, 20]
    assert [e.value for e in events.Scalars("loss/model")] == pytest.approx(
        [line["loss/model"] for line in logged]
    )


@pytest.mark.skipif(__import__("importlib").util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_tracker_that_is_not_installed_is_named(tmp_path):
    from semtok.config import ConfigError

    compute = ComputeConfig(**{**to_dict(COMPUTE), "trackers": ["tensorboard", "wandb"]})
    with pytest.raises(ConfigError, match=r"compute.trackers: wandb is not installed \(pip install wandb\)"):
        Trainer(
            "toy",
            {"model": Objective(nn.Linear(2, 1), OptimConfig())},
            compute,
            tmp_path,
            tmp_path,
            0,
            settings="",
        )


def test_a_non_finite_loss_stops_training_within_log_every_without_export(tmp_path, caplog):
    """A loss that turns NaN at step 12 (log_every 5, checkpoints every 5): the run stops at the next log
    step (15) with EXIT_DIVERGED, naming the step, the term and the last good checkpoint (step 10);
    no checkpoint holds the diverged weights and nothing is exported."""
    from semtok.utils.process import EXIT_DIVERGED

    trainer = _trainer(tmp_path)

    def nan_from_12(tr, batch):
        out = step_fn(tr, batch)
        if tr.step >= 11:  # the 12th step
            poisoned = out.losses["model"] * float("nan")
            return StepOutput(losses={"model": poisoned}, logs={"mse": poisoned.detach()})
        return out

    with caplog.at_level("ERROR", logger="semtok.train"), pytest.raises(SystemExit) as stop:
        trainer.fit(make_batches, nan_from_12)
    assert stop.value.code == EXIT_DIVERGED and stop.value.code not in (0, EXIT_CHECKPOINTED)
    assert trainer.step == 15
    message = caplog.text
    assert "not finite at step 12" in message and "model (from step 12)" in message and "mse" in message
    assert str(tmp_path / "ckpt" / "step-00000010") in message
    assert [p.name for p in trainer.checkpoints()] == ["step-00000005", "step-00000010"]
    with pytest.raises(SystemExit):
        trainer.export(lambda module, path: path.mkdir(), tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_export_refuses_non_finite_weights(tmp_path):
    trainer = _trainer(tmp_path, steps=5)
    trainer.fit(make_batches, step_fn)
    with torch.no_grad():
        trainer.unwrap()[0].weight[0, 0] = float("inf")
    trainer.emas.clear()  # export the live weights
    with pytest.raises(ValueError, match=r"0\.weight \(1 of 64 values\)"):
        trainer.export(lambda module, path: path.mkdir(), tmp_path / "exported")
    assert not (tmp_path / "exported").exists()

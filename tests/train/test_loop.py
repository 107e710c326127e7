"""The shared training loop: schedule, exact resume after a crash, atomic checkpoints, signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

from semtok.config import ComputeConfig, OptimConfig
from semtok.train.loop import EXIT_CHECKPOINTED, Objective, StepOutput, Trainer, lr_lambda

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


def _trainer(tmp: Path, steps: int = 20, every: int = 5) -> Trainer:
    torch.manual_seed(0)
    optim = OptimConfig(
        steps=steps, batch_size=8, lr=0.05, warmup=2, ema=0.9, ckpt_every=every, keep_ckpts=2, log_every=5
    )
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    return Trainer("toy", {"model": Objective(model, optim)}, COMPUTE, tmp / "ckpt", tmp / "logs", seed=0)


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


def test_incomplete_checkpoint_is_ignored(tmp_path):
    run = _trainer(tmp_path / "run", steps=10)
    run.fit(make_batches, step_fn)  # leaves step-00000005 (final step is exported, not checkpointed)
    good = run.checkpoints()[-1]
    # a job killed while writing its next checkpoint leaves a tmp folder and maybe a folder without meta
    (tmp_path / "run/ckpt/tmp-00000010").mkdir()
    (tmp_path / "run/ckpt/step-00000010").mkdir()
    (tmp_path / "run/ckpt/step-00000010/model.safetensors").write_bytes(b"garbage")
    again = _trainer(tmp_path / "run", steps=10)
    assert again.checkpoints()[-1] == good
    assert again.resume() == 0 and again.step == 5


def test_export_writes_ema_weights_atomically(tmp_path):
    run = _trainer(tmp_path / "run", steps=10)
    run.fit(make_batches, step_fn)
    out = tmp_path / "final"

    def save(module, path):
        path.mkdir(parents=True)
        torch.save(module.state_dict(), path / "w.pt")

    run.export(save, out)
    saved = torch.load(out / "w.pt", weights_only=True)
    ema = run.emas["model"].state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, ema[k])
    assert not (tmp_path / "final.tmp").exists()
    # the live weights are restored after the export
    assert not torch.equal(run.unwrap().state_dict()["0.weight"], ema["0.weight"])

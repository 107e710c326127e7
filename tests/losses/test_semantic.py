import math

import pytest
import torch
import torch.nn.functional as F

from semtok.config import SemanticConfig
from semtok.losses.semantic import (
    ContrastiveHead,
    ContrastiveLoss,
    DistillationHead,
    SemanticAlignment,
    distillation_loss,
    pooled_siglip,
    resample_to_grid,
)

PAPER = SemanticConfig()  # SPEC §2's heads and CLIP temperature


def contrastive_loss() -> ContrastiveLoss:
    return ContrastiveLoss(1.0 / PAPER.logit_scale_init, PAPER.logit_scale_max)


def test_resample_shapes_and_layouts():
    sig = torch.randn(2, 27 * 27, 8)
    assert resample_to_grid(sig, (16, 16)).shape == (2, 256, 8)
    grid = sig.transpose(1, 2).reshape(2, 8, 27, 27)
    torch.testing.assert_close(resample_to_grid(grid, (16, 16)), resample_to_grid(sig, (16, 16)))
    # Same size: the sequence comes back unchanged (row-major order kept).
    torch.testing.assert_close(resample_to_grid(sig, (27, 27)), sig)
    with pytest.raises(ValueError):
        resample_to_grid(torch.randn(2, 27 * 27 + 1, 8), (16, 16))


def test_resample_is_bilinear_and_row_major():
    rows = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 1, 8, 8)
    out = resample_to_grid(rows, (4, 4)).view(4, 4)
    # Each output row averages two source rows: 0.5, 2.5, 4.5, 6.5; columns are constant.
    torch.testing.assert_close(out, torch.tensor([0.5, 2.5, 4.5, 6.5]).view(4, 1).expand(4, 4))


def test_distillation_loss_is_zero_on_the_target():
    torch.manual_seed(0)
    sig = torch.randn(2, 8 * 8, 6)
    head = DistillationHead(6, 6, kind="linear")
    with torch.no_grad():
        head.net.weight.copy_(torch.eye(6))
        head.net.bias.zero_()
    x = resample_to_grid(sig, (4, 4))
    assert distillation_loss(head, x, (4, 4), sig).item() < 1e-12
    assert distillation_loss(head, x + 0.1, (4, 4), sig).item() == pytest.approx(0.01, rel=1e-4)


def test_distillation_mlp_head_trains():
    torch.manual_seed(0)
    head = DistillationHead(16, 6, kind="mlp")
    x, sig = torch.randn(2, 16, 16), torch.randn(2, 6, 8, 8)
    distillation_loss(head, x, (4, 4), sig).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError):
        DistillationHead(16, 6, kind="conv")


def _aligned_pairs(b: int = 16, c: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    u = F.normalize(torch.randn(b, c), dim=-1)
    v = F.normalize(u + 0.3 * torch.randn(b, c), dim=-1)
    return v, u


def test_contrastive_loss_prefers_matched_pairs():
    v, u = _aligned_pairs()
    loss = contrastive_loss()
    matched = loss(v, u)
    shuffled = loss(v, u[torch.roll(torch.arange(len(u)), 1)])
    assert matched < shuffled
    assert matched > 0


def test_contrastive_loss_is_symmetric_clip_with_clamped_scale():
    v, u = _aligned_pairs(b=4, c=8)
    loss = contrastive_loss()
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    logits = 100.0 * v @ u.T
    expected = -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2
    torch.testing.assert_close(loss(v, u), expected)


def test_contrastive_head_output_is_unit_and_uses_all_tokens():
    head = ContrastiveHead(code_dim=18, sig_dim=12, embed_dim=24)
    codes = torch.randn(3, 5, 18).sign() / math.sqrt(18)
    v = head(codes)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
    changed = codes.clone()
    changed[:, 4] *= -1
    assert not torch.allclose(head(changed), v)


def test_pooled_siglip_accepts_both_layouts():
    sig = torch.randn(2, 16, 8)
    grid = sig.transpose(1, 2).reshape(2, 8, 4, 4)
    torch.testing.assert_close(pooled_siglip(sig), F.normalize(sig.mean(1), dim=-1))
    torch.testing.assert_close(pooled_siglip(grid), pooled_siglip(sig))


@pytest.mark.parametrize("contrastive", [True, False])
@pytest.mark.parametrize("distill", [True, False])
def test_semantic_alignment_switches(contrastive, distill):
    torch.manual_seed(0)
    module = SemanticAlignment(
        width=16,
        code_dim=18,
        sig_dim=8,
        contrastive=contrastive,
        distill=distill,
        distill_head=PAPER.distill_head,
        contrastive_embed_dim=8,
        init_temperature=1.0 / PAPER.logit_scale_init,
        max_scale=PAPER.logit_scale_max,
    )
    x = torch.randn(4, 16, 16, requires_grad=True)
    codes = (torch.randn(4, 6, 18).sign() / math.sqrt(18)).requires_grad_()
    losses = module(x, (4, 4), codes, torch.randn(4, 64, 8))
    assert set(losses) == {"distill", "contra"}
    assert (losses["distill"] > 0) == distill and (losses["contra"] > 0) == contrastive
    assert (module.distill_head is not None) == distill
    assert (module.contrastive_head is not None) == (module.contrastive_loss is not None) == contrastive
    if not (contrastive or distill):
        assert not list(module.parameters())
        return
    (losses["distill"] + losses["contra"]).backward()
    assert (x.grad is not None) == distill and (codes.grad is not None) == contrastive


def _distributed_worker(rank: int, world: int, init_file: str) -> None:
    # Forked workers (fast to start) must not reuse the parent's OpenMP pool: one thread each.
    torch.set_num_threads(1)
    v_full, u = _aligned_pairs(b=8, c=8)
    reference_v = v_full.clone().requires_grad_()
    reference = contrastive_loss()(reference_v, u)
    reference.backward()
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        rows = slice(rank * 4, (rank + 1) * 4)
        v_local = v_full[rows].clone().requires_grad_()
        local = contrastive_loss()(v_local, u[rows])
        local.backward()
        total = local.detach().clone()
        torch.distributed.all_reduce(total)
        torch.testing.assert_close(total / world, reference)
        # all_gather's backward sums every rank's gradient into the local rows.
        torch.testing.assert_close(v_local.grad, world * reference_v.grad[rows])
    finally:
        torch.distributed.destroy_process_group()


def test_contrastive_loss_uses_global_batch(tmp_path):
    torch.multiprocessing.start_processes(
        _distributed_worker, args=(2, str(tmp_path / "init")), nprocs=2, start_method="fork"
    )


def _batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for step in range(steps):
        data = torch.Generator().manual_seed(step)
        out.append(
            (torch.randn(8, 6, 12, generator=data), F.normalize(torch.randn(8, 8, generator=data), dim=-1))
        )
    return out


def _ddp_worker(rank: int, world: int, init_file: str) -> None:
    """A head under DDP (several small gradient buckets, so DDP's all-reduces and the gather's own
    interleave in backward): every step's averaged gradient equals one process's on the whole batch."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    head = ContrastiveHead(code_dim=12, sig_dim=8, embed_dim=16)
    batches = _batches(20)
    expected = []  # one process, whole batch: before the process group exists
    for codes, u in batches:
        head.zero_grad()
        contrastive_loss()(head(codes), u).backward()
        expected.append([p.grad.clone() for p in head.parameters()])
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(head, bucket_cap_mb=1e-4)
        rows = slice(rank * 4, (rank + 1) * 4)
        for step, (codes, u) in enumerate(batches):
            ddp.zero_grad()
            contrastive_loss()(ddp(codes[rows]), u[rows]).backward()
            for (name, p), grad in zip(head.named_parameters(), expected[step], strict=True):
                torch.testing.assert_close(p.grad, grad, msg=f"step {step} {name}")
    finally:
        torch.distributed.destroy_process_group()


def test_contrastive_loss_under_ddp_matches_one_process(tmp_path):
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init")), nprocs=2, start_method="fork"
    )

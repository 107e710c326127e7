import math

import pytest
import torch
import torch.nn.functional as F

from semtok.config import EntropyConfig
from semtok.models.quantizer import (
    BinarySphericalQuantizer,
    LookupFreeQuantizer,
    brute_force_entropy,
    build_quantizer,
    factorized_entropy,
    global_mean,
)

BSQ = BinarySphericalQuantizer
PAPER = EntropyConfig()  # SPEC §2's tau, group size and LFQ commitment weight


def bsq(dim: int, **kwargs) -> BinarySphericalQuantizer:
    return BSQ(dim, **{"group_size": PAPER.group_size, "tau": PAPER.tau, **kwargs})


def lfq(dim: int, **kwargs) -> LookupFreeQuantizer:
    paper = {"commit_weight": PAPER.commit_weight, "tau": PAPER.tau, "group_size": PAPER.group_size}
    return LookupFreeQuantizer(dim, **{**paper, **kwargs})


def quantizer(kind: str, dim: int, **kwargs):
    paper = {"group_size": PAPER.group_size, "tau": PAPER.tau}
    if kind == "lfq":
        paper["commit_weight"] = PAPER.commit_weight
    return build_quantizer(kind, dim, **{**paper, **kwargs})


def test_bsq_codes_on_sphere_with_matching_bits_and_indices():
    torch.manual_seed(0)
    z = torch.randn(3, 10, 18)
    out = bsq(18)(z)
    torch.testing.assert_close(out.codes.norm(dim=-1), torch.ones(3, 10))
    torch.testing.assert_close(out.codes.abs(), torch.full_like(z, 1 / math.sqrt(18)))
    assert torch.equal(out.bits, z > 0)
    assert out.indices.dtype == torch.int64 and out.indices.shape == (3, 10)
    expected = sum(int(b) << i for i, b in enumerate(out.bits[1, 4].tolist()))
    assert out.indices[1, 4].item() == expected
    torch.testing.assert_close(BSQ.indices_to_codes(out.indices, 18), out.codes.detach())
    assert out.commit_loss.item() == 0


@pytest.mark.parametrize("d", [18, 32])
def test_index_round_trip(d):
    torch.manual_seed(0)
    indices = torch.randint(0, 2**d, (64,), dtype=torch.int64)
    indices[:3] = torch.tensor([0, 2**d - 1, 2 ** (d - 1)])
    if d == 32:
        assert (indices >= 2**31).any()
    bits = BSQ.indices_to_bits(indices, d)
    assert bits.shape == (64, d) and bits.dtype == torch.bool
    assert torch.equal(BSQ.bits_to_indices(bits), indices)
    assert bits[1].all() and not bits[0].any() and bits[2].nonzero().flatten().tolist() == [d - 1]
    assert torch.equal(BSQ.indices_to_codes(indices, d) > 0, bits)


def test_too_many_bits_raise():
    with pytest.raises(ValueError):
        BSQ.bits_to_indices(torch.zeros(2, 63, dtype=torch.bool))
    with pytest.raises(ValueError):
        bsq(64)
    with pytest.raises(ValueError):
        bsq(18, group_size=4)


@pytest.mark.parametrize("d", [18, 32])
def test_bsq_straight_through_gradient_is_that_of_u_over_sqrt_d(d):
    """bsq-vit: the STE passes sign(u), then the codes are scaled by 1/sqrt(d), so dQ/du = I/sqrt(d)
    (an STE on the scaled codes, u + sg(sign(u)/sqrt(d) - u), would pass the identity: sqrt(d) too much)."""
    torch.manual_seed(0)
    z = torch.randn(2, 5, d, requires_grad=True)
    weight = torch.randn(2, 5, d)
    (bsq(d)(z).codes * weight).sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    z_ref = z.detach().clone().requires_grad_()
    (F.normalize(z_ref, dim=-1) * weight / math.sqrt(d)).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


def test_entropy_loss_gradient_flows():
    z = torch.randn(4, 8, 18, requires_grad=True)
    bsq(18, group_size=3)(z).entropy_loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("group_size", [1, 2, 3, 6])
@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_factorised_entropy_against_brute_force(group_size, tau):
    torch.manual_seed(0)
    d = 6
    # Correlated bits (a shared sign plus noise) make the codebook bound strict for g < d.
    shared = torch.randn(256, 1).sign()
    u = F.normalize(shared * (1 + 0.3 * torch.randn(256, d)) + 0.5 * torch.randn(256, d), dim=-1)
    per_sample, codebook = factorized_entropy(u, 1 / math.sqrt(d), tau, group_size)
    ref_per_sample, ref_codebook = brute_force_entropy(u, tau)
    torch.testing.assert_close(per_sample, ref_per_sample, atol=1e-5, rtol=1e-5)
    if group_size == d:
        torch.testing.assert_close(codebook, ref_codebook, atol=1e-5, rtol=1e-5)
    else:
        assert codebook >= ref_codebook - 1e-5
        if tau < 1:
            assert codebook > ref_codebook + 0.1


def test_per_bit_closed_form():
    z = torch.randn(50, 6)
    p = torch.sigmoid(4 * z / (math.sqrt(6) * 0.5))
    h = -(p * p.log() + (1 - p) * (1 - p).log())
    per_sample, codebook = factorized_entropy(z, 1 / math.sqrt(6), 0.5, 1)
    q = p.mean(0)
    torch.testing.assert_close(per_sample, h.sum(1).mean())
    torch.testing.assert_close(codebook, -(q * q.log() + (1 - q) * (1 - q).log()).sum())


def test_saturated_entropy_has_finite_gradient():
    z = torch.full((4, 6), 50.0, requires_grad=True)
    per_sample, codebook = factorized_entropy(z, 1.0, 0.01, 1)
    (per_sample - codebook).backward()
    assert torch.isfinite(z.grad).all()


def test_metrics():
    d = 4
    indices = torch.tensor([[0, 3, 3, 9]])
    z = BSQ.indices_to_codes(indices, d) * 5
    out = bsq(d)(z)
    assert torch.equal(out.indices, indices)
    torch.testing.assert_close(out.metrics["codebook_usage"], torch.tensor(3 / 4))
    # Bit 0 set in 3/4 tokens, bit 1 in 2/4, bit 2 never, bit 3 in 1/4.
    h = lambda p: -(p * math.log2(p) + (1 - p) * math.log2(1 - p))  # noqa: E731
    torch.testing.assert_close(out.metrics["bit_entropy"], torch.tensor((h(0.75) + 1 + 0 + h(0.25)) / 4))
    assert all(not m.requires_grad for m in out.metrics.values())
    torch.testing.assert_close(out.entropy_loss, out.per_sample_entropy - out.codebook_entropy)


def test_lfq_codes_commitment_and_gradients():
    torch.manual_seed(0)
    z = (2 * torch.randn(2, 5, 18)).requires_grad_()
    out = lfq(18, commit_weight=0.25)(z)
    assert set(out.codes.detach().unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(out.commit_loss, 0.25 * ((z - z.sign()) ** 2).mean())
    assert out.commit_loss > 0
    (out.codes.sum() + out.commit_loss + out.entropy_loss).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # The LFQ entropy is taken on z itself with corners +-1: p_i = sigmoid(4 z_i / tau).
    per_sample, _ = factorized_entropy(z.detach().flatten(0, 1), 1.0, 1.0, 1)
    torch.testing.assert_close(out.per_sample_entropy, per_sample)


def test_lfq_grouped_entropy_matches_per_bit():
    z = torch.randn(3, 4, 6)
    per_bit = lfq(6, group_size=1)(z).per_sample_entropy
    grouped = lfq(6, group_size=3)(z).per_sample_entropy
    torch.testing.assert_close(per_bit, grouped)


def test_codes_from_indices_match_each_quantizer():
    indices = torch.tensor([5, 0])
    assert torch.equal(quantizer("lfq", 4).codes_from_indices(indices)[0], torch.tensor([1.0, -1, 1, -1]))
    torch.testing.assert_close(
        quantizer("bsq", 4).codes_from_indices(indices), BSQ.indices_to_codes(indices, 4)
    )


def test_build_quantizer():
    assert isinstance(quantizer("bsq", 18, group_size=2), BSQ)
    lfq = quantizer("lfq", 18, commit_weight=0.5)
    assert isinstance(lfq, LookupFreeQuantizer) and lfq.commit_weight == 0.5
    with pytest.raises(ValueError):
        quantizer("vq", 18)


def test_bf16_input_runs_in_float32():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bsq(18, group_size=2)(torch.randn(2, 3, 18, dtype=torch.bfloat16))
    assert out.codes.dtype == torch.float32 and out.entropy_loss.dtype == torch.float32


def _distributed_worker(rank: int, world: int, init_file: str) -> None:
    # Forked workers (fast to start) must not reuse the parent's OpenMP pool: one thread each.
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        full = torch.rand(8, 3)
        local = full[rank * 4 : (rank + 1) * 4].clone().requires_grad_()
        mean = global_mean(local)
        torch.testing.assert_close(mean, full.mean(0))
        mean.sum().backward()
        torch.testing.assert_close(local.grad, torch.full_like(local, 1 / 4))
        # The codebook entropy of the split batch equals the single-process one on the full batch.
        u = F.normalize(torch.randn(8, 6), dim=-1)
        _, codebook = factorized_entropy(u[rank * 4 : (rank + 1) * 4], 1 / math.sqrt(6), 1.0, 2)
        torch.testing.assert_close(codebook, factorized_entropy(u, 1 / math.sqrt(6), 1.0, 2)[1])
    finally:
        torch.distributed.destroy_process_group()


def test_global_mean_across_processes(tmp_path):
    torch.multiprocessing.start_processes(
        _distributed_worker, args=(2, str(tmp_path / "init")), nprocs=2, start_method="fork"
    )


def test_global_mean_single_process_is_plain_mean():
    x = torch.randn(5, 3)
    torch.testing.assert_close(global_mean(x), x.mean(0))

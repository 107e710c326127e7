import copy
from pathlib import Path

import pytest
import torch

from semtok.config import load
from semtok.models.encoder import EncoderConfig, MMDiTEncoder
from semtok.models.factory import encoder_kwargs

PAPER_PARAMS = 113.2e6
REPO = Path(__file__).resolve().parents[2]
TINY = {
    "depth": 2,
    "width": 32,
    "heads": 2,
    "in_channels": 16,
    "patch_size": 2,
    "latent_size": 8,
    "num_tokens": 6,
    "token_dim": 18,
    "mlp_ratio": 4.0,
    "causal_1d": False,
    "mode": "1d",
    "grad_checkpointing": False,
}


def tiny(**overrides) -> EncoderConfig:
    return EncoderConfig(**{**TINY, **overrides})


@pytest.fixture
def latents() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 16, 8, 8)


def test_1d_output_shapes(latents):
    encoder = MMDiTEncoder(tiny())
    out = encoder(latents)
    assert out.x.shape == (2, 16, 32)
    assert out.z.shape == (2, 6, 18)
    assert out.features.shape == (2, 6, 32)
    assert encoder.num_image_tokens == 16 and encoder.num_tokens == 6 and encoder.token_grid is None
    torch.testing.assert_close(out.z, encoder.to_tokens(out.features))


def test_grid2d_has_no_1d_stream(latents):
    encoder = MMDiTEncoder(tiny(mode="grid2d"))
    out = encoder(latents)
    assert out.x.shape == (2, 16, 32) and out.z.shape == (2, 16, 18) and out.features.shape == (2, 16, 32)
    assert encoder.token_grid == (4, 4) and encoder.num_tokens == 16
    assert not hasattr(encoder, "token_embed")
    assert all(len(block.streams) == 1 for block in encoder.blocks)
    torch.testing.assert_close(out.features, out.x)


def test_token_embeddings_are_not_zero():
    embed = MMDiTEncoder(tiny(num_tokens=64, width=64)).token_embed
    assert 0.01 < embed.std().item() < 0.03


def test_patchify_is_row_major():
    encoder = MMDiTEncoder(tiny())
    latents = torch.arange(8 * 8, dtype=torch.float32).view(1, 1, 8, 8).expand(1, 16, 8, 8)
    patches = encoder.patchify(latents)
    assert patches.shape == (1, 16, 64)
    # Token 1 is the patch right of token 0, token 4 the patch below it (first channel, top-left pixel).
    assert patches[0, 0, 0] == 0 and patches[0, 1, 0] == 2 and patches[0, 4, 0] == 16


def _perturb_later_tokens(encoder: MMDiTEncoder, first: int) -> MMDiTEncoder:
    other = copy.deepcopy(encoder)
    with torch.no_grad():
        other.token_embed[first:] += torch.randn_like(other.token_embed[first:])
    return other


@pytest.mark.parametrize("causal", [True, False])
def test_raster_encoder_hides_later_tokens(latents, causal):
    torch.manual_seed(1)
    encoder = MMDiTEncoder(tiny(causal_1d=causal)).eval()
    base = encoder(latents)
    moved = _perturb_later_tokens(encoder, first=3)(latents)
    if causal:
        torch.testing.assert_close(moved.z[:, :3], base.z[:, :3], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(moved.x, base.x, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(moved.z[:, 3:], base.z[:, 3:], atol=1e-3)
    else:
        assert not torch.allclose(moved.z[:, 0], base.z[:, 0], atol=1e-3)
        assert not torch.allclose(moved.x, base.x, atol=1e-3)


def test_raster_mask_layout():
    mask = MMDiTEncoder._raster_mask(3, 2, torch.device("cpu"))
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_paper_config_parameter_count():
    """config/paper.yaml's encoder (Table 8) on SD3.5's VAE latents: 16 channels, f = 8."""
    cfg = load(REPO / "config" / "paper.yaml")
    kwargs = encoder_kwargs(cfg.tokenizer, 16, cfg.data.resolution // 8, grad_checkpointing=False)
    with torch.device("meta"):
        encoder = MMDiTEncoder(EncoderConfig(**kwargs))
    count = sum(p.numel() for p in encoder.parameters())
    print(f"config/paper.yaml encoder parameters: {count:,} ({count / 1e6:.2f}M, Table 8: 113M)")
    assert abs(count - PAPER_PARAMS) / PAPER_PARAMS < 0.05


def test_bf16_autocast_forward(latents):
    encoder = MMDiTEncoder(tiny(causal_1d=True))
    reference = encoder(latents).z
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder(latents)
    assert out.z.dtype == torch.bfloat16 and torch.isfinite(out.z).all()
    assert (out.z.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_grad_checkpointing_gives_same_gradients(latents):
    torch.manual_seed(2)
    plain = MMDiTEncoder(tiny(causal_1d=True)).train()
    checkpointed = MMDiTEncoder(tiny(causal_1d=True, grad_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    for model in (plain, checkpointed):
        out = model(latents)
        (out.z.square().mean() + out.x.square().mean()).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert a.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "3d"},
        {"causal_1d": True, "mode": "grid2d"},
        {"width": 30, "heads": 4},
        {"width": 24, "heads": 4},
    ],
)
def test_invalid_configs_raise(overrides):
    with pytest.raises(ValueError):
        tiny(**overrides)

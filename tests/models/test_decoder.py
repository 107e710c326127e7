import logging
from pathlib import Path

import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import JointAttnProcessor2_0

from semtok.config import load
from semtok.models.decoder import RoPEJointAttnProcessor, TokenDecoder
from semtok.models.rope import rope_1d
from semtok.sampling.flow import flow_matching_targets

TINY = dict(
    sample_size=8,
    patch_size=2,
    in_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=64,
    caption_projection_dim=64,
    pooled_projection_dim=64,
    out_channels=16,
    pos_embed_max_size=16,
    dual_attention_layers=(0,),
    qk_norm="rms_norm",
)
K, D = 16, 8
REPO = Path(__file__).resolve().parents[2]


def _decoder(seed: int = 0, **kw) -> TokenDecoder:
    torch.manual_seed(seed)
    return TokenDecoder(transformer_config=TINY, token_dim=D, num_tokens=K, latent_size=8, **kw).eval()


def _inputs(seed: int = 1, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 16, 8, 8, generator=g)
    codes = torch.randn(batch, K, D, generator=g).sign() / D**0.5
    return latents, codes, torch.rand(batch, generator=g)


def _randomise_zero_init(model: torch.nn.Module) -> None:
    """adaLN-zero gates start at zero in diffusers; perturb every parameter so all paths are live."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_forward_shapes_and_dtypes() -> None:
    model = _decoder()
    latents, codes, t = _inputs()
    assert model(latents, codes, t).shape == latents.shape
    model.enable_refiner()
    assert model.config.refiner and model.mask_tokens.shape == (1, 16, 64)
    assert model.refine(codes).shape == latents.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(latents, codes, t).dtype == torch.bfloat16
        assert model.refine(codes, (8, 8)).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        model.refine(codes, (16, 16))
    with pytest.raises(ValueError):
        model(latents, codes[:, :-1], t)


def test_2d_context_layout() -> None:
    model = _decoder(context_layout="2d")
    latents, codes, t = _inputs()
    assert model(latents, codes, t).shape == latents.shape
    with pytest.raises(ValueError):
        TokenDecoder(transformer_config=TINY, token_dim=D, num_tokens=12, latent_size=8, context_layout="2d")


def test_gradients_reach_new_layers() -> None:
    model = _decoder(refiner=True).train()
    _randomise_zero_init(model)
    latents, codes, t = _inputs()
    (model(latents, codes, t).square().mean() + model.refine(codes).square().mean()).backward()
    for name in ("context_embedder.weight", "pooled_embedder.weight", "mask_tokens"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_grad_checkpointing_matches() -> None:
    latents, codes, t = _inputs()
    grads = []
    for flag in (False, True):
        model = _decoder(grad_checkpointing=flag).train()
        _randomise_zero_init(model)
        model(latents, codes, t).square().mean().backward()
        grads.append(model.context_embedder.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_processor_without_rotation_equals_diffusers() -> None:
    """With zero angles (cos 1, sin 0) our processor is exactly SD3's joint attention."""
    block = _decoder().transformer.transformer_blocks[0]
    _randomise_zero_init(block)
    g = torch.Generator().manual_seed(3)
    image, context = torch.randn(2, 16, 64, generator=g), torch.randn(2, K, 64, generator=g)
    identity = (torch.ones(16 + K, 16), torch.zeros(16 + K, 16))
    ours = RoPEJointAttnProcessor()(block.attn, image, context, rope=identity)
    ref = JointAttnProcessor2_0()(block.attn, image, context)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    torch.testing.assert_close(
        RoPEJointAttnProcessor()(block.attn2, image, rope=identity),
        JointAttnProcessor2_0()(block.attn2, image),
    )


def test_processor_rope_is_relative() -> None:
    """Shifting every position by the same offset leaves attention unchanged; real angles change it."""
    block = _decoder().transformer.transformer_blocks[0]
    _randomise_zero_init(block)
    g = torch.Generator().manual_seed(4)
    image, context = torch.randn(2, 16, 64, generator=g), torch.randn(2, K, 64, generator=g)
    positions = torch.arange(16 + K)
    base = RoPEJointAttnProcessor()(block.attn, image, context, rope=rope_1d(positions, 16))
    shifted = RoPEJointAttnProcessor()(block.attn, image, context, rope=rope_1d(positions + 7, 16))
    plain = JointAttnProcessor2_0()(block.attn, image, context)
    torch.testing.assert_close(base[0], shifted[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(base[0], plain[0], atol=1e-3)


def test_rope_on_tokens_makes_order_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without position information the token stream is a set: permuting the codes cannot change the
    image output. The decoder's 1D RoPE is the only source of token order, so the output must change;
    with the token rows of the table set to identity it must not."""
    model = _decoder()
    _randomise_zero_init(model)
    latents, codes, t = _inputs()
    permuted = codes[:, torch.randperm(K, generator=torch.Generator().manual_seed(5))]
    with torch.no_grad():
        assert not torch.allclose(model(latents, codes, t), model(latents, permuted, t), atol=1e-4)

        rope = model._rope

        def rope_without_token_positions(*args):
            cos, sin = (x.clone() for x in rope(*args))
            cos[16:], sin[16:] = 1.0, 0.0
            return cos, sin

        monkeypatch.setattr(model, "_rope", rope_without_token_positions)
        torch.testing.assert_close(
            model(latents, codes, t), model(latents, permuted, t), atol=1e-5, rtol=1e-4
        )


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _decoder(refiner=True)
    _randomise_zero_init(model)
    latents, codes, t = _inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = TokenDecoder.from_pretrained(tmp_path).eval()
    assert loaded.config.refiner and loaded.config.transformer_config["num_layers"] == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, codes, t), model(latents, codes, t), rtol=0, atol=0)
        torch.testing.assert_close(loaded.refine(codes), model.refine(codes), rtol=0, atol=0)


def test_from_sd3_reports_and_copies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(7)
    source = SD3Transformer2DModel(**TINY)
    _randomise_zero_init(source)
    source.save_pretrained(tmp_path / "transformer")
    with caplog.at_level(logging.WARNING):
        model, report = TokenDecoder.from_sd3(
            str(tmp_path), token_dim=D, num_tokens=K, refiner=True, latent_size=8
        )
    new = ["context_embedder.bias", "context_embedder.weight", "mask_tokens"]
    new += ["pooled_embedder.bias", "pooled_embedder.weight"]
    assert report.new_keys == new
    assert report.unused_keys == ["transformer.context_embedder.bias", "transformer.context_embedder.weight"]
    assert "mask_tokens" in caplog.text and "transformer.context_embedder.weight" in caplog.text
    src = source.state_dict()
    own = model.transformer.state_dict()
    assert set(src) - set(own) == {"context_embedder.weight", "context_embedder.bias"}
    for key, value in own.items():
        torch.testing.assert_close(value, src[key], rtol=0, atol=0, msg=key)


def test_sd35_medium_parameter_count() -> None:
    """config/paper.yaml's decoder: SD3.5-Medium's transformer (Table 8: 2236M) on 32 x 32 latents."""
    sd35_medium = load(REPO / "config" / "paper.yaml").tokenizer.decoder.transformer
    with torch.device("meta"):
        stage1 = TokenDecoder(transformer_config=sd35_medium, token_dim=18, num_tokens=256, latent_size=32)
        sd35 = SD3Transformer2DModel(**sd35_medium)
    count = sum(p.numel() for p in stage1.parameters())
    stage1.enable_refiner()
    refiner = sum(p.numel() for p in stage1.parameters())
    source = sum(p.numel() for p in sd35.parameters())
    print(
        f"SD3.5-M transformer {source / 1e6:.2f}M, decoder {count / 1e6:.2f}M, refiner {refiner / 1e6:.2f}M"
    )
    assert abs(count - 2236e6) / 2236e6 < 0.05
    assert refiner - count == 256 * 1536  # one mask token per 2x2 patch of a 32x32 latent


def test_fits_one_pair_with_flow_loss() -> None:
    model = _decoder().train()
    g = torch.Generator().manual_seed(8)
    x_v = torch.randn(1, 16, 8, 8, generator=g).expand(4, -1, -1, -1)
    codes = (torch.randn(1, K, D, generator=g).sign() / D**0.5).expand(4, -1, -1)
    noise = torch.randn(4, 16, 8, 8, generator=g)
    t = torch.linspace(0.1, 0.9, 4)
    x_t, v = flow_matching_targets(x_v, t, noise)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = (model(x_t, codes, t) - v).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"flow loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.3 * losses[0], losses

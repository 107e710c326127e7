"""SemTok's Python API at its edges (semtok/models/tokenizer.py), on a tiny randomly initialised model
of the real classes: every argument checked against the range the config gives it (one definition,
`semtok.config.check_argument`), and bf16 weights on the CPU."""

from __future__ import annotations

import pytest
import torch

from semtok import SemTok, registry
from semtok.models.factory import build_tokenizer


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory):
    """A Stage I tokenizer (flow decoder) and the Stage II one made from it (one-step refiner)."""
    out = tmp_path_factory.mktemp("tokenizer")
    torch.manual_seed(0)
    tok = build_tokenizer(tiny.config(out), "b18")
    tok.save_pretrained(out / "stage1")
    tok.decoder.enable_refiner()
    tok.register_to_config(decoder_config=registry.public_config(tok.decoder.config))
    tok.save_pretrained(out / "stage2")
    return out


@pytest.fixture(scope="module")
def stage1(folders) -> SemTok:
    return SemTok.from_pretrained(folders / "stage1").eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps: must be >= 1, got 0"),  # was silently the default (`steps or flow_steps`)
        ({"steps": -3}, "steps: must be >= 1"),
        ({"steps": 2.5}, "steps: expected int, got float"),
        ({"shift": 0}, "shift: must be > 0, got 0"),
        ({"shift": float("inf")}, "shift: expected a finite number"),
        ({"batch_size": 0}, "batch_size: must be >= 1, got 0"),
    ],
)
def test_flow_decoding_checks_its_arguments_against_the_configs_ranges(stage1, kwargs, message):
    tokens = stage1.encode(images()).indices
    with pytest.raises(ValueError, match=message):
        stage1.decode_flow(tokens, **kwargs)


def test_flow_decoding_takes_a_generator_and_nothing_else(stage1):
    tokens = stage1.encode(images()).indices
    first = stage1.decode_flow(tokens, steps=2, generator=torch.Generator().manual_seed(1))
    again = stage1.decode_flow(tokens, steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        stage1.decode_flow(tokens, steps=2, generator=1)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_encode_and_decode_check_the_batch_size(folders, batch_size):
    tok = SemTok.from_pretrained(folders / "stage2").eval()
    with pytest.raises(ValueError, match="batch_size"):
        tok.encode(images(), batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        tok.decode(torch.zeros(1, 16, dtype=torch.long), batch_size=batch_size)


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_bfloat16_weights_encode_and_decode_on_the_cpu(folders, stage):
    tok = SemTok.from_pretrained(folders / stage, torch_dtype=torch.bfloat16).eval()
    assert tok.dtype == torch.bfloat16
    out = tok.encode(images())
    assert out.indices.shape == (2, 16) and out.bits.dtype == torch.bool
    decode = tok.decode_flow if stage == "stage1" else tok.decode
    recon = decode(out.indices, **({"steps": 2} if stage == "stage1" else {}))
    assert (
        recon.shape == (2, 3, 32, 32) and recon.dtype == torch.float32 and bool(torch.isfinite(recon).all())
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: a generator on another device")
def test_a_cuda_generator_drives_flow_decoding_on_the_cpu(stage1):
    tokens = stage1.encode(images()).indices
    recon = stage1.decode_flow(tokens, steps=2, generator=torch.Generator("cuda").manual_seed(0))
    assert recon.shape == (2, 3, 32, 32)

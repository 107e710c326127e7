"""`compute.compile`: which blocks are compiled, and a compiled block computes what the eager one does.

The trainers compile on the GPU and on the CPU alike (inductor); here the blocks are compiled on the
CPU, so the code path a cluster run takes is exercised in CI (the paper-shape smoke run compiles the
paper's blocks through the trainers: tests/workflow/test_paper_smoke.py).
"""

from __future__ import annotations

import copy

import torch
from diffusers.models.attention import JointTransformerBlock

from semtok.models.encoder import JointBlock
from semtok.models.factory import build_tokenizer
from semtok.models.generator import MaskedGenerator
from semtok.models.rope import rope_1d
from semtok.train.compile import compile_backend, compile_blocks, compiled_block_types


def tiny_generator() -> MaskedGenerator:
    torch.manual_seed(0)
    return MaskedGenerator(
        depth=2,
        width=64,
        heads=4,
        num_tokens=16,
        bits=8,
        num_classes=10,
        head="bitwise",
        causal=False,
        class_dropout=0.1,
        grad_checkpointing=False,
    )


def test_every_transformer_block_of_the_tokenizer_and_the_generator_is_compiled(make_cfg):
    cfg = make_cfg()
    types = compiled_block_types()
    tokenizer = build_tokenizer(cfg, "b18")
    blocks = [m for m in tokenizer.modules() if isinstance(m, types)]
    assert sum(isinstance(m, JointBlock) for m in blocks) == cfg.tokenizer.encoder.depth
    layers = cfg.tokenizer.decoder.transformer["num_layers"]
    assert sum(isinstance(m, JointTransformerBlock) for m in blocks) == layers
    generator = tiny_generator()
    assert [m for m in generator.modules() if isinstance(m, types)] == list(generator.blocks)


def test_compile_blocks_compiles_every_block_on_any_device_and_nothing_when_off():
    generator = tiny_generator()
    assert compile_blocks(generator, False, torch.device("cpu")) == 0
    assert all(block._compiled_call_impl is None for block in generator.blocks)
    assert compile_blocks(generator, True, torch.device("cpu")) == len(generator.blocks) == 2
    assert all(block._compiled_call_impl is not None for block in generator.blocks)
    # on the CPU the trainers capture the same graphs without inductor's C++ code generation
    assert compile_backend(torch.device("cpu")) == "aot_eager"
    assert compile_backend(torch.device("cuda", 0)) == "inductor"
    x = torch.randn(2, 17, 64)
    ada = torch.randn(2, 6, 64) * 0.1
    cos, sin = rope_1d(17, 64 // 4, 10000.0)
    torch.testing.assert_close(
        generator.blocks[0](x, ada, cos, sin, False), tiny_generator().blocks[0](x, ada, cos, sin, False)
    )


def test_compiled_generator_block_matches_eager_forward_and_backward():
    generator = tiny_generator()
    eager = generator.blocks[0]
    compiled = copy.deepcopy(eager)
    compiled.compile()
    torch.manual_seed(1)
    x = torch.randn(2, 17, 64)
    ada = torch.randn(2, 6, 64) * 0.1
    cos, sin = rope_1d(17, 64 // 4, 10000.0)
    outs = []
    for block in (eager, compiled):
        xi = x.clone().requires_grad_(True)
        y = block(xi, ada, cos, sin, False)
        y.square().mean().backward()
        outs.append((y.detach(), xi.grad, [p.grad.clone() for p in block.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = outs
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
    for a, b in zip(gp1, gp0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

"""`compute.compile`: torch.compile of the repeated transformer blocks, the same for every trainer."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("semtok.train")


def compiled_block_types() -> tuple[type, ...]:
    """The repeated transformer blocks that `compute.compile` compiles: the tokenizer's encoder and
    decoder blocks and the generator's blocks."""
    from diffusers.models.attention import JointTransformerBlock

    from semtok.models.encoder import JointBlock
    from semtok.models.generator import Block

    return (JointTransformerBlock, JointBlock, Block)


def compile_backend(device: torch.device) -> str:
    """inductor on a GPU. On the CPU, aot_eager: the same capture (dynamo's graphs of every block,
    AOTAutograd's forward and backward) without inductor's C++ code generation, which validates nothing
    of the GPU's (Triton) kernels and cost tens of minutes per job at the paper's widths on the 2-core
    test machine, once failing with a C++ compile error under memory pressure."""
    return "inductor" if device.type == "cuda" else "aot_eager"


def compile_blocks(model: torch.nn.Module, enabled: bool, device: torch.device) -> int:
    """torch.compile every transformer block in place (backend: `compile_backend`). Returns how many."""
    if not enabled:
        return 0
    blocks = [m for m in model.modules() if isinstance(m, compiled_block_types())]
    for module in blocks:
        module.compile(backend=compile_backend(device))
    log.info(
        "compute.compile: %d transformer blocks compiled (backend %s)", len(blocks), compile_backend(device)
    )
    return len(blocks)

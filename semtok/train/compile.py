"""`compute.compile`: torch.compile of the repeated transformer blocks, the same for every trainer."""

from __future__ import annotations

import torch


def compiled_block_types() -> tuple[type, ...]:
    """The repeated transformer blocks that `compute.compile` compiles: the tokenizer's encoder and
    decoder blocks and the generator's blocks."""
    from diffusers.models.attention import JointTransformerBlock

    from semtok.models.encoder import JointBlock
    from semtok.models.generator import Block

    return (JointTransformerBlock, JointBlock, Block)


def compile_blocks(model: torch.nn.Module, enabled: bool) -> int:
    """torch.compile every transformer block in place (inductor, on the GPU and on the CPU alike).
    Returns how many."""
    if not enabled:
        return 0
    blocks = [m for m in model.modules() if isinstance(m, compiled_block_types())]
    for module in blocks:
        module.compile()
    return len(blocks)

"""Iterative sampling from the masked generator, and raster decoding of its causal variant (SPEC §4).

Masked sampling (MAR): all K tokens start masked; over N steps (N forward passes, N <= K) the
number still masked follows floor(K cos(pi/2 (n+1)/N)), clipped so that every step commits at least
one token. At each step the model predicts every token, the sampler draws bits for all masked
positions, and commits the next ones: in a per-image random order (the paper) or by confidence
(MaskGIT, Table 14: log-probability of the drawn token plus Gumbel noise whose scale anneals
linearly from `choice_temperature` to 0 over the steps). Committed tokens never change.

Per-bit top-p: with two outcomes, nucleus filtering keeps only the more likely bit when its
probability exceeds p (then the bit is the argmax), else samples from both. The "groups2" head
uses the same nucleus filter over its 2^(d/2) indices. Classifier-free guidance acts on logits,
l = l_u + s (l_c - l_u), with s rising linearly in the fraction of tokens known once the step is done
(Fig. 7; MAR's schedule: the tokens committed in the step count) or constant (Fig. 8); conditional and
unconditional passes share one batched forward.

Bits and indices are little-endian, k = sum_i bit_i 2^i (`BinarySphericalQuantizer`).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from semtok.config import SampleConfig, check_argument
from semtok.models.generator import MaskedGenerator
from semtok.models.quantizer import BinarySphericalQuantizer

Order = Literal["random", "confidence", "raster"]
CfgSchedule = Literal["linear", "constant"]
# One generator for the whole batch, or one per image (image i's random numbers come from generators[i]
# alone, so an image depends on its own generator's seed, not on the batch it is drawn in).
Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class SampleOutput:
    """bits: (B, K, d) bool; indices: (B, K) int64; partial: step -> (bits (B, K, d) bool,
    known (B, K) bool) after that step (0-based), for the steps asked for."""

    bits: torch.Tensor
    indices: torch.Tensor
    partial: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def masked_schedule(num_tokens: int, steps: int) -> list[int]:
    """Tokens still masked after each step n = 0..N-1: floor(K cos(pi/2 (n+1)/N)), clipped to one
    less than before the step (MAR's clip), so that every step commits at least one token.

    Strictly decreasing from K to 0 after the last step; since K cos(pi/2 x) >= K (1 - x), at least
    N-1-n >= 1 tokens stay masked before the last step without a lower clip. Needs 1 <= N <= K.
    """
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got steps={steps}")
    if steps > num_tokens:
        raise ValueError(
            f"steps={steps} sampling steps for K={num_tokens} tokens: every step commits at least one "
            f"token, so steps must be at most {num_tokens} (generator.sample.steps, evaluation.sweeps.steps)"
        )
    masked, left = [], num_tokens
    for n in range(steps):
        left = min(left - 1, math.floor(num_tokens * math.cos(math.pi / 2 * ((n + 1) / steps))))
        masked.append(left)
    return masked


def uniform(shape: Sequence[int], generator: Generators, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) samples of `shape` on `device`, drawn on the generator's own device. With a list of
    generators (one per image) row i of the leading dimension comes from generators[i]."""
    if generator is None or isinstance(generator, torch.Generator):
        where = device if generator is None else generator.device
        return torch.rand(tuple(shape), generator=generator, device=where).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} images: give one per image")
    rows = [torch.rand(tuple(shape[1:]), generator=g, device=g.device).to(device) for g in generator]
    return torch.stack(rows)


def gumbel_noise(shape: torch.Size, generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard Gumbel samples -log(-log u), u ~ U(0, 1) kept away from 0 so that they are finite."""
    u = uniform(shape, generator, device).clamp_min(torch.finfo(torch.float32).tiny)
    return -(-u.log()).log()


def confidence_commit(
    confidence: torch.Tensor,
    known: torch.Tensor,
    count: int,
    noise_scale: float,
    generator: Generators = None,
) -> torch.Tensor:
    """MaskGIT's choice: the `count` masked positions with the highest confidence + noise_scale * Gumbel.

    confidence: (B, K) log-probability of each position's drawn token; known: (B, K) bool.
    Returns the positions to commit, (B, K) bool. With noise_scale t > 0 the first choice is drawn
    from softmax(confidence / t) over the masked positions (the Gumbel-max trick); t = 0 is greedy.
    """
    noisy = confidence.float() + noise_scale * gumbel_noise(confidence.shape, generator, confidence.device)
    best = noisy.masked_fill(known, -torch.inf).topk(count, dim=-1).indices
    return torch.zeros_like(known).scatter_(1, best, True)


def cfg_scale_at(known: int, num_tokens: int, cfg_scale: float, schedule: CfgSchedule) -> float:
    """Guidance scale of a step after which `known` of K tokens are committed (those it commits
    included, as MAR's): linear 1 + (s_max - 1) known/K, or constant s_max."""
    if schedule == "linear":
        return 1 + (cfg_scale - 1) * known / num_tokens
    if schedule == "constant":
        return cfg_scale
    raise ValueError(f"cfg_schedule must be 'linear' or 'constant', got {schedule!r}")


def combine_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """l_u + s (l_c - l_u); exactly l_c at s = 1."""
    return cond if scale == 1 else uncond + scale * (cond - uncond)


def guided_logits(
    model: MaskedGenerator,
    bits: torch.Tensor,
    mask: torch.Tensor | None,
    labels: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Guided logits of every token. bits: (B, K, d); mask: (B, K) or None; labels: (B,).
    For scale != 1 the conditional and the null-class passes run as one batch of 2B."""
    if scale == 1:
        return model(bits, mask, labels)
    null = torch.full_like(labels, model.null_class)
    logits = model(
        torch.cat([bits, bits]),
        None if mask is None else torch.cat([mask, mask]),
        torch.cat([labels, null]),
    )
    return combine_guidance(*logits.chunk(2), scale)


def top_p_sample(
    logits: torch.Tensor, top_p: float, generator: Generators = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nucleus sampling over the last dimension: keep the most likely outcomes while the mass
    before them is at most p (the argmax is always kept), renormalise, draw one.

    logits: (..., V). Returns the drawn index (...) int64 and its log-probability (...) under the
    unfiltered distribution. For V = 2 a bit whose larger probability exceeds p is the argmax.
    """
    log_probs = logits.float().log_softmax(-1)
    sorted_probs, order = log_probs.exp().sort(-1, descending=True)
    kept = sorted_probs * ((sorted_probs.cumsum(-1) - sorted_probs) <= top_p)
    cumulative = kept.cumsum(-1)
    u = uniform(cumulative.shape[:-1], generator, logits.device) * cumulative[..., -1]
    rank = (cumulative <= u[..., None]).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
    index = order.gather(-1, rank)
    return index.squeeze(-1), log_probs.gather(-1, index).squeeze(-1)


def sample_bits(
    logits: torch.Tensor, head: str, top_p: float, generator: Generators
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw every token's bits from head logits: (..., d, 2) bitwise or (..., 2, 2^(d/2)) groups2.
    Returns bits (..., d) bool and confidence (...) = sum of the drawn outcomes' log-probabilities."""
    index, log_prob = top_p_sample(logits, top_p, generator)
    if head == "bitwise":
        bits = index.bool()
    else:
        group_bits = logits.shape[-1].bit_length() - 1  # V = 2^(d/2)
        bits = BinarySphericalQuantizer.indices_to_bits(index, group_bits).flatten(-2)
    return bits, log_prob.sum(-1)


def check_sampling(model: MaskedGenerator, labels: torch.Tensor, **settings: object) -> None:
    """Refuse what sampling cannot do right: a model in training mode, labels that are not a batch of
    class ids in [0, num_classes), and settings outside the ranges of `generator.sample` in the config
    (`check_argument`: the error names the argument, its value and the range); `order` may also be
    "raster"."""
    if model.training:
        raise ValueError("sampling needs model.eval() (class dropout is active in training mode)")
    classes = model.config.num_classes
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty (B,) tensor of class ids, got {labels!r}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must be classes in [0, {classes}), got {labels.tolist()}")
    order = settings.pop("order", "random")
    if order not in typing.get_args(Order):
        raise ValueError(f"order must be one of {typing.get_args(Order)}, got {order!r}")
    for name, value in settings.items():
        check_argument(value, name, SampleConfig)


@torch.no_grad()
def sample(
    model: MaskedGenerator,
    labels: torch.Tensor,
    *,
    steps: int,
    order: Order,
    top_p: float,
    cfg_scale: float,
    cfg_schedule: CfgSchedule,
    temperature: float,
    choice_temperature: float,
    generator: Generators = None,
    return_steps: Sequence[int] = (),
    on_step: Callable[[int], None] | None = None,
) -> SampleOutput:
    """Class-conditional tokens for labels: (B,) int64 on the model's device. The settings are those of
    `generator.sample` in the config (`semtok.sampling.settings.sampler_kwargs`).

    `steps` = N forward passes (one batched forward of 2B with CFG), 1 <= N <= K. order "random": one
    permutation per image, committed front to back; "confidence": the masked positions whose drawn
    token has the highest log-probability plus Gumbel noise scaled by choice_temperature (1 - (n+1)/N)
    at step n (MaskGIT's default 4.5); "raster": positions in index order (Fig. 5's progressive
    raster decoding of a masked model). A causal model is decoded by `sample_raster` (K steps in
    raster order; `steps`, `order` and `choice_temperature` do not apply). `generator`: one
    torch.Generator on any device, or a list with one per image (`Generators`). `on_step(n)` is called
    after each step n (a progress bar).
    """
    check_sampling(
        model,
        labels,
        steps=steps,
        order=order,
        top_p=top_p,
        cfg_scale=cfg_scale,
        cfg_schedule=cfg_schedule,
        temperature=temperature,
        choice_temperature=choice_temperature,
    )
    if model.config.causal:
        return sample_raster(
            model,
            labels,
            top_p=top_p,
            cfg_scale=cfg_scale,
            cfg_schedule=cfg_schedule,
            temperature=temperature,
            generator=generator,
            return_steps=return_steps,
            on_step=on_step,
        )
    c = model.config
    schedule = masked_schedule(c.num_tokens, steps)
    batch, device = labels.shape[0], labels.device
    bits = torch.zeros(batch, c.num_tokens, c.bits, dtype=torch.bool, device=device)
    known = torch.zeros(batch, c.num_tokens, dtype=torch.bool, device=device)
    if order == "raster":
        rank = torch.arange(c.num_tokens, device=device).expand(batch, -1)
    else:
        rank = uniform((batch, c.num_tokens), generator, device).argsort(-1).argsort(-1)
    partial = {}
    num_known = 0
    for step, still_masked in enumerate(schedule):
        target = c.num_tokens - still_masked
        scale = cfg_scale_at(target, c.num_tokens, cfg_scale, cfg_schedule)
        logits = guided_logits(model, bits, ~known, labels, scale) / temperature
        drawn, confidence = sample_bits(logits, c.head, top_p, generator)
        if order == "confidence":
            noise_scale = choice_temperature * (1 - (step + 1) / steps)
            commit = confidence_commit(confidence, known, target - num_known, noise_scale, generator)
        else:
            commit = (rank < target) & ~known
        bits = torch.where(commit[..., None], drawn, bits)
        known = known | commit
        num_known = target
        if step in return_steps:
            partial[step] = (bits.clone(), known.clone())
        if on_step is not None:
            on_step(step)
    return SampleOutput(bits, BinarySphericalQuantizer.bits_to_indices(bits), partial)


@torch.no_grad()
def sample_raster(
    model: MaskedGenerator,
    labels: torch.Tensor,
    *,
    top_p: float,
    cfg_scale: float,
    cfg_schedule: CfgSchedule,
    temperature: float,
    generator: Generators = None,
    return_steps: Sequence[int] = (),
    on_step: Callable[[int], None] | None = None,
) -> SampleOutput:
    """Token-by-token decoding of the causal variant with a KV cache: K one-token forward steps,
    the same top-p and CFG (the scale's "known" counts the tokens decoded once the step is done: i + 1
    at token i).
    partial[i] holds the state after token i."""
    if not model.config.causal:
        raise ValueError("sample_raster needs a causal generator")
    check_sampling(
        model, labels, top_p=top_p, cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature
    )
    c = model.config
    batch, device = labels.shape[0], labels.device
    guided = cfg_scale != 1
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, model.null_class)])
    bits = torch.zeros(batch, c.num_tokens, c.bits, dtype=torch.bool, device=device)
    caches = model.new_kv_cache()
    previous = None
    partial = {}
    for i in range(c.num_tokens):
        logits = model.forward_step(previous, labels, caches)[:, 0]
        if guided:
            logits = combine_guidance(
                *logits.chunk(2), cfg_scale_at(i + 1, c.num_tokens, cfg_scale, cfg_schedule)
            )
        token, _ = sample_bits(logits / temperature, c.head, top_p, generator)
        bits[:, i] = token
        previous = torch.cat([token, token]) if guided else token
        if i in return_steps:
            known = (torch.arange(c.num_tokens, device=device) <= i).expand(batch, -1)
            partial[i] = (bits.clone(), known.clone())
        if on_step is not None:
            on_step(i)
    return SampleOutput(bits, BinarySphericalQuantizer.bits_to_indices(bits), partial)

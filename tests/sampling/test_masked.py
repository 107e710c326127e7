import math
from pathlib import Path

import pytest
import torch

from semtok.config import GeneratorConfig, load
from semtok.models.generator import MaskedGenerator, sample_mask
from semtok.report.spec import generator_settings
from semtok.sampling.masked import (
    cfg_scale_at,
    confidence_commit,
    guided_logits,
    masked_schedule,
    sample,
    sample_raster,
    top_p_sample,
)
from semtok.sampling.settings import sample_config, sampler_kwargs

K, D, CLASSES = 16, 8, 10
ROOT = Path(__file__).resolve().parents[2]
PAPER = GeneratorConfig()  # the paper's sampler and training values (config/paper.yaml spells them out)


def tiny(**overrides) -> MaskedGenerator:
    torch.manual_seed(0)
    kwargs = {
        "depth": 2,
        "width": 64,
        "heads": 4,
        "num_tokens": K,
        "bits": D,
        "num_classes": CLASSES,
        "head": "bitwise",
        "causal": False,
        "class_dropout": PAPER.class_dropout,
        "grad_checkpointing": False,
    }
    return MaskedGenerator(**{**kwargs, **overrides}).eval()


def draw(model: MaskedGenerator, labels: torch.Tensor, **settings):
    """`sample` with the paper's settings except those given."""
    return sample(model, labels, **{**sampler_kwargs(PAPER.sample), **settings})


def masks(batch: int) -> torch.Tensor:
    return sample_mask(batch, K, PAPER.mask.min_ratio, PAPER.mask.max_ratio, PAPER.mask.dist)


def draw_raster(model: MaskedGenerator, labels: torch.Tensor, **settings):
    paper = {
        k: v
        for k, v in sampler_kwargs(PAPER.sample).items()
        if k not in ("steps", "order", "choice_temperature")
    }
    return sample_raster(model, labels, **{**paper, **settings})


@pytest.mark.parametrize(
    ("tokens", "steps"), [(256, 64), (256, 128), (256, 8), (16, 16), (16, 4), (5, 1), (1, 1)]
)
def test_schedule_commits_at_least_one_token_every_step_and_ends_at_zero(tokens, steps):
    schedule = masked_schedule(tokens, steps)
    assert len(schedule) == steps and schedule[-1] == 0
    assert all(a > b for a, b in zip([tokens, *schedule], schedule, strict=False))  # >= 1 commit a step
    assert all(m >= steps - 1 - n for n, m in enumerate(schedule))  # the remaining steps can commit
    cosine = [math.floor(tokens * math.cos(math.pi / 2 * (n + 1) / steps)) for n in range(steps)]
    assert all(m <= c for m, c in zip(schedule, cosine, strict=True))  # the clip only brings commits forward
    if steps > 1:
        assert schedule[0] == min(tokens - 1, cosine[0])
    if steps <= tokens // 4:
        assert schedule[steps // 2 :] == cosine[steps // 2 :]  # the cosine itself once the clip is past


def test_schedule_invariants_for_every_step_count_up_to_k():
    for tokens in [*range(1, 65), 128, 255, 256, 1024]:
        for steps in range(1, tokens + 1):
            schedule = masked_schedule(tokens, steps)
            steps_taken = [a - b for a, b in zip([tokens, *schedule], schedule, strict=False)]
            assert len(schedule) == steps and schedule[-1] == 0 and min(steps_taken) >= 1, (tokens, steps)


@pytest.mark.parametrize(("tokens", "steps"), [(16, 17), (16, 64), (1, 3)])
def test_more_steps_than_tokens_is_refused(tokens, steps):
    with pytest.raises(ValueError, match=rf"steps={steps} .* K={tokens} tokens"):
        masked_schedule(tokens, steps)
    model = tiny() if tokens == K else None
    if model is not None:
        with pytest.raises(ValueError, match="at most 16"):
            draw(model, torch.tensor([0]), steps=steps)


def count_forwards(model: MaskedGenerator) -> list[int]:
    """Batch size of every forward pass of `model` from now on."""
    calls: list[int] = []
    model.register_forward_hook(lambda _module, args, _out: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("order", ["random", "confidence", "raster"])
@pytest.mark.parametrize(("tokens", "steps"), [(16, 1), (16, 2), (16, 8), (16, 16), (256, 64)])
def test_steps_is_the_number_of_forward_passes(order, tokens, steps):
    """N steps = N forward passes (Fig. 9's x axis); with CFG one batched forward of 2B per step."""
    torch.manual_seed(0)
    model = tiny(depth=1, width=32, heads=2, num_tokens=tokens, bits=4, num_classes=3)
    calls = count_forwards(model)
    labels = torch.tensor([0, 2])
    out = draw(model, labels, steps=steps, order=order, cfg_scale=3.0, cfg_schedule="constant")
    assert calls == [4] * steps
    assert out.bits.shape == (2, tokens, 4)
    calls.clear()
    draw(model, labels, steps=steps, order=order, cfg_scale=1.0)
    assert calls == [2] * steps


def test_confidence_choice_is_greedy_without_noise_and_never_picks_known_positions():
    confidence = torch.tensor([[-0.1, -3.0, -0.5, -0.2, -2.0], [-1.0, -0.1, -0.3, -4.0, -0.2]])
    known = torch.tensor([[True, False, False, False, False], [False, True, False, False, False]])
    commit = confidence_commit(confidence, known, 2, 0.0)
    assert commit.tolist() == [[False, False, True, True, False], [False, False, True, False, True]]
    noisy = confidence_commit(
        confidence.repeat(250, 1), known.repeat(250, 1), 4, 4.5, torch.Generator().manual_seed(0)
    )
    assert not (noisy & known.repeat(250, 1)).any() and noisy.sum(-1).eq(4).all()


@pytest.mark.parametrize("noise_scale", [1.0, 2.0])
def test_confidence_choice_with_gumbel_noise_draws_from_the_tempered_softmax(noise_scale):
    """Gumbel-max: the first committed position is drawn from softmax(confidence / t) (MaskGIT)."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 40000
    commit = confidence_commit(
        probs.log().expand(n, 4),
        torch.zeros(n, 4, dtype=torch.bool),
        1,
        noise_scale,
        torch.Generator().manual_seed(0),
    )
    frequency = commit.float().mean(0)
    expected = (probs.log() / noise_scale).softmax(-1)
    print(f"t = {noise_scale}: chosen {frequency.tolist()}, softmax(c/t) {expected.tolist()}")
    torch.testing.assert_close(frequency, expected, atol=0.01, rtol=0)


def test_confidence_order_anneals_the_gumbel_scale_linearly_to_zero(monkeypatch):
    """At step n the noise scale is choice_temperature (1 - (n+1)/N), as MaskGIT's."""
    import semtok.sampling.masked as masked

    scales: list[float] = []
    choose = masked.confidence_commit

    def watched(confidence, known, count, noise_scale, generator=None):
        scales.append(noise_scale)
        return choose(confidence, known, count, noise_scale, generator)

    monkeypatch.setattr(masked, "confidence_commit", watched)
    steps = 8
    draw(tiny(), torch.tensor([1, 2]), steps=steps, order="confidence", choice_temperature=3.0)
    assert scales == pytest.approx([3.0 * (1 - (n + 1) / steps) for n in range(steps)])
    assert scales[-1] == 0


def test_choice_temperature_changes_confidence_order_only():
    model = tiny()
    labels = torch.arange(8) % CLASSES

    def bits(order: str, choice_temperature: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        out = draw(
            model, labels, steps=4, order=order, choice_temperature=choice_temperature, generator=generator
        )
        return out.bits

    assert not torch.equal(bits("confidence", 0.0), bits("confidence", 4.5))
    assert torch.equal(bits("random", 0.0), bits("random", 4.5))


def token_count(cfg, variant: str) -> int:
    """K of a generator variant's tokenizer: num_tokens, or the image-token grid for grid2d (the
    SD3.5 VAE downsamples 8x; a configured VAE by 2^(blocks - 1))."""
    t = cfg.tokenizer_variant(cfg.generator_variant(variant).tokenizer)
    if t.encoder.mode != "grid2d":
        return t.num_tokens
    arch = cfg.pretrained.vae.arch
    factor = 2 ** (len(arch["block_out_channels"]) - 1) if arch else 8
    return (cfg.data.resolution // factor // t.patch_size) ** 2


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_every_configured_sampling_setting_fits_its_token_count(name):
    """Main settings and the steps sweep (tiny: [2, 8, 16] for K = 16) are valid step counts."""
    cfg = load(ROOT / "config" / name)
    checked = 0
    for variant, settings in generator_settings(cfg).items():
        if cfg.generator_variant(variant).arch.causal:
            continue  # raster decoding: K steps, `steps` does not apply
        tokens = token_count(cfg, variant)
        for setting in settings:
            steps = sample_config(cfg, variant, setting).steps
            assert len(masked_schedule(tokens, steps)) == steps, (variant, setting)
            checked += 1
    assert checked > len(cfg.evaluation.sweeps.steps)


def test_top_p_is_deterministic_above_p_and_random_below():
    generator = torch.Generator().manual_seed(0)
    confident = torch.tensor([0.2, 0.8]).log().expand(20000, 2)
    index, _ = top_p_sample(confident, 0.75, generator)
    assert index.eq(1).all()
    uncertain = torch.tensor([0.4, 0.6]).log().expand(20000, 2)
    index, log_prob = top_p_sample(uncertain, 0.75, generator)
    assert index.float().mean().item() == pytest.approx(0.6, abs=0.02)
    torch.testing.assert_close(log_prob, torch.tensor([0.4, 0.6]).log()[index])


def test_top_p_nucleus_over_many_outcomes():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    index, _ = top_p_sample(probs.log().expand(20000, 4), 0.75, torch.Generator().manual_seed(0))
    frequency = torch.bincount(index, minlength=4).float() / 20000
    torch.testing.assert_close(frequency, torch.tensor([0.5, 0.3, 0.0, 0.0]) / 0.8, atol=0.02, rtol=0)


def test_cfg_schedule_values():
    assert cfg_scale_at(0, 256, 6.0, "linear") == 1.0
    assert cfg_scale_at(128, 256, 6.0, "linear") == 3.5
    assert cfg_scale_at(256, 256, 6.0, "linear") == 6.0
    assert cfg_scale_at(0, 256, 6.0, "constant") == 6.0


def guidance_scales(monkeypatch, function: str, run) -> list[float]:
    """The CFG scale (the last argument) of every call of `function` of the sampler during `run()`."""
    import semtok.sampling.masked as masked

    scales: list[float] = []
    original = getattr(masked, function)

    def watched(*args):
        scales.append(args[-1])
        return original(*args)

    monkeypatch.setattr(masked, function, watched)
    run()
    return scales


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_linear_cfg_counts_the_tokens_the_step_commits_as_mar_does(monkeypatch, order):
    """MAR: at step n the scale is 1 + (s - 1)(K - masked after the step)/K, so the last step guides
    with s itself (a scale from the tokens known before the step lags one step behind)."""
    steps, scale = 8, 3.0
    scales = guidance_scales(
        monkeypatch,
        "guided_logits",
        lambda: draw(tiny(), torch.tensor([1, 2]), steps=steps, order=order, cfg_scale=scale),
    )
    expected = [1 + (scale - 1) * (K - left) / K for left in masked_schedule(K, steps)]
    assert scales == pytest.approx(expected)
    assert scales[-1] == scale


def test_raster_cfg_counts_the_token_of_the_step(monkeypatch):
    scales = guidance_scales(
        monkeypatch,
        "combine_guidance",
        lambda: draw_raster(tiny(causal=True), torch.tensor([1, 2]), cfg_scale=3.0),
    )
    assert scales == pytest.approx([1 + 2.0 * (i + 1) / K for i in range(K)])


def test_token_weighted_linear_cfg_of_the_paper_sampler_is_mars(monkeypatch):
    """The paper's sampler (K = 256, N = 64, s = 6): the mean scale a token is drawn under is 3.548,
    MAR's; scaled from the tokens known before each step it was 3.452."""
    tokens, steps, scale = 256, PAPER.sample.steps, PAPER.sample.cfg_scale
    model = tiny(depth=1, width=32, heads=2, num_tokens=tokens, bits=4)
    scales = guidance_scales(
        monkeypatch, "guided_logits", lambda: draw(model, torch.tensor([0]), steps=steps, cfg_scale=scale)
    )
    left = [tokens, *masked_schedule(tokens, steps)]
    mean = sum((left[n] - left[n + 1]) * scales[n] for n in range(steps)) / tokens
    assert mean == pytest.approx(3.548, abs=1e-3)


def test_guided_logits():
    model = tiny()
    bits = torch.rand(2, K, D) < 0.5
    mask, labels = masks(2), torch.tensor([3, 7])
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        cond = model(bits, mask, labels)
        uncond = model(bits, mask, torch.full_like(labels, CLASSES))
        calls.clear()
        assert torch.equal(guided_logits(model, bits, mask, labels, 1.0), cond)
        assert calls == [2]
        guided = guided_logits(model, bits, mask, labels, 4.0)
        assert calls == [2, 4]  # one batched forward for both passes
    torch.testing.assert_close(guided, uncond + 4.0 * (cond - uncond), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("order", ["random", "confidence"])
@pytest.mark.parametrize("head", ["bitwise", "groups2"])
def test_each_position_is_committed_exactly_once(order, head):
    model = tiny(head=head)
    steps = 8
    out = draw(
        model,
        torch.tensor([0, 1, 2]),
        steps=steps,
        order=order,
        generator=torch.Generator().manual_seed(0),
        return_steps=range(steps),
    )
    schedule = masked_schedule(K, steps)
    commits = torch.zeros(3, K, dtype=torch.long)
    previous_known = torch.zeros(3, K, dtype=torch.bool)
    for step in range(steps):
        bits, known = out.partial[step]
        assert (known.sum(-1) == K - schedule[step]).all()
        assert (known.sum(-1) > previous_known.sum(-1)).all()  # every step commits a token
        assert (known | ~previous_known).all()  # committed tokens stay committed
        assert torch.equal(bits[previous_known], out.bits[previous_known])  # and keep their bits
        assert not bits[~known].any()
        commits += known & ~previous_known
        previous_known = known
    assert commits.eq(1).all()
    assert out.indices.shape == (3, K) and out.indices.dtype == torch.int64
    torch.testing.assert_close(out.indices, (out.bits.long() * 2 ** torch.arange(D)).sum(-1))


def test_random_order_differs_between_images():
    out = draw(
        tiny(), torch.tensor([0, 0]), steps=4, generator=torch.Generator().manual_seed(0), return_steps=[0]
    )
    _, known = out.partial[0]
    assert not torch.equal(known[0], known[1])


def test_sampling_is_reproducible_with_a_generator():
    model = tiny()
    labels = torch.tensor([4, 5])
    first = draw(model, labels, steps=4, generator=torch.Generator().manual_seed(3))
    second = draw(model, labels, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.bits, second.bits)


def test_raster_sampling_matches_uncached_greedy_decoding():
    model = tiny(causal=True)
    labels = torch.tensor([2, 8])
    out = draw_raster(
        model, labels, top_p=1e-9, cfg_scale=3.0, return_steps=[0, K - 1]
    )  # top_p > 0 that keeps the argmax alone: greedy
    bits = torch.zeros(2, K, D, dtype=torch.bool)
    with torch.no_grad():
        for i in range(K):
            scale = cfg_scale_at(i + 1, K, 3.0, "linear")
            bits[:, i] = guided_logits(model, bits, None, labels, scale)[:, i].argmax(-1).bool()
    assert torch.equal(out.bits, bits)
    assert out.partial[0][1].sum() == 2 and out.partial[K - 1][1].all()
    assert torch.equal(draw(model, labels, top_p=1e-9, cfg_scale=3.0).bits, bits)


def test_sampling_refuses_training_mode():
    with pytest.raises(ValueError, match="eval"):
        draw(tiny().train(), torch.tensor([0]), steps=2)


def test_class_conditional_samples_follow_their_class():
    """A model trained on class-dependent tokens samples each class's own pattern."""
    torch.manual_seed(0)
    patterns = torch.rand(CLASSES, K, D) < 0.5
    model = tiny().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        labels = torch.randint(CLASSES, (32,))
        bits = patterns[labels]
        mask = masks(32)
        loss, _ = model.loss(model(bits, mask, labels), bits, mask, PAPER.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    labels = torch.tensor([0] * 4 + [1] * 4)
    out = draw(model, labels, steps=8, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    own = (out.bits == patterns[labels]).float().mean()
    other = (out.bits == patterns[1 - labels]).float().mean()
    print(f"bit agreement with own class {own:.3f}, with the other class {other:.3f}")
    assert own > 0.9 and own > other + 0.3
    assert not torch.equal(out.bits[0], out.bits[4])


def test_raster_order_commits_positions_front_to_back():
    torch.manual_seed(0)
    model = tiny(depth=1, width=32, heads=2, num_tokens=8, bits=4, num_classes=3)
    out = draw(model, torch.tensor([0, 1]), steps=4, order="raster", cfg_scale=1.0, return_steps=range(4))
    for step, (_, known) in sorted(out.partial.items()):
        count = int(known[0].sum())
        assert known[:, :count].all() and not known[:, count:].any(), f"step {step}: not a prefix"

import math
from pathlib import Path

import pytest
import torch

from semtok.config import GeneratorConfig, load
from semtok.models.generator import MaskedGenerator, sample_mask, swiglu_hidden

REPO = Path(__file__).resolve().parents[2]
K, D, CLASSES = 16, 8, 10
PAPER = GeneratorConfig()  # the paper's values (config/paper.yaml spells them out)
TINY = {
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


def tiny(**overrides) -> MaskedGenerator:
    torch.manual_seed(0)
    return MaskedGenerator(**{**TINY, **overrides}).eval()


def masks(batch: int, **kwargs) -> torch.Tensor:
    """Training masks with the paper's ratio range (SPEC §4)."""
    settings = {"min_ratio": PAPER.mask.min_ratio, "max_ratio": PAPER.mask.max_ratio, "dist": PAPER.mask.dist}
    return sample_mask(batch, K, **{**settings, **kwargs})


def loss(model: MaskedGenerator, logits, bits, mask):
    return model.loss(logits, bits, mask, label_smoothing=PAPER.label_smoothing)


def random_bits(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, K, D, generator=torch.Generator().manual_seed(seed)) < 0.5


def test_swiglu_hidden_matches_llamagen():
    assert swiglu_hidden(1024) == 2816
    assert swiglu_hidden(1280) == 3584
    assert swiglu_hidden(2048) == 5632


def test_parameter_counts_match_table_9():
    """Table 9 (the sizes of config/paper.yaml): L 318M, XL 746M, XXL "1.2B". L and XL match to 1%; the
    shared-adaLN design gives XXL 1.27B, which the paper's two-digit "1.2B" only fits as a truncation
    (SPEC's estimate 1.26B)."""
    sizes = load(REPO / "config" / "paper.yaml").generator.sizes
    counts = {}
    for size in ("L", "XL", "XXL"):
        depth, width, heads = sizes[size]
        with torch.device("meta"):
            paper = {"depth": depth, "width": width, "heads": heads, "num_tokens": 256, "bits": 18}
            model = MaskedGenerator(**{**TINY, **paper, "num_classes": 1000})
        counts[size] = sum(p.numel() for p in model.parameters())
        print(f"generator {size}: {counts[size] / 1e6:.1f}M parameters")
    assert counts["L"] == pytest.approx(318e6, rel=0.01)
    assert counts["XL"] == pytest.approx(746e6, rel=0.01)
    assert 1.2e9 <= counts["XXL"] < 1.3e9


def test_output_shapes_for_both_heads():
    bits, labels = random_bits(3), torch.tensor([0, 5, CLASSES])
    mask = masks(3)
    assert tiny()(bits, mask, labels).shape == (3, K, D, 2)
    assert tiny(head="groups2")(bits, mask, labels).shape == (3, K, 2, 2 ** (D // 2))


def test_bidirectional_attention_sees_the_last_token_and_causal_does_not():
    bits, labels = random_bits(2), torch.tensor([1, 2])
    changed = bits.clone()
    changed[:, -1] = ~changed[:, -1]
    model = tiny()
    mask = torch.zeros(2, K, dtype=torch.bool)
    with torch.no_grad():
        diff = (model(bits, mask, labels)[:, 0] - model(changed, mask, labels)[:, 0]).abs().max()
    assert diff > 1e-4

    causal = tiny(causal=True)
    changed = bits.clone()
    changed[:, K - 2] = ~changed[:, K - 2]  # input of position K-1 only
    with torch.no_grad():
        before, after = causal(bits, None, labels), causal(changed, None, labels)
    torch.testing.assert_close(before[:, : K - 1], after[:, : K - 1])
    assert (before[:, K - 1] - after[:, K - 1]).abs().max() > 1e-4


def test_mask_embedding_replaces_masked_inputs():
    bits, labels = random_bits(2), torch.tensor([3, 4])
    mask = torch.zeros(2, K, dtype=torch.bool)
    mask[:, 5] = True
    changed = bits.clone()
    changed[:, 5] = ~changed[:, 5]
    model = tiny()
    with torch.no_grad():
        torch.testing.assert_close(model(bits, mask, labels), model(changed, mask, labels))


def test_kv_cached_steps_equal_teacher_forced_logits():
    model = tiny(causal=True)
    bits, labels = random_bits(2), torch.tensor([1, CLASSES])
    caches = model.new_kv_cache()
    with torch.no_grad():
        full = model(bits, None, labels)
        steps = [model.forward_step(None if i == 0 else bits[:, i - 1], labels, caches) for i in range(K)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_loss_uses_masked_positions_only():
    model = tiny()
    bits, labels = random_bits(4), torch.arange(4)
    mask = masks(4, generator=torch.Generator().manual_seed(0))
    logits = model(bits, mask, labels)
    value, accuracy = loss(model, logits, bits, mask)
    noisy = torch.where(mask[..., None, None], logits, torch.randn_like(logits))
    torch.testing.assert_close(loss(model, noisy, bits, mask)[0], value)
    assert not accuracy.requires_grad and 0 <= accuracy <= 1
    # Near-uniform logits at init: the per-bit cross-entropy is about log 2.
    assert value.item() == pytest.approx(math.log(2), abs=0.05)


def test_groups2_loss_targets_are_little_endian_group_indices():
    model = tiny(head="groups2")
    bits = random_bits(2)
    weights = 2 ** torch.arange(D // 2)
    groups = (bits.long().unflatten(-1, (2, D // 2)) * weights).sum(-1)
    perfect = torch.nn.functional.one_hot(groups, 2 ** (D // 2)).float() * 50
    loss, accuracy = model.loss(perfect, bits, None, label_smoothing=0.0)
    assert loss.item() < 1e-6 and accuracy.item() == 1.0


@pytest.mark.parametrize("dist", ["uniform", "truncnorm"])
def test_sample_mask_ratio_range(dist):
    mask = masks(2000, dist=dist, generator=torch.Generator().manual_seed(0))
    counts = mask.sum(-1)
    assert counts.min() >= math.ceil(0.7 * K) and counts.max() <= K
    assert len(counts.unique()) > 2
    if dist == "truncnorm":  # mass piles up near r = 1 (mean 1.0)
        assert (counts >= 15).float().mean() > (counts <= 13).float().mean()


def test_class_dropout_only_in_training():
    model = tiny(class_dropout=0.5)
    labels = torch.zeros(1000, dtype=torch.long)
    assert torch.equal(model.drop_labels(labels), labels)
    model.train()
    dropped = (model.drop_labels(labels) == CLASSES).float().mean()
    assert 0.4 < dropped < 0.6


def test_training_lowers_the_loss():
    """Class-dependent bit patterns (plus 5% bit noise) are learnt within 100 Adam steps."""
    torch.manual_seed(0)
    patterns = torch.rand(CLASSES, K, D) < 0.5
    model = tiny().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        labels = torch.randint(CLASSES, (32,))
        bits = patterns[labels] ^ (torch.rand(32, K, D) < 0.05)
        mask = masks(32)
        value, _ = loss(model, model(bits, mask, labels), bits, mask)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    print(f"loss {first:.3f} -> {last:.3f}")
    assert last < 0.5 * first


def test_gradient_checkpointing_gives_the_same_gradients():
    bits, labels = random_bits(2), torch.tensor([1, 2])
    mask = masks(2, generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        model = tiny(grad_checkpointing=checkpointing)
        loss(model, model(bits, mask, labels), bits, mask)[0].backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    assert tiny(grad_checkpointing=True).is_gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])


def test_save_and_load_round_trip(tmp_path):
    model = tiny(head="groups2", causal=True)
    model.save_pretrained(tmp_path)
    loaded = MaskedGenerator.from_pretrained(tmp_path).eval()
    assert loaded.config.head == "groups2" and loaded.config.causal
    bits, labels = random_bits(2), torch.tensor([0, 9])
    with torch.no_grad():
        torch.testing.assert_close(loaded(bits, None, labels), model(bits, None, labels))


def test_config_validation():
    with pytest.raises(ValueError, match="head"):
        tiny(head="groups3")
    with pytest.raises(ValueError, match="even number of bits"):
        tiny(head="groups2", bits=7)
    with pytest.raises(ValueError, match="width 64 / heads 3"):
        tiny(heads=3)
    with pytest.raises(ValueError, match="mask"):
        tiny(causal=True)(random_bits(1), torch.zeros(1, K, dtype=torch.bool), torch.tensor([0]))

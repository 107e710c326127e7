"""Stage II losses: LPIPS equals the reference package, ResNet logit loss, GAN terms."""

from __future__ import annotations

import lpips
import pytest
import torch

from semtok.losses.gan import discriminator_hinge, gan_active, generator_hinge, lecam
from semtok.losses.perceptual import LPIPS, PerceptualLoss, resnet_logit_loss
from semtok.models.discriminator import Discriminator


def test_lpips_matches_reference_package_at_full_width():
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    ours = LPIPS().eval()
    ref_convs = [
        m for s in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5) for m in s
    ]
    for mine, theirs in zip(ours.features, ref_convs, strict=True):
        if isinstance(mine, torch.nn.Conv2d):
            mine.load_state_dict(theirs.state_dict())
    ours.load_lins({f"lin{i}.model.1.weight": lin.model[1].weight for i, lin in enumerate(ref.lins)})
    a, b = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
    torch.testing.assert_close(ours(a, b), ref(a, b).flatten(), rtol=1e-5, atol=1e-6)


def test_tiny_lpips_is_a_distance_that_grows_with_noise():
    torch.manual_seed(0)
    net = LPIPS(widths=[8, 16, 32, 64, 64]).eval()
    for lin in net.lins:
        lin.weight.data.abs_()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    same = net(x, x)
    small = net(x, x + 0.05 * torch.randn_like(x))
    large = net(x, x + 0.5 * torch.randn_like(x))
    assert torch.all(same.abs() < 1e-6)
    assert torch.all(small > 0) and torch.all(large > small)


def test_resnet_logit_loss_zero_for_identical_and_gradients_flow():
    import torchvision

    clf = torchvision.models.resnet18(num_classes=10).eval()
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    assert resnet_logit_loss(clf, real, real, 64).item() == pytest.approx(0.0, abs=1e-10)
    loss = resnet_logit_loss(clf, real, fake, 64)
    loss.backward()
    assert loss.item() > 0 and fake.grad.abs().sum() > 0


def test_perceptual_selects_terms():
    lp = LPIPS(widths=[8, 16, 32, 64, 64])
    import torchvision

    clf = torchvision.models.resnet18(num_classes=10)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert set(PerceptualLoss(["lpips"], lp, clf, 32)(x, y)) == {"lpips"}
    assert set(PerceptualLoss(["resnet"], lp, clf, 32)(x, y)) == {"resnet"}
    assert set(PerceptualLoss(["lpips", "resnet"], lp, clf, 32)(x, y)) == {"lpips", "resnet"}
    with pytest.raises(ValueError, match="subset"):
        PerceptualLoss(["vgg"], lp, clf, 32)


def test_gan_terms_and_schedule():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.5])
    assert discriminator_hinge(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1.5) / 2)
    assert generator_hinge(fake).item() == pytest.approx(0.75)
    assert not gan_active(59, 60) and gan_active(60, 60)


def test_lecam_updates_running_means_saved_with_the_discriminator():
    disc = Discriminator(channels=8, channel_mults=[1, 2])
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    logits = disc(images)
    assert logits.shape == (2, 1, 8, 8)
    reg = lecam(disc, logits + 1.0, logits - 1.0)
    assert reg.item() >= 0
    assert disc.ema_real.item() != 0 and disc.ema_fake.item() != 0
    assert {"ema_real", "ema_fake"} <= set(disc.state_dict())

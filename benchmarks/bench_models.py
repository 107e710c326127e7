"""Training and sampling throughput, peak memory and model FLOPs utilisation, plus side-by-side ratios.

    python benchmarks/bench_models.py [--scale tiny|paper] [--device cpu|cuda] [--steps 5]
                                      [--peak-tflops 989] [--csv benchmarks/results-<scale>-<device>.csv]

Rows (one CSV row each, also printed as a table):
- train steps of Stage I (encoder + BSQ + SD3 decoder, flow loss, semantic losses), Stage II (refiner +
  VAE decode + LPIPS + ResNet logit + discriminator) and the generator (AR-L): samples/s, peak memory,
  FLOPs per step counted by `torch.utils.flop_counter` (matmuls, convolutions, attention; forward
  and backward), MFU = FLOPs / time / peak (when --peak-tflops is given: 989 for an H200 in dense bf16);
- sampling: tokens → pixels (generator with CFG, one-step refiner, VAE decode), images/s;
- ratios measured in the same run on the same shapes: our MMDiT joint block vs diffusers'
  `JointTransformerBlock` (forward + backward), our factorised BSQ entropy vs the brute-force entropy
  over all 2^d codes.
`--scale tiny` uses the default config's sizes (CPU friendly); `--scale paper` the paper's (GPU).
Everything is randomly initialised: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from semtok.config import SampleConfig, load
from semtok.losses.gan import discriminator_hinge, generator_hinge
from semtok.losses.perceptual import LPIPS, resnet_logit_loss
from semtok.models.decoder import TokenDecoder
from semtok.models.discriminator import Discriminator
from semtok.models.encoder import EncoderConfig, JointBlock
from semtok.models.generator import MaskedGenerator, sample_mask
from semtok.models.quantizer import brute_force_entropy, factorized_entropy
from semtok.models.tokenizer import SemTok
from semtok.registry import tiny_vae_arch
from semtok.sampling.masked import sample
from semtok.sampling.settings import sampler_kwargs
from semtok.train.tokenizer import FlowMatchingObjective, RefinerObjective

SD35_VAE = {  # SD3.5's AutoencoderKL layout (16 latent channels, f = 8)
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "sample_size": 256,
}
SCALES = {
    "tiny": {
        "res": 32,
        "latent": 8,
        "vae": tiny_vae_arch(
            {
                "block_out_channels": [16, 32, 32],
                "latent_channels": 16,
                "layers_per_block": 1,
                "norm_num_groups": 8,
            },
            32,
        ),
        "encoder": {"depth": 2, "width": 64, "heads": 4},
        "tokens": 16,
        "decoder": {
            "sample_size": 8,
            "patch_size": 2,
            "in_channels": 16,
            "out_channels": 16,
            "num_layers": 2,
            "attention_head_dim": 16,
            "num_attention_heads": 4,
            "joint_attention_dim": 64,
            "caption_projection_dim": 64,
            "pooled_projection_dim": 64,
            "pos_embed_max_size": 16,
            "dual_attention_layers": [0],
            "qk_norm": "rms_norm",
        },
        "sig": (64, 64),
        "lpips": [8, 16, 32, 64, 64],
        "disc": (16, [1, 2, 4]),
        "generator": (2, 64, 4),
        "batch": {"stage1": 32, "stage2": 16, "ar": 64, "sample": 32},
        "ar_steps": 8,
        "block": (256, 8, 64, 64),
        "resnet": ([1, 1, 1, 1], 32),
    },
    "paper": {
        "res": 256,
        "latent": 32,
        "vae": SD35_VAE,
        "encoder": {"depth": 8, "width": 768, "heads": 12},
        "tokens": 256,
        "decoder": load(
            Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
        ).tokenizer.decoder.transformer,
        "sig": (256, 1152),
        "lpips": [64, 128, 256, 512, 512],
        "disc": (128, [1, 2, 4, 4, 4]),
        "generator": (24, 1024, 16),
        "batch": {"stage1": 32, "stage2": 8, "ar": 256, "sample": 250},
        "ar_steps": 64,
        "block": (768, 12, 256, 256),
        "resnet": ([3, 4, 6, 3], 224),
    },
}
BITS = 18


def timed(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def tokenizer(s: dict, device: torch.device, refiner: bool) -> SemTok:
    enc = EncoderConfig(
        **s["encoder"],
        in_channels=16,
        patch_size=2,
        latent_size=s["latent"],
        num_tokens=s["tokens"],
        token_dim=BITS,
        mlp_ratio=4.0,
        causal_1d=False,
        mode="1d",
        grad_checkpointing=device.type == "cuda",
    )
    decoder = TokenDecoder(
        transformer_config=dict(s["decoder"]),
        token_dim=BITS,
        num_tokens=s["tokens"],
        latent_size=s["latent"],
        grad_checkpointing=device.type == "cuda",
    )
    if refiner:
        decoder.enable_refiner()
    semantic = {
        "width": enc.width,
        "code_dim": BITS,
        "sig_dim": s["sig"][1],
        "contrastive": True,
        "distill": True,
        "distill_head": "linear",
        "contrastive_embed_dim": 512,
        "init_temperature": 0.07,
        "max_scale": 100.0,
    }
    model = SemTok(
        encoder_config=enc.__dict__,
        quantizer_config={"kind": "bsq", "group_size": 1, "tau": 1.0},
        decoder_config=dict(decoder.config),
        vae_config=s["vae"],
        latent_shift=s["vae"]["shift_factor"],
        latent_scale=s["vae"]["scaling_factor"],
        flow_steps=25,
        flow_shift=1.0,
        semantic_config=semantic,
        decoder_module=decoder,
    )
    return model.to(device)


def bench_train(
    name: str,
    model: torch.nn.Module,
    step: Callable[[], torch.Tensor],
    batch: int,
    args,
    device: torch.device,
) -> dict:
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda"
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = step()
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(train_step, args.steps, device)
    step_flops = flops(train_step)
    return row(name, batch / seconds, "samples/s", seconds, step_flops, args, device)


def row(
    name: str, value: float, unit: str, seconds: float, step_flops: float, args, device: torch.device
) -> dict:
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    mfu = step_flops / seconds / (args.peak_tflops * 1e12) if args.peak_tflops else float("nan")
    return {
        "benchmark": name,
        "value": value,
        "unit": unit,
        "step_s": seconds,
        "tflop_per_step": step_flops / 1e12,
        "achieved_tflops": step_flops / seconds / 1e12,
        "mfu": mfu,
        "peak_mem_gib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (H200 dense bf16: 989)")
    parser.add_argument("--csv", help="output CSV (default benchmarks/results-<scale>-<device>.csv)")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    args = parser.parse_args()
    device, s = torch.device(args.device), SCALES[args.scale]
    torch.manual_seed(0)
    rows: list[dict] = []

    def want(name: str) -> bool:
        return not args.only or name in args.only

    b = s["batch"]

    if want("stage1"):
        model = tokenizer(s, device, refiner=False).train()
        objective = FlowMatchingObjective(model)
        lat = torch.randn(b["stage1"], 16, s["latent"], s["latent"], device=device)
        sig = torch.randn(b["stage1"], *s["sig"], device=device)

        def stage1() -> torch.Tensor:
            out = objective(lat, sig)
            return out["diff"] + 0.0025 * out["quant"] + 0.05 * (out["distill"] + out["contra"])

        rows.append(bench_train("train_stage1", model, stage1, b["stage1"], args, device))
        del model

    if want("stage2"):
        model = tokenizer(s, device, refiner=True).train()
        model.encoder.requires_grad_(False)
        lpips = LPIPS(s["lpips"]).to(device).requires_grad_(False)
        import torchvision

        layers, resnet_size = s["resnet"]  # ResNet-50 at 224 px for the paper, a tiny ResNet otherwise
        block = (
            torchvision.models.resnet.Bottleneck
            if layers == [3, 4, 6, 3]
            else torchvision.models.resnet.BasicBlock
        )
        resnet = torchvision.models.resnet.ResNet(block, layers).to(device).requires_grad_(False).eval()
        disc = Discriminator(*s["disc"]).to(device)
        lat = torch.randn(b["stage2"], 16, s["latent"], s["latent"], device=device)
        img = torch.rand(b["stage2"], 3, s["res"], s["res"], device=device) * 2 - 1

        def stage2() -> torch.Tensor:
            fake = RefinerObjective(model)(lat)["image"]
            loss = F.mse_loss(fake, img) + 0.1 * (
                lpips(fake, img).mean() + resnet_logit_loss(resnet, img, fake, resnet_size)
            )
            logits = disc(torch.cat([img, fake.detach()])).chunk(2)
            return loss + 0.1 * generator_hinge(disc(fake)) + discriminator_hinge(*logits)

        rows.append(bench_train("train_stage2", model, stage2, b["stage2"], args, device))
        del model, lpips, resnet, disc

    depth, width, heads = s["generator"]
    gen_cfg = dict(
        depth=depth,
        width=width,
        heads=heads,
        num_tokens=s["tokens"],
        bits=BITS,
        num_classes=1000,
        head="bitwise",
        causal=False,
        class_dropout=0.1,
        grad_checkpointing=False,
    )
    if want("ar"):
        gen = MaskedGenerator(**gen_cfg).to(device).train()
        bits = torch.rand(b["ar"], s["tokens"], BITS, device=device) > 0.5
        labels = torch.randint(0, 1000, (b["ar"],), device=device)

        def ar() -> torch.Tensor:
            mask = sample_mask(b["ar"], s["tokens"], 0.7, 1.0, "uniform", device=device)
            return gen.loss(gen(bits, mask, gen.drop_labels(labels)), bits, mask, 0.01)[0]

        rows.append(bench_train("train_generator", gen, ar, b["ar"], args, device))
        del gen

    if want("sample"):
        gen = MaskedGenerator(**gen_cfg).to(device).eval()
        tok = tokenizer(s, device, refiner=True).eval()
        labels = torch.randint(0, 1000, (b["sample"],), device=device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

        @torch.no_grad()
        def sample_images() -> torch.Tensor:
            with autocast:
                out = sample(
                    gen,
                    labels,
                    **sampler_kwargs(SampleConfig(steps=s["ar_steps"], cfg_scale=6.0, top_p=0.75)),
                )
                return tok.decode(out.bits)

        seconds = timed(sample_images, max(1, args.steps // 2), device)
        rows.append(
            row(
                "sample_tokens_to_pixels",
                b["sample"] / seconds,
                "images/s",
                seconds,
                flops(sample_images),
                args,
                device,
            )
        )
        del gen, tok

    if want("ratios"):
        width, heads, n_img, n_tok = s["block"]
        ours = JointBlock(width, heads, 4.0, True, 2).to(device)
        from diffusers.models.attention import JointTransformerBlock

        theirs = JointTransformerBlock(
            width, heads, width // heads, context_pre_only=False, qk_norm="rms_norm"
        ).to(device)
        x = torch.randn(8, n_img, width, device=device, requires_grad=True)
        c = torch.randn(8, n_tok, width, device=device, requires_grad=True)
        temb = torch.randn(8, width, device=device)
        identity = (
            torch.ones(n_img, width // heads, device=device),
            torch.zeros(n_img, width // heads, device=device),
        )
        identity_c = (
            torch.ones(n_tok, width // heads, device=device),
            torch.zeros(n_tok, width // heads, device=device),
        )
        t_ours = timed(
            lambda: sum(o.sum() for o in ours([x, c], [identity, identity_c], None)).backward(),
            args.steps,
            device,
        )
        t_theirs = timed(lambda: sum(o.sum() for o in theirs(x, c, temb)).backward(), args.steps, device)
        rows.append(
            {
                "benchmark": "mmdit_block_ours_vs_diffusers",
                "value": t_theirs / t_ours,
                "unit": "x faster (diffusers time / ours)",
                "step_s": t_ours,
            }
        )
        u = F.normalize(torch.randn(4096, 16, device=device), dim=-1)
        t_fact = timed(lambda: factorized_entropy(u, 16**-0.5, 1.0, 1), args.steps, device)
        t_brute = timed(lambda: brute_force_entropy(u, 1.0), max(1, args.steps // 2), device)
        rows.append(
            {
                "benchmark": "bsq_entropy_factorised_vs_bruteforce_d16",
                "value": t_brute / t_fact,
                "unit": "x faster",
                "step_s": t_fact,
            }
        )

    out = Path(args.csv or Path(__file__).parent / f"results-{args.scale}-{args.device}.csv")
    keys = [
        "benchmark",
        "value",
        "unit",
        "step_s",
        "tflop_per_step",
        "achieved_tflops",
        "mfu",
        "peak_mem_gib",
    ]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"{'benchmark':44s} {'value':>12s}  unit                       step s   TFLOP/step  MFU    peak GiB"
    )
    for r in rows:
        print(
            f"{r['benchmark']:44s} {r['value']:12.2f}  {r['unit']:26s} {r.get('step_s', float('nan')):7.3f}  "
            f"{r.get('tflop_per_step', float('nan')):9.4f}  {r.get('mfu', float('nan')):5.3f}  "
            f"{r.get('peak_mem_gib', float('nan')):6.1f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

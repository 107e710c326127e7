"""Every number the paper reports in Tables 1–6 and 10–14 (arXiv 2603.16373), as data, and which of
our runs each row is reproduced by.

A `Row` with `recon` and/or `gen` set is reproduced by our pipeline: `recon = (tokenizer role, mode)`,
`gen = (generator role, setting)`. A role is a field of the config's `report.tokenizers` /
`report.generators`, which names the variant that plays it (semtok/report/spec.py resolves them), so a
row reads `metrics/recon/{variant}-{mode}.csv` or `metrics/gen/{variant}-{setting}.csv`
(semtok/paths.py) of whichever variant the config binds; Table 1's frozen-VAE row is the fixed
reference run `VAE`. A row with neither is *reported only*: another method's published number, copied
so that our rows can be read against it. `None` is the paper's "-".

Mapping decisions (also printed in each table's notes):
- Table 3 compares tokenizers under the same AR framework. We reproduce VQGAN with our 2D-grid
  tokenizer (generator role `grid2d`) and FlowMo-Lo with our 1D tokenizer trained without semantics
  (`no_semantics`); these are analogues of those tokenizers, not the tokenizers themselves.
- Table 4 lost its checkmarks in the text extraction. The rows are read in the usual ablation
  order: (neither), (contrastive only), (distillation only), (both). So the second row is our
  `no_distillation` role (contrastive kept) and the third our `no_contrastive` role (distillation kept).
  This is an assumption; swapping the two middle rows is the only other reading.
- Table 1's "SD3.5-VAE" row (recon = `VAE`, CSV variant `vae`, setting `frozen`) is ours only: the
  frozen VAE alone, the ceiling of our tokenizers, beside the paper's SD-VAE row.
- Table 12 "Only Fine-tuning" is our `finetune_only` role (Stage II from the SD3.5 init). The paper
  gives no budgets; ours are stated under the table, which marks its rows not comparable at equal
  budget while they saw different numbers of images.
- Table 14 "Confidence-based" is `ar_l` sampled with setting `order-confidence` (semtok.sampling.settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semtok.eval.records import VAE

Kind = Literal["recon", "gen"]


@dataclass(frozen=True)
class Column:
    """One metric column: `metric` is the CSV `metric` name, `kind` which CSV it comes from."""

    metric: str
    header: str
    kind: Kind
    better: Literal["lower", "higher"] | None = None
    decimals: int = 2
    count: bool = False  # a parameter count, shown as 318M / 1.2B
    optional: bool = False  # a missing metric shows "n/a" instead of failing


@dataclass(frozen=True)
class Row:
    label: str
    reported: dict[str, float | None]  # metric -> the paper's value (None: "-" in the paper)
    info: tuple[str, ...] = ()  # descriptive cells, one per `PaperTable.info`
    recon: tuple[str, str] | None = None  # (tokenizer role, mode), or the reference run VAE
    gen: tuple[str, str] | None = None  # (generator role, sampling setting)

    @property
    def ours(self) -> bool:
        return self.recon is not None or self.gen is not None

    def run(self, kind: Kind) -> tuple[str, str] | None:
        return self.recon if kind == "recon" else self.gen


@dataclass(frozen=True)
class PaperTable:
    name: str  # target name, e.g. "table4"
    caption: str  # the paper's caption
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    info: tuple[str, ...] = ()  # headers of the descriptive cells
    # str.format templates: "{tokenizers.<role>}" / "{generators.<role>}" name the variant of a role
    notes: tuple[str, ...] = field(default=())
    # the rows compare training strategies: the table states each tokenizer's training budget (images
    # seen) and marks the comparison not comparable at equal budget when the budgets differ
    budget: bool = False


def _rows(metrics: tuple[str, ...], n_info: int, data: list[tuple]) -> tuple[Row, ...]:
    """Rows from compact tuples: (label, *info, *values[, recon, gen])."""
    out = []
    for item in data:
        label, rest = item[0], item[1:]
        info, values, refs = (
            rest[:n_info],
            rest[n_info : n_info + len(metrics)],
            rest[n_info + len(metrics) :],
        )
        recon, gen = (tuple(refs) + (None, None))[:2]
        out.append(Row(label, dict(zip(metrics, values, strict=True)), tuple(info), recon, gen))
    return tuple(out)


RFID = Column("rFID", "rFID", "recon", "lower", 2)
PSNR = Column("PSNR", "PSNR", "recon", "higher", 2)
SSIM = Column("SSIM", "SSIM", "recon", "higher", 3)
LPIPS = Column("LPIPS", "LPIPS", "recon", "lower", 3)
BPP = Column("bpp", "Bits-per-pixel", "recon", None, 3)
GFID = Column("gFID", "gFID", "gen", "lower", 2)
IS = Column("IS", "IS", "gen", "higher", 1)
PRE = Column("Precision", "Pre", "gen", "higher", 2)
REC = Column("Recall", "Rec", "gen", "higher", 2)
PARAMS = Column("params", "Params", "gen", None, 0, count=True, optional=True)

RECON = (RFID, PSNR, SSIM, LPIPS)
GEN = (GFID, IS, PRE, REC)
ABLATION = (RFID, PSNR, GFID, IS)


def _metrics(columns: tuple[Column, ...]) -> tuple[str, ...]:
    return tuple(c.metric for c in columns)


SEMTOK = ("semtok", "refiner")
AR_L = ("ar_l", "main")
_ = None  # the paper's "-"
M, B = 1e6, 1e9

TABLE1 = PaperTable(
    "table1",
    "Reconstruction results of SOTA tokenizers on ImageNet (256×256). *: a continuous tokenizer "
    "trained on OpenImages. -re: rejection sampling.",
    (BPP, *RECON),
    _rows(
        _metrics((BPP, *RECON)),
        4,
        [
            ("Taming VQ-GAN-re", "2D", "VQ", "16×16", "2^14", 0.055, 4.98, _, _, _),
            ("LlamaGen-16", "2D", "VQ", "16×16", "2^14", 0.055, 2.19, 20.67, 0.589, 0.132),
            ("MaskBiT", "2D", "LFQ", "16×16", "2^14", 0.055, 1.37, 21.50, 0.560, _),
            ("Cosmos DI-16x16", "2D", "FSQ", "16×16", "≈2^16", 0.062, 4.40, 19.98, 0.536, 0.153),
            ("OpenMagViT-V2", "2D", "LFQ", "16×16", "2^18", 0.070, 1.17, 21.63, 0.640, 0.111),
            ("VAR", "2D", "VQ", "680", "2^12", 0.125, 0.99, 22.12, 0.624, 0.109),
            ("RQ-VAE", "2D", "VQ", "8×8×4", "2^14", 0.055, 3.20, _, _, _),
            ("ViT-VQGAN", "2D", "VQ", "32×32", "2^13", 0.203, 1.28, _, _, _),
            ("SD-VAE*", "2D", "KL", "32×32", "-", 1.000, 1.35, 21.99, 0.628, 0.098),
            ("SD3.5-VAE (frozen; our ceiling)", "2D", "KL", "32×32", "-", _, _, _, _, _, VAE),
            ("TiTok-L-32", "1D", "VQ", "32", "2^12", 0.006, 2.21, 15.60, 0.359, 0.322),
            ("TiTok-B-64", "1D", "VQ", "64", "2^12", 0.012, 1.70, 16.80, 0.407, 0.252),
            ("TiTok-S-128", "1D", "VQ", "128", "2^12", 0.023, 1.71, 17.52, 0.437, 0.210),
            ("FlexTok", "1D", "FSQ", "256", "64,000", 0.062, 1.45, 18.53, 0.465, 0.222),
            ("FlowMo-Lo", "1D", "LFQ", "256", "2^18", 0.070, 0.95, 22.07, 0.649, 0.113),
            ("SemTok (Ours)", "1D", "BSQ", "256", "2^18", 0.070, 0.88, 22.19, 0.639, 0.128, SEMTOK),
            (
                "SemTok (Ours)",
                "1D",
                "BSQ",
                "256",
                "2^32",
                0.125,
                0.67,
                23.05,
                0.684,
                0.100,
                ("semtok_b32", "refiner"),
            ),
        ],
    ),
    info=("Type", "Quant", "Token", "Codebook"),
    notes=(
        "Bits-per-pixel = d·K/(H·W); our value is the run's bpp metric, or d, K and H·W of the config "
        "when the CSV has none. Token and Codebook are the paper's; our K, d and resolution are listed "
        "under Runs.",
        "SD3.5-VAE is our frozen VAE alone (encode → decode of the validation images), the ceiling our "
        "tokenizers decode towards; its bits-per-pixel count the fp16 latent (16·C·h·w/(H·W)), as the "
        "paper's 1.000 for SD-VAE does. The paper reports no number for this VAE.",
    ),
)

TABLE2 = PaperTable(
    "table2",
    "Generation results with other methods on ImageNet (256×256). *: generating images at "
    "384×384 and resizing back to 256×256.",
    (PARAMS, *GEN),
    _rows(
        _metrics((PARAMS, *GEN)),
        1,
        [
            ("BigGAN", "GAN", 112 * M, 6.95, 224.5, 0.89, 0.38),
            ("GigaGAN", "GAN", 569 * M, 3.45, 225.5, 0.84, 0.61),
            ("LDM-4-G", "Diff.", 400 * M, 3.60, 247.7, _, _),
            ("DiT-L/2", "Diff.", 458 * M, 5.02, 167.2, 0.75, 0.57),
            ("DiT-XL/2", "Diff.", 675 * M, 2.27, 278.2, 0.83, 0.57),
            ("VDM++", "Diff.", 2.0 * B, 2.12, 267.7, _, _),
            ("VQGAN", "AR", 1.4 * B, 15.78, 78.3, _, _),
            ("RQ-Tran.", "AR", 3.8 * B, 3.80, 323.7, _, _),
            ("ViTVQ", "AR", 1.7 * B, 4.17, 175.1, _, _),
            ("LlamaGen-L", "AR", 343 * M, 3.07, 256.1, 0.83, 0.52),
            ("LlamaGen-XL", "AR", 775 * M, 2.62, 244.1, 0.80, 0.57),
            ("LlamaGen-XXL", "AR", 1.4 * B, 2.34, 253.9, 0.80, 0.59),
            ("LlamaGen-3B", "AR", 3.1 * B, 2.18, 263.3, 0.81, 0.58),
            ("RandAR-L", "AR", 343 * M, 2.55, 288.8, 0.81, 0.58),
            ("RandAR-XL", "AR", 775 * M, 2.25, 317.8, 0.80, 0.60),
            ("RandAR-XXL", "AR", 1.4 * B, 2.15, 322.0, 0.79, 0.62),
            ("Open-MAGVIT2-B", "AR", 343 * M, 3.08, 258.3, 0.85, 0.51),
            ("Open-MAGVIT2-L", "AR", 804 * M, 2.51, 271.7, 0.84, 0.54),
            ("Open-MAGVIT2-XL", "AR", 1.5 * B, 2.33, 271.8, 0.84, 0.54),
            ("VAR-d16", "AR", 310 * M, 3.30, 274.4, 0.84, 0.51),
            ("VAR-d20", "AR", 600 * M, 2.57, 302.6, 0.83, 0.56),
            ("VAR-d24", "AR", 1.0 * B, 2.09, 312.9, 0.82, 0.59),
            ("MAGE", "AR", 230 * M, 6.93, 195.8, _, _),
            ("MaskGIT", "AR", 227 * M, 6.18, 182.1, 0.80, 0.51),
            ("FlowMo-Lo", "AR", 397 * M, 4.30, 274.0, 0.86, 0.47),
            ("SemTok-AR-L (Ours)", "AR", 318 * M, 2.77, 293.1, 0.78, 0.60, None, AR_L),
            ("SemTok-AR-XL (Ours)", "AR", 746 * M, 2.54, 305.6, 0.78, 0.60, None, ("ar_xl", "main")),
            ("SemTok-AR-XXL (Ours)", "AR", 1.2 * B, 2.34, 310.5, 0.77, 0.63, None, ("ar_xxl", "main")),
        ],
    ),
    info=("Type",),
    notes=("Our Params come from the generator CSV's params metric; n/a when the CSV has none.",),
)

TABLE3 = PaperTable(
    "table3",
    "Generation results of different tokenizers on ImageNet (256×256).",
    GEN,
    _rows(
        _metrics(GEN),
        1,
        [
            ("VQGAN", "2D", 4.62, 254.1, 0.84, 0.49, None, ("grid2d", "main")),
            ("FlowMo-Lo", "1D", 6.68, 280.4, 0.82, 0.45, None, ("no_semantics", "main")),
            ("SemTok (Ours)", "1D", 2.77, 293.1, 0.78, 0.60, None, AR_L),
        ],
    ),
    info=("Type",),
    notes=(
        "Reproduced by analogues in the same AR-L framework: VQGAN = our 2D-grid tokenizer "
        "({generators.grid2d}), FlowMo-Lo = our 1D tokenizer without semantic constraint "
        "({generators.no_semantics}).",
    ),
)

TABLE4 = PaperTable(
    "table4",
    "Ablation on the Semantic Alignment Constraint.",
    ABLATION,
    _rows(
        _metrics(ABLATION),
        2,
        [
            (
                "none",
                "✗",
                "✗",
                1.08,
                21.74,
                3.83,
                271.4,
                ("no_semantics", "refiner"),
                ("no_semantics", "main"),
            ),
            (
                "contrastive only",
                "✓",
                "✗",
                0.97,
                21.86,
                2.87,
                276.8,
                ("no_distillation", "refiner"),
                ("no_distillation", "main"),
            ),
            (
                "distillation only",
                "✗",
                "✓",
                1.02,
                21.79,
                3.55,
                264.9,
                ("no_contrastive", "refiner"),
                ("no_contrastive", "main"),
            ),
            ("both", "✓", "✓", 0.88, 22.19, 2.77, 293.1, SEMTOK, AR_L),
        ],
    ),
    info=("Contrastive", "Distill"),
    notes=(
        "The paper's checkmarks are lost in its text; rows are assumed in the usual ablation order "
        "(✗✗, ✓✗, ✗✓, ✓✓): row 2 = contrastive only (our {tokenizers.no_distillation}), row 3 = "
        "distillation only (our {tokenizers.no_contrastive}).",
    ),
)

TABLE5 = PaperTable(
    "table5",
    "Ablation on the Masked Autoregressive Modeling vs. Next-token Prediction.",
    ABLATION,
    _rows(
        _metrics(ABLATION),
        0,
        [
            ("Raster", 1.22, 21.07, 3.08, 269.9, ("raster", "refiner"), ("raster", "main")),
            ("Global", 0.88, 22.19, 2.77, 293.1, SEMTOK, AR_L),
        ],
    ),
)

TABLE6 = PaperTable(
    "table6",
    "Ablation on the Two-stage Training Strategy.",
    RECON,
    _rows(
        _metrics(RECON),
        1,
        [
            ("Diffusion", "2^18", 1.31, 20.48, 0.580, 0.177, ("semtok", "diffusion")),
            ("Refiner", "2^18", 0.88, 22.19, 0.639, 0.128, SEMTOK),
            ("Diffusion", "2^32", 1.03, 21.43, 0.633, 0.145, ("semtok_b32", "diffusion")),
            ("Refiner", "2^32", 0.67, 23.05, 0.684, 0.100, ("semtok_b32", "refiner")),
        ],
    ),
    info=("Codebook",),
)

TABLE10 = PaperTable(
    "table10",
    "Ablation on the Quantizer.",
    RECON,
    _rows(
        _metrics(RECON),
        0,
        [
            ("LFQ", 1.32, 20.78, 0.564, 0.163, ("lfq", "refiner")),
            ("BSQ", 0.88, 22.19, 0.639, 0.128, SEMTOK),
        ],
    ),
)

TABLE11 = PaperTable(
    "table11",
    "Ablation on the Perceptual Loss.",
    RECON,
    _rows(
        _metrics(RECON),
        0,
        [
            ("LPIPS", 1.13, 22.73, 0.649, 0.133, ("lpips_only", "refiner")),
            ("ResNet", 0.89, 22.02, 0.622, 0.133, ("resnet_only", "refiner")),
            ("LPIPS + ResNet", 0.88, 22.19, 0.639, 0.128, SEMTOK),
        ],
    ),
)

TABLE12 = PaperTable(
    "table12",
    "Ablation on the Generative Training Strategy.",
    RECON,
    _rows(
        _metrics(RECON),
        0,
        [
            ("Only Fine-tuning", 1.80, 20.54, 0.556, 0.177, ("finetune_only", "refiner")),
            ("Pre-training & Fine-tuning", 0.88, 22.19, 0.639, 0.128, SEMTOK),
        ],
    ),
    budget=True,
)

TABLE13 = PaperTable(
    "table13",
    "Ablation on the Bitwise Classifier.",
    GEN,
    _rows(
        _metrics(GEN),
        0,
        [
            ("2", 4.77, 251.4, 0.76, 0.48, None, ("groups2", "main")),
            ("18 (Bitwise)", 2.77, 293.1, 0.78, 0.60, None, AR_L),
        ],
    ),
)

TABLE14 = PaperTable(
    "table14",
    "Ablation on the Sampling Strategy.",
    GEN,
    _rows(
        _metrics(GEN),
        0,
        [
            ("Confidence-based", 3.60, 246.8, 0.74, 0.62, None, ("ar_l", "order-confidence")),
            ("Random", 2.77, 293.1, 0.78, 0.60, None, AR_L),
        ],
    ),
)

TABLES: dict[str, PaperTable] = {
    t.name: t
    for t in (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE10, TABLE11, TABLE12, TABLE13, TABLE14)
}

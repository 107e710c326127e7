"""Which of our numbers were measured the way the paper measured its own.

A difference ours − paper means something only when both numbers share the metric's definition,
feature extractor, reference and sample count: a stand-in classifier's rFID on 200 synthetic images
minus an Inception rFID on 50,000 ImageNet images is not a difference anyone should read. `PAPER`
spells out the paper's protocol of every metric it reports (SPEC §5: 50k ImageNet validation images
for reconstruction, 50k samples against ADM's reference batch for generation, torch-fidelity's
Inception, LPIPS with AlexNet) and, for a tokenizer's reconstructions, how its codes were decoded
(`PAPER_DECODER_STEPS`: one step of the refiner, 25 Euler steps of the Stage I flow sampler, §A.1);
`not_comparable` compares a metric CSV's protocol with it field by field (semtok.eval.records).
Metrics defined by the configuration alone (bits per pixel, parameter counts) are always comparable.
"""

from __future__ import annotations

from semtok.eval.records import PSNR_DEFINITION, SSIM_DEFINITION, parse_protocol

PAPER_SAMPLES = "50000"
INCEPTION = "inception-v3-compat"
ADM_BATCH = "VIRTUAL_imagenet256_labeled.npz"
IMAGENET_VAL = "imagenet-val-256px"

_RECON = {"data": IMAGENET_VAL, "n": PAPER_SAMPLES}
_PR = {"fid": INCEPTION, "ref": ADM_BATCH, "k": "3", "n": PAPER_SAMPLES}
PAPER: dict[str, dict[str, str]] = {
    "rFID": {"fid": INCEPTION, "ref": f"val-images({PAPER_SAMPLES})", **_RECON},
    "PSNR": {"definition": PSNR_DEFINITION, **_RECON},
    "SSIM": {"definition": SSIM_DEFINITION, **_RECON},
    "LPIPS": {"net": "lpips-alex", **_RECON},
    "gFID": {"fid": INCEPTION, "ref": ADM_BATCH, "n": PAPER_SAMPLES},
    "IS": {"fid": INCEPTION, "splits": "10", "n": PAPER_SAMPLES},
    "Precision": _PR,
    "Recall": _PR,
}
# Decoder forward passes of the paper's reconstructions, by recon setting (semtok.eval.recon.decoding_fields)
PAPER_DECODER_STEPS = {"refiner": "1", "diffusion": "25"}
FIELD_NAMES = {
    "steps": "decoder steps",
    "fid": "feature extractor",
    "ref": "reference",
    "n": "samples",
    "data": "images",
    "definition": "definition",
    "net": "LPIPS network",
    "splits": "splits",
    "k": "k",
}


def paper_protocol(metric: str, setting: str = "") -> dict[str, str] | None:
    """The fields of the paper's protocol for `metric` of a run with `setting` (a recon mode or a
    sampling setting): `PAPER`'s, plus the decoder's steps for a tokenizer's reconstruction metrics;
    None for a metric the protocol does not constrain."""
    expected = PAPER.get(metric)
    if expected is not None and "data" in expected and setting in PAPER_DECODER_STEPS:
        return {**expected, "steps": PAPER_DECODER_STEPS[setting]}
    return expected


def not_comparable(metric: str, protocol: str, setting: str = "") -> str | None:
    """Why `metric` of a run with `setting`, measured under `protocol`, cannot be compared with the
    paper's number; None when it can. The extractor is compared by name (its weights' digest is
    recorded, not checked)."""
    expected = paper_protocol(metric, setting)
    if expected is None:
        return None
    got = parse_protocol(protocol)
    differences = []
    for key, want in expected.items():
        have = got.get(key, "")
        if key == "fid":
            have = have.split(":")[0]
        if have != want:
            differences.append(f"{FIELD_NAMES[key]} {have or 'not recorded'} (paper: {want})")
    return "; ".join(differences) or None

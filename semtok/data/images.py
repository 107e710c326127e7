"""Image decoding and preprocessing shared by sharding, encoding and loading (SPEC §1).

`center_crop_arr` follows ADM's convention (also used by LlamaGen and MAR): halve the image with a
BOX filter while its short side is at least twice the target, resize the short side to the target
with BICUBIC, then crop the centre.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# ImageNet's channel statistics, the input normalisation of every ImageNet classifier (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The format a file's name promises; anything else found in its bytes is recorded as a conversion.
EXPECTED_FORMAT = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}
IMAGE_SUFFIXES = frozenset(EXPECTED_FORMAT)
# Integer modes with more than 8 bits (16-bit grey PNG opens as I;16, older Pillow gave I): their full
# scale is 65535, which PIL's convert("RGB") would clip at 255 (mid-grey comes out white).
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class UnreadableImage(ValueError):
    """The bytes are empty, truncated or not an image: `reason` is a short category, `detail` the decoder's words."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class DecodedImage:
    image: Image.Image  # RGB
    conversions: list[str] = field(default_factory=list)  # what had to change to make it RGB


def decode_any(data: bytes, name: str) -> DecodedImage:
    """Decode an image by its content (not its file name) into RGB.

    Records PNG (or other) data behind a .JPEG name and any mode conversion (grayscale, CMYK,
    palette, alpha). Raises UnreadableImage for empty, truncated or corrupt data.
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes fully: truncation surfaces here, not later
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for bad data
        reason = "truncated image data" if "truncated" in str(err) else "undecodable image data"
        raise UnreadableImage(reason, f"{type(err).__name__}: {err}") from None
    conversions = []
    expected = EXPECTED_FORMAT.get(Path(name).suffix.lower())
    if expected is not None and image.format != expected:
        conversions.append(f"{image.format} data in a {Path(name).suffix} file")
    if image.mode in HIGH_BIT_MODES:
        conversions.append(f"mode {image.mode} -> RGB (16-bit scaled to 8-bit)")
        image = to_8bit(image).convert("RGB")
    elif image.mode != "RGB":
        conversions.append(f"mode {image.mode} -> RGB")
        if image.mode in ("P", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
        image = image.convert("RGB")
    return DecodedImage(image, conversions)


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (HIGH_BIT_MODES, full scale 65535) → 8-bit grey, value v → round(v / 257)."""
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM's center_crop_arr: BOX-halve while short side >= 2*size, BICUBIC to short side = size, crop."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """JPEG bytes of a shard → (H, W, 3) uint8."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def to_model_range(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (B, H, W, 3) (or a list of (H, W, 3)) → float32 (B, 3, H, W) in [-1, 1]."""
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images))
    return batch.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (x − mean) / std with ImageNet's channel statistics."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] → (B, H, W, 3) uint8, each value rounded to the nearest level (ADM's
    sample format; the one conversion of every image the pipeline writes or measures). Images in the
    model range [-1, 1] go in as (x + 1) / 2."""
    return (images.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

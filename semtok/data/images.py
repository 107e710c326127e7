"""Image decoding and preprocessing shared by sharding, encoding and loading (SPEC §1).

`center_crop_arr` follows ADM's convention (also used by LlamaGen and MAR): halve the image with a
BOX filter while its short side is at least twice the target, resize the short side to the target
with BICUBIC, then crop the centre.

Decoding takes an image as a viewer shows it: its EXIF orientation applied, the first frame of an
animation; both are recorded among its conversions. Memory is bounded by what preprocessing will
produce: an image whose resize before the crop would exceed `MAX_RESIZE_AREA` output images (a 1×30000
px strip is 256 × 7,680,000 px at 256 px: 5.9 GB), or whose source exceeds PIL's decompression-bomb
limit, is rejected before its pixels are decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# ImageNet's channel statistics, the input normalisation of every ImageNet classifier (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The format a file's name promises; anything else found in its bytes is recorded as a conversion.
EXPECTED_FORMAT = {".jpeg": "JPEG", ".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}
IMAGE_SUFFIXES = frozenset(EXPECTED_FORMAT)
# Integer modes with more than 8 bits (16-bit grey PNG opens as I;16, older Pillow gave I): their full
# scale is 65535, which PIL's convert("RGB") would clip at 255 (mid-grey comes out white).
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# The most pixels, in output images (size × size), of the image the centre crop resizes before cutting it:
# an aspect ratio of up to 64:1 after ADM's halving (ImageNet's widest panoramas are far below).
MAX_RESIZE_AREA = 64
EXIF_ORIENTATION = 0x0112


class RejectedImage(ValueError):
    """An image file that cannot be used: `reason` is a short category (the manifest's), `detail` the
    specifics (the decoder's words, the sizes)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class UnreadableImage(RejectedImage):
    """The bytes are empty, truncated or not an image."""


@dataclass
class DecodedImage:
    image: Image.Image  # RGB
    conversions: list[str] = field(default_factory=list)  # what had to change to make it RGB


def decode_any(data: bytes, name: str, size: int | None = None) -> DecodedImage:
    """Decode an image by its content (not its file name) into RGB, as a viewer shows it.

    Records PNG (or other) data behind a .JPEG name, any mode conversion (grayscale, CMYK, palette,
    alpha), an EXIF orientation applied and the frames of an animation left out. Raises UnreadableImage
    for empty, truncated or corrupt data, and RejectedImage, before decoding the pixels, for an image
    beyond PIL's decompression-bomb limit or, given the crop `size`, too elongated (`check_resize`).
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise RejectedImage("too many pixels", str(err)) from None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for bad data
        raise _unreadable(err) from None
    if size is not None:
        check_resize(image.size, size)
    conversions = []
    try:
        frames = getattr(image, "n_frames", 1)
        image.load()  # decodes fully: truncation surfaces here, not later
    except Exception as err:
        raise _unreadable(err) from None
    if frames > 1:
        conversions.append(f"first of {frames} frames kept")
    expected = EXPECTED_FORMAT.get(Path(name).suffix.lower())
    if expected is not None and image.format != expected:
        conversions.append(f"{image.format} data in a {Path(name).suffix} file")
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as err:  # damaged EXIF: the pixels are still fine
        orientation = 1
        conversions.append(f"EXIF unreadable ({type(err).__name__}), no orientation applied")
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(image)
        conversions.append(f"EXIF orientation {orientation} applied")
    if image.mode in HIGH_BIT_MODES:
        conversions.append(f"mode {image.mode} -> RGB (16-bit scaled to 8-bit)")
        image = to_8bit(image).convert("RGB")
    elif image.mode != "RGB":
        conversions.append(f"mode {image.mode} -> RGB")
        if image.mode in ("P", "LA", "PA") or "transparency" in image.info:
            image = image.convert("RGBA")
        image = image.convert("RGB")
    return DecodedImage(image, conversions)


def _unreadable(err: Exception) -> UnreadableImage:
    reason = "truncated image data" if "truncated" in str(err) else "undecodable image data"
    return UnreadableImage(reason, f"{type(err).__name__}: {err}")


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (HIGH_BIT_MODES, full scale 65535) → 8-bit grey, value v → round(v / 257)."""
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")


def crop_plan(width: int, height: int, size: int) -> tuple[int, tuple[int, int]]:
    """What `center_crop_arr` does to a width×height image: the number of BOX halvings, then the size
    it resizes to (short side = size) before cutting the centre."""
    halvings = 0
    while min(width, height) >= 2 * size:
        width, height, halvings = width // 2, height // 2, halvings + 1
    scale = size / min(width, height)
    return halvings, (round(width * scale), round(height * scale))


def check_resize(source: tuple[int, int], size: int) -> None:
    """RejectedImage unless the centre crop of a `source` (width, height) image to `size` resizes it to at
    most MAX_RESIZE_AREA · size² pixels."""
    _, (width, height) = crop_plan(*source, size)
    if width * height > MAX_RESIZE_AREA * size * size:
        raise RejectedImage(
            "too elongated to preprocess",
            f"{source[0]}×{source[1]} px: its centre crop to {size} px would resize it to {width}×{height} px, "
            f"more than {MAX_RESIZE_AREA}·{size}² px (aspect ratio above {MAX_RESIZE_AREA}:1)",
        )


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM's center_crop_arr: BOX-halve while short side >= 2*size, BICUBIC to short side = size, crop."""
    halvings, resized = crop_plan(*image.size, size)
    for _ in range(halvings):
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    image = image.resize(resized, resample=Image.BICUBIC)
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

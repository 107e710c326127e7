"""Webdataset shards (SPEC §1): one image shard and its manifest, and the tar reader and writer that
every shard set (images, latents, SigLIP features, tokens) shares.

A sample is `{"__key__": key, "<ext>": bytes, ...}`; its members are `<key>.<ext>` in sorted
extension order (entries starting with "__" are not members: `read_shard` adds `__url__`, the shard
path). Tars are POSIX pax archives, so member names of any length are fine; byte-reproducible (fixed
mtime, owner and mode) and written atomically (`<name>.tmp`, then os.replace). Reading checks the
end-of-archive marker, so a shard cut at a member boundary is reported as truncated instead of
silently yielding fewer samples. Members are decoded through `decode_member`, so a damaged member
(bit rot, a broken .npy header) raises CorruptSampleError naming the shard, the key and the member.

Every listed image ends up either in the shard (`written`, possibly `converted` to RGB, with what
was converted) or in the manifest's `rejected` list with the reason; nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from semtok.data.imagenet import IndexRow
from semtok.data.images import RejectedImage, center_crop_arr, decode_any, encode_jpeg
from semtok.utils.io import atomic_path
from semtok.utils.progress import progress

Sample = dict[str, Any]  # "__key__": str, every other entry: bytes


class CorruptShardError(RuntimeError):
    """A shard cannot be read to its end; the message names the shard."""

    def __init__(self, path: Path | str, reason: str = "") -> None:
        super().__init__(
            f"{path}: {reason}" if reason else str(path)
        )  # one argument: re-raised from a worker
        self.path = path


class CorruptSampleError(CorruptShardError):
    """A member of one sample cannot be decoded; the message names the shard, the key and the member."""

    def __init__(self, path: Path | str, reason: str = "", key: str | None = None) -> None:
        super().__init__(path, reason)
        self.key = key


T = TypeVar("T")


def sample_url(sample: Sample, member: str) -> str:
    """The shard that `member` of `sample` was read from (`__url__`: a path, or {member: path})."""
    url = sample.get("__url__", "<unknown shard>")
    return url.get(member, "<unknown shard>") if isinstance(url, dict) else url


def decode_member(sample: Sample, member: str, decode: Callable[[bytes], T]) -> T:
    """decode(sample[member]); a missing or undecodable member raises CorruptSampleError naming the
    shard, the key and the member."""
    key = sample.get("__key__")
    if member not in sample:
        members = sorted(m for m in sample if not m.startswith("__"))
        reason = f"sample {key!r} has no member {member!r} (it has {members})"
        raise CorruptSampleError(sample_url(sample, member), reason, key)
    try:
        return decode(sample[member])
    except Exception as err:  # numpy, PIL and int() raise many types for damaged bytes
        reason = f"sample {key!r}, member {member!r}: cannot decode ({type(err).__name__}: {err})"
        raise CorruptSampleError(sample_url(sample, member), reason, key) from err


# Parsed .npy headers (dtype, shape, Fortran order) by their bytes: a shard's members share a handful of
# headers, and numpy's parser (a Python literal_eval per member) was half of the tiny default's
# Stage I data loading.
_npy_headers: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}
_NPY_MAGIC = b"\x93NUMPY"


def _npy_fast(data: bytes) -> np.ndarray | None:
    """The array of a well-formed .npy of a plain dtype, its header parsed once per distinct header;
    None for anything else (np.load then reads it, or names what is wrong)."""
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        return None
    if data[6] == 1:
        start, size = 10, int.from_bytes(data[8:10], "little")
    elif data[6] == 2 and len(data) >= 12:
        start, size = 12, int.from_bytes(data[8:12], "little")
    else:
        return None
    header = data[: start + size]
    parsed = _npy_headers.get(header)
    if parsed is None:
        try:
            stream = io.BytesIO(data)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            reader = read.get(np.lib.format.read_magic(stream))
            if reader is None:
                return None
            shape, fortran, dtype = reader(stream)
        except (ValueError, SyntaxError, TypeError):
            return None
        if dtype.hasobject or stream.tell() != len(header):
            return None
        parsed = dtype, tuple(shape), bool(fortran)
        if len(_npy_headers) < 256:
            _npy_headers[header] = parsed
    dtype, shape, fortran = parsed
    count = math.prod(shape)
    if len(data) - len(header) != count * dtype.itemsize:
        return None
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=len(header))
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


def npy_array(data: bytes) -> np.ndarray:
    """A .npy member → its array (never unpickled); floating arrays must be finite."""
    array = _npy_fast(data)
    if array is None:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{int((~np.isfinite(array)).sum())} non-finite values")
    return array


def class_label(data: bytes) -> int:
    """A `cls` member (ASCII digits) → the class index."""
    if not data.isdigit():
        raise ValueError(f"not a class index: {data[:20]!r}")
    return int(data)


def write_shard(path: Path, samples: Iterable[Sample]) -> list[str]:
    """Write samples (in the given order) to a reproducible tar, atomically; returns the keys."""
    keys = []
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext in sorted(k for k in sample if not k.startswith("__")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                data = sample[ext]
                info.size = len(data)
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o444, 0, 0, "", ""
                try:
                    tar.addfile(info, io.BytesIO(data))
                except (ValueError, TypeError, tarfile.TarError) as err:
                    raise ValueError(
                        f"{path}: cannot write member {info.name!r} of sample {key!r}: {err}"
                    ) from err
            keys.append(key)
    return keys


# Small shards read again within one process (every pass of a training job over a small dataset) are
# served from memory: parsing the tar was 57 % of the tiny default's Stage I data loading.
SHARD_CACHE_BYTES = 256 << 20  # all cached shards together
SHARD_CACHE_MAX_FILE = 64 << 20  # larger shards (ImageNet's) are always streamed from disk
_shard_cache: OrderedDict[tuple[str, int, int, int], list[Sample]] = OrderedDict()


def read_shard(path: Path | str) -> Iterator[Sample]:
    """Samples of a tar in file order. Raises CorruptShardError naming `path` if it is unreadable,
    truncated (also at a member boundary) or has members that are not `<key>.<ext>` files.

    A shard of at most SHARD_CACHE_MAX_FILE bytes that was read to its end is kept in memory (least
    recently used first out, SHARD_CACHE_BYTES in all) and served from there while its path, size,
    inode and mtime stay the same; every sample is a fresh dict."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise CorruptShardError(path, f"unreadable shard ({type(err).__name__}: {err})") from err
    key = (str(path.absolute()), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    if key in _shard_cache:
        _shard_cache.move_to_end(key)
        yield from (dict(sample) for sample in _shard_cache[key])
        return
    kept: list[Sample] | None = [] if stat.st_size <= SHARD_CACHE_MAX_FILE else None
    for sample in _read_tar(path, stat.st_size):
        if kept is not None:
            kept.append(sample)
        yield dict(sample)
    if kept is not None:
        _shard_cache[key] = kept
        while sum(k[1] for k in _shard_cache) > SHARD_CACHE_BYTES:
            _shard_cache.popitem(last=False)


def _read_tar(path: Path, size: int) -> Iterator[Sample]:
    try:
        with tarfile.open(path, "r:") as tar:
            sample: Sample = {}
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or "." not in name:
                    raise CorruptShardError(path, f"unexpected member {member.name!r}")
                key, ext = name.split(".", 1)
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample["__key__"], sample["__url__"] = key, str(path)
                sample[ext] = tar.extractfile(member).read()
                if len(sample[ext]) != member.size:
                    raise CorruptShardError(path, f"truncated in {member.name}")
            end = tar.offset
            with open(path, "rb") as f:
                f.seek(end)
                if size - end < 2 * tarfile.BLOCKSIZE or f.read(2 * tarfile.BLOCKSIZE).strip(b"\0"):
                    raise CorruptShardError(path, "truncated (no end-of-archive marker)")
            if sample:
                yield sample
    except (tarfile.TarError, OSError, EOFError) as err:
        raise CorruptShardError(path, f"unreadable shard ({type(err).__name__}: {err})") from err


# ---------------------------------------------------------------------------------------------
# Image shards


def image_sample(row: IndexRow, resolution: int, quality: int) -> tuple[Sample | None, dict[str, Any] | None]:
    """(sample, None) for a usable image, or (None, rejection record). The sample carries the list of
    conversions it needed under "__converted__" (not written to the tar)."""
    if row.rejected:
        return None, {"key": row.key, "path": row.path, "cls": row.cls, "reason": row.rejected, "detail": ""}
    try:
        decoded = decode_any(Path(row.path).read_bytes(), row.path, resolution)
    except OSError as err:
        return None, {
            "key": row.key,
            "path": row.path,
            "cls": row.cls,
            "reason": "cannot read file",
            "detail": str(err),
        }
    except RejectedImage as err:
        return None, {
            "key": row.key,
            "path": row.path,
            "cls": row.cls,
            "reason": err.reason,
            "detail": err.detail,
        }
    jpg = encode_jpeg(center_crop_arr(decoded.image, resolution), quality)
    return {
        "__key__": row.key,
        "jpg": jpg,
        "cls": str(row.cls).encode(),
        "__converted__": decoded.conversions,
    }, None


def write_image_shard(
    rows: list[IndexRow], output: Path, *, resolution: int, quality: int, desc: str = "shard"
) -> dict[str, Any]:
    """Preprocess `rows` (in order) into one image shard; returns the manifest."""
    converted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    classes: Counter[int] = Counter()

    def samples() -> Iterator[Sample]:
        for row in progress(rows, desc=desc, unit="img", mininterval=5.0):
            sample, rejection = image_sample(row, resolution, quality)
            if rejection is not None:
                rejected.append(rejection)
                continue
            reasons = sample.pop("__converted__")
            if reasons:
                converted.append({"key": row.key, "path": row.path, "cls": row.cls, "reasons": reasons})
            classes[row.cls] += 1
            yield sample

    keys = write_shard(output, samples())
    return {
        "shard": str(output),
        "resolution": resolution,
        "jpeg_quality": quality,
        "counts": {
            "listed": len(rows),
            "written": len(keys),
            "converted": len(converted),
            "rejected": len(rejected),
        },
        "classes": {str(c): classes[c] for c in sorted(classes)},
        "converted": converted,
        "rejected": rejected,
    }


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")

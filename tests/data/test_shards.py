import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from semtok import paths
from semtok.cli import main as cli
from semtok.data import imagenet, shards, synthetic
from semtok.data.images import center_crop_arr, decode_any, decode_rgb
from semtok.data.shards import npy_array


def _jpeg(mode: str, size=(50, 40), color=None, fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def dataset(cfg):
    root = paths.synthetic_root(cfg.out)
    synthetic.write_dataset(cfg.data.synthetic, root)
    return root


def _shard_all(cfg, split):
    rows, _ = imagenet.build_index(cfg, split)
    count = rows[-1].shard + 1
    manifests = [
        shards.write_image_shard(
            [r for r in rows if r.shard == i], paths.image_shard(cfg.out, split, i), resolution=32, quality=95
        )
        for i in range(count)
    ]
    return rows, manifests


def test_round_trip_every_image_once_with_its_class(cfg, dataset):
    rows, manifests = _shard_all(cfg, "train")
    seen = {}
    for i in range(2):
        for sample in shards.read_shard(paths.image_shard(cfg.out, "train", i)):
            assert sample["__key__"] not in seen
            seen[sample["__key__"]] = int(sample["cls"])
            assert set(sample) == {"__key__", "__url__", "jpg", "cls"}
            assert sample["__url__"] == str(paths.image_shard(cfg.out, "train", i))
            assert decode_rgb(sample["jpg"]).shape == (32, 32, 3)
    assert seen == {r.key: r.cls for r in rows}
    per_class = {}
    for m in manifests:
        assert m["counts"]["written"] == m["counts"]["listed"] and m["counts"]["rejected"] == 0
        for c, n in m["classes"].items():
            per_class[int(c)] = per_class.get(int(c), 0) + n
    assert per_class == {c: 6 for c in range(4)}


def test_shards_are_byte_reproducible_and_keys_sorted(cfg, dataset, tmp_path):
    rows, _ = imagenet.build_index(cfg, "val")
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    for out in (first, second):
        shards.write_image_shard(rows, out, resolution=32, quality=95)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}
    keys = [s["__key__"] for s in shards.read_shard(first)]
    assert keys == sorted(keys) == [r.key for r in rows]
    assert not list(tmp_path.glob("*.tmp"))


def test_center_crop_follows_adm(monkeypatch):
    # 280x140, target 32: BOX-halve twice (min side 140 >= 64, 70 >= 64) to 70x35, bicubic to 64x32,
    # crop columns 16..48: red | blue, mirror-symmetric about the image centre.
    wide = np.zeros((140, 280, 3), np.uint8)
    wide[:, :140] = (255, 0, 0)
    wide[:, 140:] = (0, 0, 255)
    calls = []
    resize = Image.Image.resize

    def recording_resize(self, size, resample=None, **kw):
        calls.append((tuple(size), resample))
        return resize(self, size, resample=resample, **kw)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    out = np.asarray(center_crop_arr(Image.fromarray(wide), 32)).astype(int)
    assert calls == [((140, 70), Image.BOX), ((70, 35), Image.BOX), ((64, 32), Image.BICUBIC)]
    assert out.shape == (32, 32, 3)
    assert (out[:, :15, 0] > 200).all() and (out[:, 17:, 2] > 200).all()
    assert (out[:, :, 0] == out[:, ::-1, 2]).all()  # the centre of the image is the centre of the crop


def test_bad_files_are_converted_or_rejected_with_reasons(cfg, dataset):
    folder = dataset / "train" / "n00000001"
    good = next(folder.iterdir()).read_bytes()
    bad = {
        "gray_1": (_jpeg("L", color=128), "converted", ["mode L -> RGB"]),
        "cmyk_1": (_jpeg("CMYK", color=(0, 255, 255, 0)), "converted", ["mode CMYK -> RGB"]),
        "png_1": (_jpeg("RGB", color=(0, 255, 0), fmt="PNG"), "converted", ["PNG data in a .JPEG file"]),
        "truncated_1": (good[: len(good) // 2], "rejected", "truncated image data"),
        "empty_1": (b"", "rejected", "empty file"),
        "garbage_1": (b"not an image at all" * 10, "rejected", "undecodable image data"),
    }
    for key, (data, _, _) in bad.items():
        (folder / f"{key}.JPEG").write_bytes(data)
    rows, manifests = _shard_all(cfg, "train")
    converted = {c["key"]: c for m in manifests for c in m["converted"]}
    rejected = {r["key"]: r for m in manifests for r in m["rejected"]}
    for key, (_, outcome, reason) in bad.items():
        if outcome == "converted":
            assert converted[key]["reasons"] == reason and converted[key]["cls"] == 1
        else:
            assert rejected[key]["reason"] == reason and rejected[key]["path"].endswith(f"{key}.JPEG")
    assert sum(m["counts"]["written"] for m in manifests) == 24 + 3
    assert sum(m["counts"]["rejected"] for m in manifests) == 3
    assert sum(m["counts"]["listed"] for m in manifests) == len(rows) == 30
    written = {
        s["__key__"]: s for i in range(2) for s in shards.read_shard(paths.image_shard(cfg.out, "train", i))
    }
    assert set(converted) <= set(written) and not set(rejected) & set(written)
    cmyk = decode_rgb(written["cmyk_1"]["jpg"]).astype(int).mean(axis=(0, 1))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # CMYK (0, 255, 255, 0) is red


@pytest.mark.parametrize("cut", ["boundary", "middle"])
def test_truncated_tar_is_reported_with_its_name(tmp_path, cut):
    path = tmp_path / "s.tar"
    shards.write_shard(path, [{"__key__": f"k{i}", "cls": b"1", "jpg": bytes(700)} for i in range(3)])
    assert len(list(shards.read_shard(path))) == 3
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    end = last.offset if cut == "boundary" else last.offset_data + 100
    path.write_bytes(data[:end])
    with pytest.raises(shards.CorruptShardError, match="s.tar"):
        list(shards.read_shard(path))


def test_cli_writes_shard_and_manifest(cfg, dataset, tmp_path):
    import yaml

    from semtok.config import to_dict

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    index = paths.index_file(cfg.out, "val")
    imagenet.write_index(imagenet.build_index(cfg, "val")[0], index)
    tar, manifest = tmp_path / "val-00000.tar", tmp_path / "val-00000.json"
    args = [
        "--split",
        "val",
        "--shard",
        "00000",
        "--index",
        str(index),
        "--output",
        str(tar),
        "--manifest",
        str(manifest),
    ]
    assert cli.main(["shard", "--config", str(config), *args]) == 0
    record = json.loads(manifest.read_text())
    assert record["split"] == "val" and record["index"] == 0
    assert record["counts"]["written"] == len(list(shards.read_shard(tar))) == 12


def test_rejected_index_entries_are_listed_in_the_manifests_with_their_reason(cfg, dataset):
    train = dataset / "train"
    (train / "n00000001" / "gone.JPEG").symlink_to(train / "nowhere.JPEG")
    (train / "loose.JPEG").write_bytes((train / "n00000000" / "n00000000_0.JPEG").read_bytes())
    rows, manifests = _shard_all(cfg, "train")
    rejected = {r["path"].rsplit("/", 1)[-1]: r for m in manifests for r in m["rejected"]}
    assert rejected["gone.JPEG"]["reason"] == "dangling symlink" and rejected["gone.JPEG"]["cls"] == 1
    assert rejected["loose.JPEG"]["reason"] == "file outside a class folder"
    assert sum(m["counts"]["written"] for m in manifests) == 24
    assert sum(m["counts"]["listed"] for m in manifests) == len(rows) == 26


def test_long_and_odd_file_names_shard_and_keep_their_keys(cfg, dataset):
    folder = dataset / "train" / "n00000002"
    image = next(folder.iterdir()).read_bytes()
    names = [
        "ü" * 60 + ".JPEG",
        "x" * 200 + ".JPEG",
        "with.dots and spaces.JPEG",
    ]  # 120+ bytes: over USTAR's 100
    for name in names:
        (folder / name).write_bytes(image)
    rows, manifests = _shard_all(cfg, "train")
    written = {
        s["__key__"]: s for i in range(2) for s in shards.read_shard(paths.image_shard(cfg.out, "train", i))
    }
    keys = {r.path.rsplit("/", 1)[-1]: r.key for r in rows}
    for name in names:
        assert keys[name] in written and int(written[keys[name]]["cls"]) == 2
    assert sum(m["counts"]["written"] for m in manifests) == 27


def _png16(value: int, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("value", [0, 32768, 65535])
def test_16_bit_grey_png_is_scaled_not_clipped(value):
    decoded = decode_any(_png16(value), "deep.png")
    pixels = np.asarray(decoded.image)
    assert pixels.shape == (20, 24, 3)
    assert np.all(pixels == round(value / 257))  # mid-grey 32768 -> 128, not 255
    assert decoded.conversions == ["mode I;16 -> RGB (16-bit scaled to 8-bit)"]


def test_16_bit_image_in_a_shard_keeps_its_grey_level(cfg, dataset):
    (dataset / "train" / "n00000000" / "deep_1.JPEG").write_bytes(_png16(32768, (64, 64)))
    _, manifests = _shard_all(cfg, "train")
    converted = {c["key"]: c for m in manifests for c in m["converted"]}
    assert converted["deep_1"]["reasons"] == [
        "PNG data in a .JPEG file",
        "mode I;16 -> RGB (16-bit scaled to 8-bit)",
    ]
    written = {
        s["__key__"]: s for i in range(2) for s in shards.read_shard(paths.image_shard(cfg.out, "train", i))
    }
    assert abs(decode_rgb(written["deep_1"]["jpg"]).astype(float).mean() - 128) < 2


def test_a_small_shard_read_to_its_end_is_served_from_memory_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "s.tar"
    shards.write_shard(path, [{"__key__": f"k{i}", "cls": str(i).encode()} for i in range(3)])
    first = list(shards.read_shard(path))
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(
        tarfile, "open", lambda *a, **k: opened.append(a[1:2] == ("r:",)) or real_open(*a, **k)
    )
    first[0]["cls"] = b"changed by a caller"
    assert list(shards.read_shard(path)) == list(shards.read_shard(path)) != first
    assert [s["cls"] for s in shards.read_shard(path)] == [b"0", b"1", b"2"] and sum(opened) == 0
    shards.write_shard(path, [{"__key__": "k0", "cls": b"9"}])  # rewritten: read from disk again
    assert [s["cls"] for s in shards.read_shard(path)] == [b"9"] and sum(opened) == 1


def test_a_shard_read_only_in_part_or_found_corrupt_is_not_kept(tmp_path, monkeypatch):
    path = tmp_path / "s.tar"
    shards.write_shard(path, [{"__key__": f"k{i}", "cls": b"1", "jpg": bytes(3000)} for i in range(3)])
    next(shards.read_shard(path))  # a partial read
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(
        tarfile, "open", lambda *a, **k: opened.append(a[1:2] == ("r:",)) or real_open(*a, **k)
    )
    list(shards.read_shard(path))
    assert sum(opened) == 1
    bad = tmp_path / "bad.tar"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut inside a member
    for _ in range(2):
        with pytest.raises(shards.CorruptShardError, match="bad.tar"):
            list(shards.read_shard(bad))
    assert sum(opened) == 3


def _png_strip(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_an_elongated_image_is_rejected_before_its_pixels_are_decoded(cfg, dataset, monkeypatch):
    """A 1×30000 px grey PNG (about 100 bytes) would be resized to 32 × 960000 px before the crop here
    (256 × 7.68M px, 5.9 GB, at 256 px): it is rejected with the sizes in the manifest, its pixels never
    decoded, and the shard holds every other image."""
    strip = _png_strip(1, 30000)
    assert len(strip) < 200
    (dataset / "train" / "n00000001" / "strip_1.JPEG").write_bytes(strip)
    loaded = []
    load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(self.size) or load(self))
    _, manifests = _shard_all(cfg, "train")
    rejected = {r["key"]: r for m in manifests for r in m["rejected"]}
    assert rejected["strip_1"]["reason"] == "too elongated to preprocess"
    assert "1×30000 px" in rejected["strip_1"]["detail"] and "32×960000" in rejected["strip_1"]["detail"]
    assert (1, 30000) not in loaded
    assert sum(m["counts"]["written"] for m in manifests) == 24


@pytest.mark.parametrize(("size", "ok"), [((64, 4096), True), ((64, 4160), False), ((2048, 64), True)])
def test_the_resize_bound_is_64_output_areas(size, ok):
    """At 32 px the centre crop may resize to at most 64 · 32² px: 32×2048 (64:1) passes, 32×2080 not;
    a 2048×64 image is halved once to 1024×32 and passes."""
    if ok:
        assert decode_any(_png_strip(*size), "s.png", 32).image.size == size
    else:
        with pytest.raises(ValueError, match="too elongated"):
            decode_any(_png_strip(*size), "s.png", 32)


def test_exif_orientation_is_applied_and_recorded(cfg, dataset):
    """A camera JPEG stored sideways with EXIF orientation 6 (rotate 90° clockwise to view) is sharded
    as shown, and its manifest entry says so."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = (255, 0, 0)  # left half red: shown, the top half is red
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif, quality=100)
    decoded = decode_any(buf.getvalue(), "turned.JPEG")
    assert decoded.image.size == (40, 60) and decoded.conversions == ["EXIF orientation 6 applied"]
    shown = np.asarray(decoded.image).astype(int)
    assert (shown[:25, :, 0] > 200).all() and (shown[35:, :, 0] < 60).all()
    (dataset / "train" / "n00000000" / "turned_1.JPEG").write_bytes(buf.getvalue())
    _, manifests = _shard_all(cfg, "train")
    converted = {c["key"]: c for m in manifests for c in m["converted"]}
    assert converted["turned_1"]["reasons"] == ["EXIF orientation 6 applied"]
    written = {
        s["__key__"]: s for i in range(2) for s in shards.read_shard(paths.image_shard(cfg.out, "train", i))
    }
    pixels = decode_rgb(written["turned_1"]["jpg"]).astype(int)
    assert pixels[:12, :, 0].mean() > 200 and pixels[20:, :, 0].mean() < 60  # red on top, as shown


def test_an_animation_keeps_its_first_frame_and_is_recorded():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    decoded = decode_any(buf.getvalue(), "moving.webp", 32)
    assert decoded.conversions == ["first of 3 frames kept"]
    assert decoded.image.getpixel((20, 20)) == (255, 0, 0)


def _npy_bytes(array: np.ndarray, **kw) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, **kw)
    return stream.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).standard_normal((16, 4, 4)).astype(np.float16),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.asfortranarray(np.random.default_rng(1).standard_normal((3, 5))),
        np.random.default_rng(2).standard_normal((2, 3)).astype(">f4"),
        np.zeros((0, 3), np.float32),
        np.array(3.0),
        np.packbits(np.array([1, 0, 1], bool)),
    ],
    ids=["f16", "i32", "fortran", "big-endian", "empty", "scalar", "packed-bits"],
)
def test_npy_members_read_as_numpy_reads_them(array):
    """The parsed-header cache gives numpy's array: same dtype, shape, values, a writable copy,
    also on the second read of the same header."""
    for _ in range(2):
        got = npy_array(_npy_bytes(array))
        expected = np.load(io.BytesIO(_npy_bytes(array)), allow_pickle=False)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert np.array_equal(got, expected) and got.flags.writeable


def test_damaged_npy_members_are_refused_as_numpy_refuses_them():
    good = _npy_bytes(np.arange(10.0))
    npy_array(good)  # its header is now cached
    with pytest.raises(ValueError, match="expected 80 bytes"):
        npy_array(good[:-8])
    with pytest.raises(ValueError, match="allow_pickle"):
        npy_array(_npy_bytes(np.array([{}], dtype=object), allow_pickle=True))
    with pytest.raises(ValueError, match="non-finite"):
        npy_array(_npy_bytes(np.array([1.0, np.nan])))

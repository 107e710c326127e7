import io
import itertools
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from semtok import paths, registry
from semtok.data import shards
from semtok.data.images import decode_rgb, to_model_range
from semtok.data.loader import flip_grid, iterate_shard, latent_normalisation, make_loader
from semtok.data.shards import CorruptShardError, read_shard, write_shard


def _raw(cfg, kind, split="train"):
    """{key: sample} of every shard of a set."""
    count = cfg.data.train_shards if split == "train" else cfg.data.val_shards
    tar = paths.image_shard if kind == "images" else lambda out, s, i: paths.feature_shard(out, kind, s, i)
    return {s["__key__"]: s for i in range(count) for s in read_shard(tar(cfg.out, split, i))}


def _npy(data):
    return torch.from_numpy(np.load(io.BytesIO(data)).astype(np.float32))


@pytest.fixture
def copied_cfg(built_cfg, make_cfg, tmp_path):
    """A config over a private copy of the built shards (safe to damage)."""
    shutil.copytree(built_cfg.out / "data", tmp_path / "data")
    return make_cfg


def test_batches_normalised_once_and_flipped_consistently(built_cfg):
    latents, siglip, images = (_raw(built_cfg, k) for k in ("latents", "siglip", "images"))
    loader = make_loader(built_cfg, "train", batch_size=5, resample=False, images=True, seed=1)
    seen, flips = Counter(), Counter()
    for batch in loader:
        b = len(batch["key"])
        assert batch["latent"].shape == (b, 4, 8, 8) and batch["latent"].dtype == torch.float32
        assert batch["siglip"].shape == (b, 16, 32) and batch["image"].shape == (b, 3, 32, 32)
        assert batch["cls"].dtype == torch.int64 and batch["flip"].dtype == torch.bool
        for i, key in enumerate(batch["key"]):
            seen[key] += 1
            flipped = bool(batch["flip"][i])
            flips[flipped] += 1
            raw = _npy(latents[key]["latent_flip.npy" if flipped else "latent.npy"])
            assert torch.equal(
                batch["latent"][i], (raw - 0.5) * 2.0
            )  # shift 0.5, scale 2.0 (tiny VAE config)
            grid = _npy(siglip[key]["siglip.npy"])
            assert torch.equal(batch["siglip"][i], flip_grid(grid) if flipped else grid)
            image = to_model_range([decode_rgb(images[key]["jpg"])])[0]
            assert torch.equal(batch["image"][i], image.flip(-1) if flipped else image)
            assert batch["cls"][i] == int(images[key]["cls"])
    assert seen == Counter(dict.fromkeys(images, 1))
    assert flips[True] > 0 and flips[False] > 0


def test_flip_grid_mirrors_columns():
    grid = torch.arange(3 * 3 * 2, dtype=torch.float32).reshape(9, 2)  # 3x3 grid, 2 channels
    flipped = flip_grid(grid).reshape(3, 3, 2)
    assert torch.equal(flipped[:, 0], grid.reshape(3, 3, 2)[:, 2])
    assert torch.equal(flip_grid(flip_grid(grid)), grid)


def test_latent_normalisation_from_a_saved_vae_config(make_cfg, built_cfg):
    assert latent_normalisation(built_cfg) == (0.5, 2.0)
    cfg = make_cfg(["pretrained.vae.source=bootstrap"])
    arch = registry.tiny_vae_arch({"block_out_channels": [8], "norm_num_groups": 4, "latent_channels": 4}, 32)
    AutoencoderKL(**{**arch, "scaling_factor": 1.5305, "shift_factor": 0.0609}).save_pretrained(
        paths.teacher_dir(cfg.out, "vae")
    )
    assert latent_normalisation(cfg) == pytest.approx((0.0609, 1.5305))


def test_unshuffled_order_is_shard_then_key_order_and_matches_iterate_shard(built_cfg):
    loader = make_loader(built_cfg, "train", batch_size=7, shuffle=False, flip=False, resample=False)
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    expected = [
        s["key"] for i in range(2) for s in iterate_shard(paths.image_shard(built_cfg.out, "train", i))
    ]
    assert keys == expected and [len(b["key"]) for b in batches] == [7, 7, 7, 3]
    assert not any(b["flip"].any() for b in batches)
    norm = latent_normalisation(built_cfg)
    first = list(iterate_shard(paths.feature_shard(built_cfg.out, "latents", "train", 0), latent_norm=norm))
    assert torch.equal(batches[0]["latent"][0], first[0]["latent"])
    with pytest.raises(ValueError, match="latent_norm"):
        next(iterate_shard(paths.feature_shard(built_cfg.out, "latents", "train", 0)))


def test_seeded_passes_repeat_and_epochs_cover_the_data(built_cfg):
    def keys_and_flips(seed):
        loader = make_loader(
            built_cfg, "train", batch_size=4, resample=False, seed=seed, features=("latents",)
        )
        return [(k, bool(f)) for b in loader for k, f in zip(b["key"], b["flip"], strict=True)]

    assert keys_and_flips(3) == keys_and_flips(3)
    assert keys_and_flips(3) != keys_and_flips(4)
    loader = make_loader(built_cfg, "train", batch_size=5, resample=False, epochs=2, features=("latents",))
    keys = [k for b in loader for k in b["key"]]
    assert Counter(keys) == Counter(dict.fromkeys(_raw(built_cfg, "latents"), 2))


def test_resampling_is_infinite_and_drops_partial_batches(built_cfg):
    loader = make_loader(built_cfg, "val", batch_size=5, features=("latents",))
    batches = list(itertools.islice(loader, 8))  # 40 samples from a 12-image split
    assert all(len(b["key"]) == 5 for b in batches)
    assert set(k for b in batches for k in b["key"]) <= set(_raw(built_cfg, "latents", "val"))


def test_worker_processes_split_the_shards(built_cfg):
    loader = make_loader(
        built_cfg, "train", batch_size=5, resample=False, num_workers=2, features=("siglip",)
    )
    keys = [k for b in loader for k in b["key"]]
    assert Counter(keys) == Counter(dict.fromkeys(_raw(built_cfg, "siglip"), 1))


def test_misaligned_shard_sets_raise_naming_both(copied_cfg, tmp_path):
    cfg = copied_cfg()
    path = paths.feature_shard(cfg.out, "siglip", "train", 1)
    samples = list(read_shard(path))
    write_shard(path, samples[1:] + samples[:1])
    loader = make_loader(cfg, "train", batch_size=4, shuffle=False, resample=False)
    with pytest.raises(
        ValueError, match="not aligned.*latents/train/train-00001.tar.*siglip/train/train-00001.tar"
    ):
        list(loader)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_shard_fails_naming_it(copied_cfg):
    cfg = copied_cfg()
    _truncate(paths.feature_shard(cfg.out, "siglip", "train", 1))
    loader = make_loader(cfg, "train", batch_size=4, resample=False)
    with pytest.raises(CorruptShardError, match="siglip/train/train-00001.tar"):
        list(loader)


def test_corrupt_shard_skipped_and_recorded_in_skip_mode(copied_cfg):
    cfg = copied_cfg(["data.on_corrupt_shard=skip"])
    bad = paths.feature_shard(cfg.out, "latents", "train", 0)
    _truncate(bad)
    loader = make_loader(cfg, "train", batch_size=4, resample=False, shuffle=False)
    with pytest.warns(UserWarning, match="train-00000.tar"):
        keys = [k for b in loader for k in b["key"]]
    assert loader.skipped_shards == [str(bad)]
    shard1 = [s["__key__"] for s in read_shard(paths.feature_shard(cfg.out, "latents", "train", 1))]
    assert set(shard1) <= set(keys) and len(keys) < 24


def test_configuration_errors(built_cfg, make_cfg):
    with pytest.raises(ValueError, match="precompute_siglip"):
        make_loader(make_cfg(["data.precompute_siglip=false"], built_cfg.out), "train", batch_size=2)
    with pytest.raises(FileNotFoundError, match="latents/train/train-00000.tar"):
        make_loader(make_cfg(), "train", batch_size=2)
    with pytest.raises(ValueError, match="unknown features"):
        make_loader(built_cfg, "train", batch_size=2, features=("depth",))


def _damage_member(path, key, member, damage):
    """Rewrite shard `path` with `damage(bytes)` applied to one member of sample `key` (bit rot inside a
    member: the tar itself stays valid)."""
    samples = list(read_shard(path))
    for s in samples:
        if s["__key__"] == key:
            s[member] = damage(s[member])
    write_shard(path, samples)


@pytest.mark.parametrize(
    ("kind", "member", "damage"),
    [
        ("images", "jpg", lambda d: b"\x00" * 64 + d[64:]),  # PIL: cannot identify image file
        ("latents", "latent.npy", lambda d: b"garbage!!!" + d[10:]),  # numpy: pickled (object) data
        ("latents", "latent.npy", lambda d: d[:-64] + b"\xff" * 64),  # fp16 NaNs
        ("siglip", "siglip.npy", lambda d: d[:-30]),  # shorter than its header says
        ("siglip", "cls", lambda d: b"\xff"),  # the last set's cls is the one used
    ],
)
def test_a_damaged_member_fails_naming_the_shard_the_key_and_the_member(copied_cfg, kind, member, damage):
    cfg = copied_cfg()
    tar = (
        paths.image_shard(cfg.out, "train", 1)
        if kind == "images"
        else paths.feature_shard(cfg.out, kind, "train", 1)
    )
    key = next(read_shard(tar))["__key__"]
    _damage_member(tar, key, member, damage)
    loader = make_loader(cfg, "train", batch_size=4, resample=False, shuffle=False, images=True, flip=False)
    with pytest.raises(shards.CorruptSampleError) as err:
        list(loader)
    assert str(tar) in str(err.value) and repr(key) in str(err.value) and repr(member) in str(err.value)


def test_damaged_samples_and_shards_are_skipped_and_recorded_in_skip_mode(copied_cfg):
    import json

    cfg = copied_cfg(["data.on_corrupt_shard=skip"])
    tar = paths.feature_shard(cfg.out, "latents", "train", 1)
    key = next(read_shard(tar))["__key__"]
    _damage_member(tar, key, "latent.npy", lambda d: b"garbage!!!" + d[10:])
    _damage_member(tar, key, "latent_flip.npy", lambda d: b"garbage!!!" + d[10:])
    _truncate(paths.feature_shard(cfg.out, "siglip", "train", 0))
    loader = make_loader(cfg, "train", batch_size=4, resample=False, shuffle=False)
    with pytest.warns(UserWarning, match=f"skipped corrupt sample.*{key}"):
        keys = [k for b in loader for k in b["key"]]
    shard1 = {s["__key__"] for s in read_shard(tar)}
    assert key not in keys and shard1 - {key} <= set(keys) and len(keys) < 23
    assert loader.skipped_samples == [(str(tar), key)]
    assert loader.skipped_shards == [str(paths.feature_shard(cfg.out, "siglip", "train", 0))]
    record = paths.skipped_record(cfg.out, "train")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(r["shard"], r["key"], r["count"]) for r in lines] == [
        (str(paths.feature_shard(cfg.out, "siglip", "train", 0)), None, 1),
        (str(tar), key, 2),
    ]
    assert "pickled" in lines[1]["reason"] and lines[1]["command"]


def test_encoding_a_damaged_image_names_the_shard_and_the_key(copied_cfg, tmp_path):
    from semtok.data.encode import encode_shard

    cfg = copied_cfg()
    tar = paths.image_shard(cfg.out, "val", 0)
    key = next(read_shard(tar))["__key__"]
    _damage_member(tar, key, "jpg", lambda d: d[: len(d) // 3])
    with pytest.raises(shards.CorruptSampleError, match=f"val-00000.tar: sample {key!r}, member 'jpg'"):
        encode_shard(cfg, "latents", tar, tmp_path / "out.tar")


def test_a_damaged_token_shard_names_the_shard_and_the_key(tmp_path):
    from semtok.data.tokens import TokenDataset, read_token_shard
    from semtok.utils.io import npy_bytes

    tar = tmp_path / "train-00000.tar"
    bits = npy_bytes(np.zeros((4, 3), np.uint8))
    write_shard(
        tar, [{"__key__": f"k{i}", "cls": b"1", "bits.npy": bits, "bits_flip.npy": bits} for i in range(3)]
    )
    _damage_member(tar, "k1", "bits_flip.npy", lambda d: d[:8])
    with pytest.raises(
        shards.CorruptSampleError, match="train-00000.tar: sample 'k1', member 'bits_flip.npy'"
    ):
        list(read_token_shard(tar, 18))
    with pytest.raises(shards.CorruptSampleError, match="sample 'k1'"):
        TokenDataset([tar], 18)


def test_every_shard_corrupt_in_skip_mode_stops_instead_of_resampling_forever(copied_cfg):
    import signal

    cfg = copied_cfg(["data.on_corrupt_shard=skip"])
    for i in range(2):
        paths.feature_shard(cfg.out, "latents", "train", i).write_bytes(b"\0" * 100)

    def too_long(*_):
        raise TimeoutError("the loader resampled corrupt shards forever")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(120)
    try:
        loader = make_loader(cfg, "train", batch_size=4, features=("latents",))  # resampling: infinite
        with pytest.warns(UserWarning), pytest.raises(CorruptShardError, match="corrupt shards in a row"):
            next(iter(loader))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # the shuffle buffer read ahead: more skips were found (and recorded) than reached this process
    assert len(loader.skipped_shards) == 5
    assert len(paths.skipped_record(cfg.out, "train").read_text().splitlines()) >= 5


def test_iterating_leaves_the_global_rng_alone(built_cfg):
    """A training job resumed mid-segment restores the global RNG and then starts a new loader: if
    starting to iterate drew from the global RNG (DataLoader's base seed), the resumed run's noise
    would be shifted by one draw against the uninterrupted run's."""
    loader = make_loader(built_cfg, "train", batch_size=4, features=("latents",), seed=3)
    state = torch.get_rng_state()
    next(iter(loader))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_skip_held_in_the_shuffle_buffer_is_recorded_when_the_iteration_closes(copied_cfg, workers):
    """A training segment takes a few batches and closes its iterator: the skip marker of a corrupt
    shard, read ahead into a shuffle buffer that holds the whole split, never reaches the main process,
    yet the skip is warned and recorded (where it was found: a worker, or this process)."""
    import json

    cfg = copied_cfg(["data.on_corrupt_shard=skip", "data.shuffle_buffer=1000"])
    bad = paths.feature_shard(cfg.out, "latents", "train", 1)
    _truncate(bad)
    loader = make_loader(cfg, "train", batch_size=4, features=("latents",), num_workers=workers)
    batches = iter(loader)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        next(batches)
        batches.close()
    record = paths.skipped_record(cfg.out, "train")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {(r["shard"], r["key"]) for r in lines} == {(str(bad), None)}
    if workers == 0:  # a worker warns on its own stderr (the job's log)
        assert any(str(bad) in str(w.message) for w in caught)

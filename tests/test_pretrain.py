"""SparK pretraining: unlabelled sources, augmentation, batches, the task on the shared loop,
exact resume, export into UNet++, and the ``depthlib pretrain`` command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from depthlib import seeds
from depthlib.cli import main
from depthlib.data.nyu import write_labeled, write_splits
from depthlib.data.pools import (
    StreamedImages,
    fit_to_size,
    folder_pool,
    held_out_rooms_seed,
    labeled_pool,
    load_image_pool,
    rooms_pool,
    unlabelled_rooms_seed,
)
from depthlib.data.rooms import render_room
from depthlib.data.transforms import normalize, random_resized_crop
from depthlib.depth.losses import silog_loss
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import ConfigError, DataError
from depthlib.jobs.pretrain import (
    SparkTask,
    held_out_loss,
    image_batches,
    load_reconstructions,
    pretrain,
)
from depthlib.profiles import TrainConfig, get_profile
from depthlib.spark.model import SparK, kept_patch_count, masked_patch_loss
from depthlib.train import fit
from depthlib.train.checkpoint import load_checkpoint

# A few images, tiny decoder, 16-px patches: each pretrain() call is a handful of fast steps.
TINY = {"n_images": 8, "batch_size": 4, "decoder_width": 16, "encoder_depth": 4}


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))


def write_png(path, h, w, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def image_folder(root, n=5):
    for i in range(n - 1):
        write_png(root / f"img_{i}.png", 40, 50 + 10 * i, seed=i)
    write_png(root / "sub" / "deeper.jpg", 48, 64, seed=99)
    (root / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------ sources


def test_folder_source_reads_recursively_and_skips_and_counts_a_corrupt_file(tmp_path):
    folder = image_folder(tmp_path / "imgs")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    write_png(folder / "grey.png", 30, 40, seed=7, mode="L")
    pool = folder_pool(folder, (32, 64), progress=False)
    assert len(pool) == 6 and pool.available == 7  # 5 + grey, of 7 image files
    assert pool.skipped == [str(folder / "broken.png")]
    assert pool.images.shape == (6, 3, 32, 64) and pool.images.dtype == torch.uint8
    subset = folder_pool(folder, (32, 64), n_images=3, seed=1, progress=False)
    assert len(subset) == 3


def test_empty_or_unreadable_folder_and_missing_path_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="No images in"):
        folder_pool(tmp_path / "empty", (32, 32), progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="None of the 1 image files"):
        folder_pool(tmp_path / "bad", (32, 32), progress=False)
    with pytest.raises(DataError, match="No pretraining data"):
        load_image_pool(tmp_path / "nowhere", (32, 32), 4, rooms_seed=1, progress=False)
    with pytest.raises(ConfigError, match="needs a number of images"):
        load_image_pool("rooms", (32, 32), None, rooms_seed=1, progress=False)


def test_a_folder_too_large_to_preload_is_streamed_and_rooms_are_refused(tmp_path):
    folder = image_folder(tmp_path / "imgs")
    pool = folder_pool(folder, (32, 64), progress=False, max_preload_bytes=1000)
    assert pool.images is None and len(pool) == 5 and pool.size == (32, 64)
    first = pool.first(2)
    assert first.shape == (2, 3, 32, 64) and first.dtype == torch.uint8
    streamed = StreamedImages(pool.files, pool.size, seed=3)
    item = streamed[1]
    assert torch.equal(item["rgb"], first[1]) and item["seed"] == streamed[1]["seed"]
    streamed.set_epoch(1)
    assert streamed[1]["seed"] != item["seed"]  # new crops and masks each epoch
    with pytest.raises(ConfigError, match="Preloading 5 images"):
        rooms_pool(5, (32, 64), 0, progress=False, max_preload_bytes=1000)


def test_fit_to_size_centre_crops_to_the_aspect_then_resizes():
    rgb = np.zeros((40, 100, 3), np.uint8)
    rgb[:, :10] = 255  # white bands at both edges: outside the centred 40x80 window
    rgb[:, 90:] = 255
    rgb[:, 10:90, 0] = np.arange(80, dtype=np.uint8)  # a ramp inside it: 0 .. 79 in red
    out = fit_to_size(rgb, (32, 64))
    assert out.shape == (32, 64, 3) and out[..., 1:].max() == 0  # no band pixel made it
    assert out[0, 0, 0] <= 2 and out[0, -1, 0] >= 77  # the ramp spans the whole output
    same = fit_to_size(rgb, (40, 80))  # no resize needed: exactly the centred window
    np.testing.assert_array_equal(same, rgb[:, 10:90])
    tall = fit_to_size(rgb.transpose(1, 0, 2), (80, 40))  # the same, cropping rows
    np.testing.assert_array_equal(tall, rgb[:, 10:90].transpose(1, 0, 2))


def test_rooms_pool_uses_its_own_seed_and_matches_the_generator_cached_or_not(tmp_path):
    labelled_seed = get_profile("quick").rooms.seed
    seed = unlabelled_rooms_seed(labelled_seed)
    assert seed == labelled_seed + seeds.UNLABELLED_ROOMS
    pool = rooms_pool(3, (32, 48), seed, progress=False, workers=1)
    for i in range(3):
        expected = render_room(seed, i, 32, 48, raw=False)["rgb"]
        assert np.array_equal(pool.images[i].permute(1, 2, 0).numpy(), expected)
    labelled = render_room(labelled_seed, 0, 32, 48, raw=False)["rgb"]
    assert not np.array_equal(pool.images[0].permute(1, 2, 0).numpy(), labelled)
    cached = rooms_pool(3, (32, 48), seed, cache=tmp_path / "u.mat", progress=False, workers=1)
    assert torch.equal(cached.images, pool.images) and (tmp_path / "u.mat").is_file()


def test_the_held_out_rooms_never_overlap_the_training_pool_or_the_labelled_set():
    labelled_seed = get_profile("cpu").rooms.seed
    held, train = held_out_rooms_seed(labelled_seed), unlabelled_rooms_seed(labelled_seed)
    assert len({held, train, labelled_seed}) == 3  # rooms are drawn per (seed, index)
    a = rooms_pool(4, (32, 48), held, progress=False, workers=1).images
    b = rooms_pool(4, (32, 48), train, progress=False, workers=1).images
    assert not any(torch.equal(x, y) for x in a for y in b)


def test_pretrain_holds_out_rooms_of_their_own_seed_and_a_folders_last_files(tmp_path):
    """What pretrain() actually splits: the held-out rooms are the held-out seed's, none in the
    training pool; a folder's held-out files are left out of training."""
    import dataclasses

    from depthlib.jobs.pretrain import _held_out_split

    prof = get_profile("quick")
    cfg = dataclasses.replace(prof.pretrain, held_out=3, height=32, width=48)
    train = rooms_pool(
        6, (32, 48), unlabelled_rooms_seed(prof.rooms.seed), progress=False, workers=1
    )
    kept, held = _held_out_split(train, "rooms", cfg, prof, cache=False, progress=False)
    expected = rooms_pool(
        3, (32, 48), held_out_rooms_seed(prof.rooms.seed), progress=False, workers=1
    )
    assert torch.equal(held, expected.images) and torch.equal(kept.images, train.images)
    assert not any(torch.equal(x, y) for x in held for y in kept.images)
    image_folder(tmp_path / "imgs", n=30)
    for limit in (1e9, 0):  # preloaded and streamed pools
        pool = folder_pool(tmp_path / "imgs", (32, 48), progress=False, max_preload_bytes=limit)
        kept, held = _held_out_split(
            pool, tmp_path / "imgs", cfg, prof, cache=False, progress=False
        )
        assert len(held) == 3 and len(kept) == len(pool) - 3
        if pool.images is None:
            assert kept.images is None and not set(kept.files) & set(pool.files[-3:])
        else:
            assert not any(torch.equal(x, y) for x in held for y in kept.images)


def test_held_out_loss_scores_fixed_masks_against_the_flat_prediction_and_keeps_the_model():
    torch.manual_seed(0)
    model = SparK("resnet18", encoder_depth=4, decoder_width=16)
    images = torch.randint(0, 256, (6, 3, 32, 48), dtype=torch.uint8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    first = held_out_loss(model, images, seed=3, batch_size=4)
    assert first == held_out_loss(model, images, seed=3, batch_size=4)  # fixed masks
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert 0.9 < first["flat"] < 1.0  # predicting each patch's mean: nothing explained
    assert set(first) == {"held_out", "held_out_batch_stats", "flat"}
    # the flat score is the loss of a zero prediction on the same hidden patches
    mask = model.random_mask(6, 32, 48, generator=torch.Generator().manual_seed(3 * 1_000_003))
    assert held_out_loss(model, images, seed=3, batch_size=6)["flat"] == pytest.approx(
        float(masked_patch_loss(torch.zeros(6, 3, 32, 48), normalize(images), mask, 16))
    )


def test_pretrain_scores_held_out_images_each_epoch_and_a_folder_gives_up_a_tenth(tmp_path):
    result = pretrain("rooms", "quick", out=tmp_path / "r", epochs=2, progress=False,
                      cache_rooms=False, held_out=4, **TINY)  # fmt: skip
    assert all(0 < row["held_out"] < 2 and 0.9 < row["flat"] < 1 for row in result.train.history)
    assert result.train.history[0]["flat"] == result.train.history[1]["flat"]
    folder = image_folder(tmp_path / "imgs", n=20)
    run = pretrain(folder, "quick", out=tmp_path / "f", epochs=1, progress=False, held_out=64,
                   **(TINY | {"n_images": 20}))  # fmt: skip
    assert len(run.pool) == 18 and "held_out" in run.train.history[0]
    meta = json.loads((tmp_path / "f" / "checkpoints" / "epoch_0001" / "meta.json").read_text())
    assert meta["run_config"]["held_out"] == 2


def test_labeled_file_gives_the_rgb_of_its_train_split_only(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 64, 3), dtype=np.uint8)
    path = write_labeled(tmp_path / "set.mat", images, np.ones((6, 32, 64), np.float32))
    write_splits(tmp_path / "set_splits.mat", [1, 3, 4], [0, 2, 5])
    pool = labeled_pool(path, (32, 64), progress=False)
    assert len(pool) == 3 and pool.available == 3
    expected = torch.from_numpy(images[[1, 3, 4]]).permute(0, 3, 1, 2)
    assert torch.equal(pool.images, expected)
    assert len(load_image_pool(path, (32, 64), 2, rooms_seed=0, progress=False)) == 2


# ------------------------------------------------------------------ augmentation, batches, task


def test_random_resized_crop_is_seeded_and_identity_without_randomness():
    rgb = torch.randint(0, 256, (3, 3, 32, 64), dtype=torch.uint8)
    a = random_resized_crop(rgb, torch.Generator().manual_seed(5))
    b = random_resized_crop(rgb, torch.Generator().manual_seed(5))
    c = random_resized_crop(rgb, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 3, 32, 64) and a.min() >= 0 and a.max() <= 1
    plain = random_resized_crop(rgb, torch.Generator(), scale=(1, 1), ratio=(1, 1), flip=0.0)
    assert torch.allclose(plain, rgb.float() / 255, atol=1e-5)
    mirrored = random_resized_crop(rgb, torch.Generator(), scale=(1, 1), ratio=(1, 1), flip=1.0)
    assert torch.allclose(mirrored, rgb.flip(-1).float() / 255, atol=1e-5)


def test_batches_depend_on_seed_epoch_and_position_only():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).clone()
    loader = image_batches(images, 3, seed=4)
    loader.set_epoch(1)
    full = [(b["rgb"][:, 0, 0, 0].tolist(), b["seed"]) for b in loader]
    assert len(full) == 3 and len({s for _, s in full}) == 3
    loader.set_epoch(1)
    loader.skip_batches(1)
    assert [(b["rgb"][:, 0, 0, 0].tolist(), b["seed"]) for b in loader] == full[1:]
    loader.set_epoch(2)
    assert [(b["rgb"][:, 0, 0, 0].tolist(), b["seed"]) for b in loader] != full
    with pytest.raises(ConfigError, match="do not fill one batch"):
        image_batches(images, 11)


def test_task_inputs_are_a_function_of_the_batch_seed_with_exact_kept_counts():
    torch.manual_seed(0)
    model = SparK("resnet18", 4, decoder_width=16)
    rgb = torch.randint(0, 256, (4, 3, 32, 64), dtype=torch.uint8)
    task = SparkTask()
    x1, m1 = task.inputs(model, {"rgb": rgb, "seed": 11})
    torch.rand(100)  # the global RNG does not matter
    x2, m2 = task.inputs(model, {"rgb": rgb, "seed": 11})
    x3, m3 = task.inputs(model, {"rgb": rgb, "seed": 12})
    assert torch.equal(x1, x2) and torch.equal(m1, m2)
    assert not torch.equal(x1, x3) and not torch.equal(m1, m3)
    assert m1.sum(dim=(1, 2, 3)).tolist() == [kept_patch_count(8, 0.6)] * 4


# ------------------------------------------------------------------ pretrain() on the loop


def test_a_few_dozen_steps_on_a_few_images_lower_the_loss():
    pool = rooms_pool(4, (32, 64), unlabelled_rooms_seed(0), progress=False, workers=1)
    torch.manual_seed(0)
    model = SparK("resnet18", 4, decoder_width=128)  # thinner decoders learn much slower
    config = TrainConfig(epochs=30, lr=2e-3, weight_decay=0.04, weight_decay_end=0.2)
    result = fit(model, SparkTask(), image_batches(pool.images, 4), config, progress=False)
    losses = [row["train_loss"] for row in result.history]  # one step per epoch
    assert result.step == 30
    assert np.mean(losses[-5:]) < 0.97 * np.mean(losses[:3]), losses


def test_pretrain_logs_checkpoints_and_reconstructions(tmp_path):
    result = pretrain(
        "rooms", "quick", out=tmp_path / "run", epochs=2, progress=False, cache_rooms=False,
        **TINY,
    )  # fmt: skip
    assert result.train.step == 4 and result.train.stop_reason == "completed"
    assert (tmp_path / "run" / "reconstructions" / "epoch_0002.safetensors").is_file()
    assert all(0 < row["recon_loss"] < 10 for row in result.train.history)
    saved = load_reconstructions(tmp_path / "run")
    assert list(saved) == [1, 2]
    assert set(saved[2]) == {"input", "masked", "prediction", "composite", "mask"}
    assert saved[2]["input"].shape == saved[1]["input"].shape
    assert torch.equal(saved[1]["masked"], saved[2]["masked"])  # same images, same mask
    assert not torch.equal(saved[1]["prediction"], saved[2]["prediction"])
    meta = json.loads((tmp_path / "run" / "checkpoints" / "epoch_0002" / "meta.json").read_text())
    assert meta["model"]["class"] == "depthlib.spark.model.SparK"
    assert meta["model"]["config"]["decoder_width"] == 16
    assert meta["run_config"]["n_images"] == 8 and meta["config"]["weight_decay_end"] == 0.2
    rebuilt = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0002").build_model()
    stem = rebuilt.encoder.model.conv_stem.weight  # the quick profile's EfficientNet-Lite0
    assert torch.equal(stem, result.model.encoder.model.conv_stem.weight)
    assert result.encoder_path == tmp_path / "run" / "encoder.safetensors"


def test_resume_after_a_stop_mid_epoch_equals_the_straight_run(tmp_path):
    common = {"epochs": 2, "progress": False, "cache_rooms": False, "figures": False, **TINY}
    straight = pretrain("rooms", "quick", out=tmp_path / "a", **common)
    stopped = pretrain("rooms", "quick", out=tmp_path / "b", time_budget_s=1e-9, **common)
    assert stopped.train.stop_reason == "time_budget" and stopped.train.step == 1
    assert stopped.encoder_path is None and not (tmp_path / "b" / "encoder.safetensors").exists()
    resumed = pretrain("rooms", "quick", out=tmp_path / "b", resume=True, **common)
    assert resumed.train.step == straight.train.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fa, fb = load_file(straight.encoder_path), load_file(resumed.encoder_path)
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def test_pretrain_export_then_unetplusplus_trains_with_those_weights(tmp_path):
    quick = get_profile("quick")
    result = pretrain(
        "rooms", quick, out=tmp_path / "spark", epochs=1, progress=False, cache_rooms=False,
        n_images=8, batch_size=4, decoder_width=32, figures=False,
    )  # fmt: skip
    assert result.encoder_path == tmp_path / "spark" / "encoder.safetensors"
    cfg = quick.finetune
    assert (cfg.encoder, cfg.encoder_depth) == (result.config.encoder, result.config.encoder_depth)
    model = DepthUNetPlusPlus(
        cfg.encoder, cfg.encoder_depth, cfg.decoder_channels, encoder_weights=result.encoder_path
    )
    ours = result.model.encoder.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in model.encoder.state_dict().items())
    rgb = torch.randn(2, 3, cfg.height, cfg.width)
    depth = torch.rand(2, 1, cfg.height, cfg.width) * 5 + 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = silog_loss(model(rgb), depth, torch.ones_like(depth, dtype=torch.bool))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_pretrain_then_finetune_end_to_end_in_the_quick_profile(tmp_path):
    finetune = pytest.importorskip("depthlib.jobs.finetune").finetune
    spark = pretrain(
        "rooms", "quick", out=tmp_path / "spark", epochs=1, progress=False, cache_rooms=False,
        n_images=8, batch_size=4, decoder_width=32, figures=False,
    )  # fmt: skip
    tuned = finetune(
        None, "quick", encoder_weights=spark.encoder_path, out=tmp_path / "ft", epochs=1,
        progress=False, final_eval=False,
    )  # fmt: skip
    assert tuned.train.stop_reason == "completed"
    assert tuned.model.encoder_weights == str(spark.encoder_path)


def test_pretrain_refuses_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="Unknown pretraining setting"):
        pretrain("rooms", "quick", out=tmp_path / "x", progress=False, colour=3)
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        pretrain("rooms", "quick", out=tmp_path / "x", progress=False, height=40)
    with pytest.raises(ConfigError, match="Unknown encoder"):
        pretrain("rooms", "quick", encoder="resnet9000", out=tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="hides none of the 8 patches"):
        pretrain("rooms", "quick", mask_ratio=0.05, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "data").exists()  # refused before rendering anything


# ------------------------------------------------------------------ CLI


def test_cli_pretrain_on_a_folder_writes_the_encoder(tmp_path, capsys):
    folder = image_folder(tmp_path / "imgs", n=9)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 50)
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(folder), "--profile", "quick", "--out", str(out)]
    args += ["--epochs", "1", "--n-images", "8", "--decoder-width", "32", "--quiet"]
    assert main(args) == 0
    assert (out / "encoder.safetensors").is_file()
    assert (out / "reconstructions" / "epoch_0001.png").is_file()  # the command draws them
    assert str(out / "encoder.safetensors") in capsys.readouterr().out
    meta = json.loads((out / "checkpoints" / "epoch_0001" / "meta.json").read_text())
    assert meta["run_config"]["n_images"] == 8
    assert main(args) == 2  # a used folder without --resume: refused with a message
    assert "--resume" in capsys.readouterr().err


def test_cli_pretrain_reports_missing_data(tmp_path, capsys):
    code = main(["pretrain", "--data", str(tmp_path / "none"), "--profile", "quick", "--quiet"])
    assert code == 2
    assert "No pretraining data" in capsys.readouterr().err

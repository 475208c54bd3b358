"""The torch wrapper: shapes and dtypes, seeded augmentation, preloading, the reader factory."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_convert

from depthlib.data.dataset import DepthDataset, open_depth_dataset
from depthlib.data.folders import BTSFolder, DenseDepthFolder
from depthlib.data.nyu import NYULabeled, write_labeled, write_splits
from depthlib.data.transforms import Augment
from depthlib.errors import ConfigError, DataError

N, H, W = 6, 24, 32


@pytest.fixture
def labeled(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.8, 9.0, (N, H, W)).astype(np.float32)
    raw = depth.copy()
    raw[:, :4, :4] = 0  # holes
    path = write_labeled(tmp_path / "set.mat", rgb, depth, raw)
    write_splits(tmp_path / "splits.mat", [0, 1, 2, 3], [4, 5])
    return path


def test_items_have_the_stated_shapes_and_dtypes(labeled):
    data = DepthDataset(NYULabeled(labeled, depth="raw"), size=(16, 20))
    item = data[1]
    assert item["rgb"].shape == (3, 16, 20) and item["rgb"].dtype == torch.uint8
    assert item["depth"].shape == (1, 16, 20) and item["depth"].dtype == torch.float32
    assert item["valid"].shape == (1, 16, 20) and item["valid"].dtype == torch.bool
    assert item["index"] == 1
    assert not item["valid"][0, 0, 0] and item["valid"][0, -1, -1]
    batch = next(iter(DataLoader(data, batch_size=3, collate_fn=default_convert)))
    assert batch["rgb"].shape == (3, 3, 16, 20) and batch["index"].tolist() == [0, 1, 2]


def test_eval_items_are_the_reader_samples(labeled):
    reader = NYULabeled(labeled, split="test")
    data = DepthDataset(reader)  # no size, no augmentation: exactly the reader's pixels
    item, sample = data[0], reader[0]
    assert item["index"] == 4 and data.read(0)["index"] == 4
    np.testing.assert_array_equal(item["depth"][0].numpy(), sample["depth"])
    np.testing.assert_array_equal(item["rgb"].permute(1, 2, 0).numpy(), sample["rgb"])


def test_train_augmentation_is_seeded_per_epoch(labeled):
    reader = NYULabeled(labeled, split="all")
    a = DepthDataset(reader, augment=Augment(), seed=1)
    b = DepthDataset(reader, augment=Augment(), seed=1)
    assert torch.equal(a[2]["rgb"], b[2]["rgb"])
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append(a[2]["rgb"])
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])
    assert not torch.equal(DepthDataset(reader, augment=Augment(), seed=2)[2]["rgb"], b[2]["rgb"])


def test_draws_repeat_the_positions_with_their_own_augmentation(labeled):
    reader = NYULabeled(labeled, split="all")
    data = DepthDataset(reader, [4, 1], augment=Augment(), seed=0, preload=True)
    assert len(data) == 2 and data.tensors["rgb"].shape[0] == 2  # each image held once
    batch = data.batch([0, 1, 2, 3])  # two passes over the two images
    assert batch["index"].tolist() == [4, 1, 4, 1]
    assert not torch.equal(batch["rgb"][0], batch["rgb"][2])  # another pass, another draw


def test_workers_give_the_same_augmentations(labeled):
    data = DepthDataset(NYULabeled(labeled, split="all"), size=(12, 16), augment=Augment(), seed=3)
    batches = lambda workers: [  # noqa: E731
        b["rgb"] for b in DataLoader(data, 2, num_workers=workers, collate_fn=default_convert)
    ]
    assert all(torch.equal(s, p) for s, p in zip(batches(0), batches(2), strict=True))


def test_preloaded_equals_read_on_the_fly(labeled):
    reader = NYULabeled(labeled, split="train")
    aug = Augment(crop=(10, 12))
    lazy = DepthDataset(reader, size=(12, 16), augment=aug, seed=4)
    fast = DepthDataset(reader, size=(12, 16), augment=aug, seed=4, preload=True)
    assert fast.tensors["rgb"].dtype == torch.uint8 and fast.tensors["rgb"].shape == (4, 3, 12, 16)
    lazy.set_epoch(2)
    fast.set_epoch(2)
    batch = fast.batch([3, 0, 2])
    assert batch["rgb"].shape == (3, 3, 10, 12) and batch["index"].tolist() == [3, 0, 2]
    for key, value in lazy.batch([3, 0, 2]).items():
        assert torch.equal(batch[key], value)


def test_preload_guards(labeled, tmp_path):
    reader = NYULabeled(labeled, split="all")
    with pytest.raises(ConfigError, match="needs .* GB"):
        DepthDataset(reader, preload=True, max_preload_bytes=1000)
    with pytest.raises(ConfigError, match="depth_resize"):
        DepthDataset(reader, depth_resize="cubic")
    csv = tmp_path / "mixed.csv"
    lines = []
    for i, (h, w) in enumerate([(8, 10), (9, 10)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"{i}_c.png")
        Image.fromarray(np.full((h, w), 2000, np.uint16)).save(tmp_path / f"{i}_d.png")
        lines.append(f"{i}_c.png,{i}_d.png")
    csv.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match="pass size="):
        DepthDataset(DenseDepthFolder(csv), preload=True)
    resized = DepthDataset(DenseDepthFolder(csv), preload=True, size=(8, 8))
    assert resized.tensors["depth"].shape == (2, 1, 8, 8)


def test_factory_picks_the_reader(labeled, tmp_path):
    assert isinstance(open_depth_dataset(labeled), NYULabeled)
    assert len(open_depth_dataset(labeled, split="test")) == 2
    assert open_depth_dataset(labeled, split="all", depth="raw").depth_kind == "raw"
    folder = tmp_path / "nyu"
    folder.mkdir()
    (folder / "nyu_depth_v2_labeled.mat").write_bytes(labeled.read_bytes())
    assert len(open_depth_dataset(folder, split="all")) == N
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "c.png")
    Image.fromarray(np.full((4, 5), 1500, np.uint16)).save(tmp_path / "d.png")
    (tmp_path / "pairs.csv").write_text("c.png,d.png\n")
    (tmp_path / "list.txt").write_text("c.png d.png 518.8579\n")
    assert isinstance(open_depth_dataset(tmp_path / "pairs.csv"), DenseDepthFolder)
    bts = open_depth_dataset(tmp_path / "list.txt", data_root=tmp_path)
    assert isinstance(bts, BTSFolder) and bts[0]["depth"][0, 0] == pytest.approx(1.5)
    h5 = tmp_path / "renamed.data"
    h5.write_bytes(labeled.read_bytes())
    assert isinstance(open_depth_dataset(h5, split="all"), NYULabeled)  # sniffed as HDF5


def test_factory_bad_paths(tmp_path):
    with pytest.raises(DataError, match="No dataset at.*horatio.*depthlib synth"):
        open_depth_dataset(tmp_path / "missing.mat")
    with pytest.raises(DataError, match="holds no nyu_depth_v2_labeled.mat"):
        open_depth_dataset(tmp_path)
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(DataError, match="Cannot tell what kind"):
        open_depth_dataset(tmp_path / "notes.json")

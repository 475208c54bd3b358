"""The torch wrapper: shapes and dtypes, seeded augmentation, preloading, the reader factory."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from depthlib.data.dataset import DepthDataset, open_depth_dataset
from depthlib.data.folders import BTSFolder, DenseDepthFolder
from depthlib.data.nyu import NYULabeled, write_labeled, write_splits
from depthlib.data.transforms import Augment, hflip
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
    assert item["image"].shape == (3, 16, 20) and item["image"].dtype == torch.float32
    assert item["depth"].shape == (1, 16, 20) and item["depth"].dtype == torch.float32
    assert item["valid"].shape == (1, 16, 20) and item["valid"].dtype == torch.bool
    assert item["index"] == 1 and isinstance(item["index"], int)
    assert not item["valid"][0, 0, 0] and item["valid"][0, -1, -1]
    assert item["image"].min() < -1.5 and item["image"].max() > 2.0  # normalised, not 0..1
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, 16, 20) and batch["index"].tolist() == [0, 1, 2]


def test_eval_items_are_the_reader_samples(labeled):
    reader = NYULabeled(labeled, split="test")
    data = DepthDataset(reader)  # no size, no train: exactly the reader's pixels
    item, sample = data[0], reader[0]
    assert item["index"] == 4
    np.testing.assert_array_equal(item["depth"][0].numpy(), sample["depth"])
    rgb = (item["image"] * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)) + torch.tensor(
        [0.485, 0.456, 0.406]
    ).view(3, 1, 1)
    np.testing.assert_allclose(rgb.permute(1, 2, 0).numpy() * 255, sample["rgb"], atol=1e-3)


def test_train_augmentation_is_seeded_per_epoch(labeled):
    reader = NYULabeled(labeled, split="all")
    a = DepthDataset(reader, train=True, seed=1)
    b = DepthDataset(reader, train=True, seed=1)
    assert torch.equal(a[2]["image"], b[2]["image"])
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append(a[2]["image"])
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])
    assert not torch.equal(DepthDataset(reader, train=True, seed=2)[2]["image"], b[2]["image"])


def test_workers_give_the_same_augmentations(labeled):
    data = DepthDataset(NYULabeled(labeled, split="all"), train=True, size=(12, 16), seed=3)
    serial = [b["image"] for b in DataLoader(data, batch_size=2)]
    parallel = [b["image"] for b in DataLoader(data, batch_size=2, num_workers=2)]
    assert all(torch.equal(s, p) for s, p in zip(serial, parallel, strict=True))


def test_preloaded_equals_lazy(labeled):
    reader = NYULabeled(labeled, split="train")
    aug = Augment(crop=(10, 12))
    lazy = DepthDataset(reader, transform=aug, size=(12, 16), seed=4)
    fast = DepthDataset(reader, transform=aug, size=(12, 16), seed=4, preload=True)
    assert fast.tensors["rgb"].dtype == torch.uint8 and fast.tensors["rgb"].shape == (4, 3, 12, 16)
    lazy.set_epoch(2)
    fast.set_epoch(2)
    batch = fast.batch([3, 0, 2])
    assert batch["image"].shape == (3, 3, 10, 12) and batch["index"].tolist() == [3, 0, 2]
    for row, position in enumerate([3, 0, 2]):
        item = lazy[position]
        assert torch.equal(batch["depth"][row], item["depth"])
        assert torch.equal(batch["valid"][row], item["valid"])
        torch.testing.assert_close(batch["image"][row], item["image"], atol=1 / 255 / 0.224, rtol=0)
        assert fast[position]["index"] == item["index"]


def test_preload_guards(labeled, tmp_path):
    reader = NYULabeled(labeled, split="all")
    with pytest.raises(ConfigError, match="needs .* GB"):
        DepthDataset(reader, preload=True, max_preload_bytes=1000)
    with pytest.raises(ConfigError, match="numpy samples only"):
        DepthDataset(reader, transform=lambda s, rng: hflip(s), preload=True)
    with pytest.raises(ConfigError, match="preload=True"):
        DepthDataset(reader).batch([0])
    with pytest.raises(IndexError):
        DepthDataset(reader, preload=True).batch([N])
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

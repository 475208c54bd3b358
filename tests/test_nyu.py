"""labeled.mat / splits.mat: layout, orientation, units, lazy per-process handles, bad input."""

import multiprocessing
import pickle

import h5py
import numpy as np
import pytest
import scipy.io

from depthlib.data.nyu import (
    NYULabeled,
    find_splits_file,
    read_extras,
    read_splits,
    write_labeled,
    write_splits,
)
from depthlib.errors import DataError

H, W = 6, 10  # non-square on purpose: a swapped H/W cannot go unnoticed


def marked_images(n=4):
    """Asymmetric content: red top-left block, image number in the blue channel, and depth
    1 + 0.5 x + 0.1 y + 0.01 n, a ramp along both axes, so any flip or transpose changes it."""
    rgb = np.zeros((n, H, W, 3), np.uint8)
    rgb[:, :2, :3, 0] = 255
    rgb[:, :, :, 2] = np.arange(n, dtype=np.uint8)[:, None, None] * 10
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    depth = np.broadcast_to(1.0 + 0.5 * x + 0.1 * y, (n, H, W)).copy()
    depth += np.arange(n, dtype=np.float32)[:, None, None] * 0.01
    return rgb, depth


@pytest.fixture
def labeled(tmp_path):
    rgb, depth = marked_images()
    raw = depth.copy()
    raw[:, -1, -1] = 0.0  # one hole, in the bottom-right corner: no mirror image of it is a hole
    raw[:, 1, 2] = np.nan  # and a NaN off every symmetry axis (row 1 of 6, column 2 of 10)
    path = write_labeled(tmp_path / "set.mat", rgb, depth, raw)
    write_splits(tmp_path / "splits.mat", [0, 2], [1, 3])
    return path, rgb, depth


def test_file_has_matlab_axes(labeled):
    path, rgb, depth = labeled
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (4, 3, W, H) and f["images"].dtype == np.uint8
        assert f["depths"].shape == (4, W, H) and f["depths"].dtype == np.float32
        assert f["rawDepths"].shape == (4, W, H)
        assert f["images"].chunks == (1, 3, W, H) and f["depths"].chunks == (1, W, H)
        np.testing.assert_array_equal(f["images"][2].transpose(2, 1, 0), rgb[2])
        np.testing.assert_array_equal(f["depths"][2].T, depth[2])
    with pytest.raises(NotImplementedError, match="7.3"):  # scipy sees a MATLAB v7.3 header
        scipy.io.loadmat(path)


def test_reader_orientation_and_units(labeled):
    path, rgb, depth = labeled
    reader = NYULabeled(path, split="all")
    assert len(reader) == 4 and reader.image_size == (H, W)
    s = reader[1]
    assert s["rgb"].shape == (H, W, 3) and s["rgb"].dtype == np.uint8
    assert s["depth"].shape == (H, W) and s["depth"].dtype == np.float32
    assert s["valid"].dtype == bool and s["valid"].all()
    assert s["rgb"][0, 0, 0] == 255 and s["rgb"][0, -1, 0] == 0 and s["rgb"][-1, 0, 0] == 0
    assert s["rgb"][0, 0, 2] == 10  # image number 1
    # corners of 1 + 0.5 x + 0.1 y + 0.01 (image 1): each names its own corner
    assert s["depth"][0, 0] == pytest.approx(1.01) and s["depth"][0, -1] == pytest.approx(5.51)
    assert s["depth"][-1, 0] == pytest.approx(1.51) and s["depth"][-1, -1] == pytest.approx(6.01)
    assert np.all(np.diff(s["depth"], axis=1) > 0) and np.all(np.diff(s["depth"], axis=0) > 0)
    np.testing.assert_array_equal(s["depth"], depth[1])
    np.testing.assert_array_equal(s["rgb"], rgb[1])
    assert s["index"] == 1 and s["name"] == "00001"


def test_raw_depth_holes_are_invalid_zero(labeled):
    path, _, depth = labeled
    s = NYULabeled(path, split="all", depth="raw")[0]
    expected_valid = np.ones((H, W), bool)
    expected_valid[-1, -1] = expected_valid[1, 2] = False  # the bottom-right hole and the NaN
    np.testing.assert_array_equal(s["valid"], expected_valid)
    assert s["depth"][-1, -1] == 0 and s["depth"][1, 2] == 0
    for mirror in ((0, -1), (-1, 0), (0, 0), (4, 2), (1, 7)):  # where a flipped read puts them
        assert s["valid"][mirror] and s["depth"][mirror] == depth[0][mirror]
    np.testing.assert_array_equal(s["depth"], np.where(expected_valid, depth[0], 0))
    raw = NYULabeled(path, split="test", depth="raw")
    assert raw.with_depth("raw") is raw  # the same images and split, the other depth:
    filled = raw.with_depth("filled")
    assert filled.depth_kind == "filled" and filled.indices.tolist() == raw.indices.tolist()


def test_splits_are_one_based_in_file_zero_based_in_reader(labeled, tmp_path):
    path, _, _ = labeled
    content = scipy.io.loadmat(tmp_path / "splits.mat")
    assert content["trainNdxs"].dtype == np.uint16 and content["trainNdxs"].shape == (2, 1)
    assert content["testNdxs"].ravel().tolist() == [2, 4]
    train, test = read_splits(tmp_path / "splits.mat", 4)
    assert train.tolist() == [0, 2] and test.tolist() == [1, 3]
    reader = NYULabeled(path, split="test")
    assert reader.indices.tolist() == [1, 3] and len(reader) == 2
    assert reader[1]["index"] == 3 and reader[1]["rgb"][0, 0, 2] == 30
    assert [s["index"] for s in reader] == [1, 3]  # iteration stops at the end


def test_split_file_scipy_wrote_like_nyu(labeled, tmp_path):
    """A split file written directly the way NYU's toolbox stores it (uint16 column vectors)."""
    path, _, _ = labeled
    other = tmp_path / "mine.mat"
    scipy.io.savemat(
        other,
        {"trainNdxs": np.array([[4], [1]], np.uint16), "testNdxs": np.array([[2]], np.uint16)},
    )
    assert NYULabeled(path, split="train", splits_path=other).indices.tolist() == [3, 0]


def test_split_file_lookup_prefers_stem_file(labeled, tmp_path):
    path, _, _ = labeled
    assert find_splits_file(path) == tmp_path / "splits.mat"
    write_splits(tmp_path / "set_splits.mat", [1], [0])
    assert find_splits_file(path) == tmp_path / "set_splits.mat"
    assert NYULabeled(path, split="test").indices.tolist() == [0]


def test_extras_round_trip(tmp_path):
    rgb, depth = marked_images(3)
    knobs = {"light": np.array([0.1, 1.0, 0.5]), "kind": np.array(["a", "bb", "c"])}
    attrs = {"seed": 7, "generator": "rooms", "config": {"n": 3}, "sizes": [1, 2]}
    path = write_labeled(tmp_path / "r.mat", rgb, depth, extras=knobs, attrs=attrs)
    extras, got = read_extras(path)
    np.testing.assert_array_equal(extras["light"], knobs["light"])
    assert extras["kind"].tolist() == ["a", "bb", "c"]
    assert got == attrs
    plain = write_labeled(tmp_path / "p.mat", rgb, depth)
    assert read_extras(plain) == ({}, {})
    with h5py.File(plain, "r") as f:  # raw_depths=None stores the filled depths
        np.testing.assert_array_equal(f["rawDepths"][()], f["depths"][()])


def test_write_is_atomic_and_checks_shapes(tmp_path):
    rgb, depth = marked_images(2)
    with pytest.raises(DataError, match="one entry per image"):
        write_labeled(tmp_path / "x.mat", rgb, depth, extras={"light": np.zeros(3)})
    with pytest.raises(DataError, match="depths must be"):
        write_labeled(tmp_path / "x.mat", rgb, depth[:, :, :-1])
    with pytest.raises(DataError, match="uint8"):
        write_labeled(tmp_path / "x.mat", rgb.astype(np.float32), depth)
    assert list(tmp_path.iterdir()) == []
    unstorable = {"knob": np.array([{}, {}], dtype=object)}  # h5py fails in the middle of writing
    with pytest.raises(TypeError):
        write_labeled(tmp_path / "x.mat", rgb, depth, extras=unstorable)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind


def test_handle_is_lazy_and_per_process(labeled):
    path, rgb, _ = labeled
    reader = NYULabeled(path, split="all")
    assert reader._h5 is None  # nothing open until the first read
    reader[0]
    assert reader._h5 is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._h5 is None
    np.testing.assert_array_equal(clone[2]["rgb"], rgb[2])
    reader.close()
    assert reader._h5 is None


def _read_name(reader):
    return reader[3]["name"]


def test_reader_works_in_a_forked_worker(labeled):
    path, _, _ = labeled
    reader = NYULabeled(path, split="all")
    reader[0]  # the parent holds an open handle; the child must open its own
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_read_name, (reader,)) == "00003"
    assert reader[1]["index"] == 1


# ------------------------------------------------------------------------------- bad input


def test_missing_file_says_where_data_comes_from(tmp_path):
    with pytest.raises(DataError) as err:
        NYULabeled(tmp_path / "nyu_depth_v2_labeled.mat")
    message = str(err.value)
    assert "horatio.cs.nyu.edu" in message and "splits.mat" in message
    assert "depthlib synth --out data/rooms.mat" in message


def test_matlab5_file_is_not_the_labeled_file(tmp_path):
    write_splits(tmp_path / "splits.mat", [0], [1])
    with pytest.raises(DataError, match="MATLAB 5 file"):
        NYULabeled(tmp_path / "splits.mat")


def test_text_file_is_not_hdf5(tmp_path):
    (tmp_path / "x.mat").write_text("not a matlab file\n")
    with pytest.raises(DataError, match="not an HDF5 file"):
        NYULabeled(tmp_path / "x.mat")


@pytest.mark.parametrize("drop", ["images", "depths"])
def test_hdf5_without_images_or_depths(tmp_path, drop):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        for key in {"images", "depths"} - {drop}:
            f[key] = np.zeros((1, 3, W, H) if key == "images" else (1, W, H), np.uint8)
    with pytest.raises(DataError, match=f"no {drop} dataset"):
        NYULabeled(path, split="all")


def test_raw_depth_requested_but_absent(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((1, 3, W, H), np.uint8)
        f["depths"] = np.zeros((1, W, H), np.float32)
    with pytest.raises(DataError, match="no rawDepths dataset"):
        NYULabeled(path, split="all", depth="raw")


def test_transposed_layout_is_rejected(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((1, H, W, 3), np.uint8)
        f["depths"] = np.zeros((1, H, W), np.float32)
    with pytest.raises(DataError, match="layout"):
        NYULabeled(path, split="all")


def test_no_split_file(labeled, tmp_path):
    path, _, _ = labeled
    (tmp_path / "splits.mat").unlink()
    with pytest.raises(DataError, match="No split file.*split='all'"):
        NYULabeled(path, split="train")
    assert len(NYULabeled(path, split="all")) == 4


def test_split_file_lacking_keys(labeled, tmp_path):
    path, _, _ = labeled
    scipy.io.savemat(tmp_path / "bad.mat", {"trainNdxs": np.array([[1]], np.uint16)})
    with pytest.raises(DataError, match="lacks testNdxs"):
        NYULabeled(path, splits_path=tmp_path / "bad.mat")


@pytest.mark.parametrize("bad", [0, 5])
def test_split_indices_outside_file(labeled, tmp_path, bad):
    path, _, _ = labeled
    scipy.io.savemat(
        tmp_path / "bad.mat",
        {"trainNdxs": np.array([[1], [bad]], np.uint16), "testNdxs": np.array([[2]], np.uint16)},
    )
    with pytest.raises(DataError, match=rf"outside 1\.\.4 \(e\.g\. \[{bad}\]\)"):
        NYULabeled(path, splits_path=tmp_path / "bad.mat")


def test_split_overlap_is_rejected(labeled, tmp_path):
    path, _, _ = labeled
    write_splits(tmp_path / "bad.mat", [0, 1], [1, 2])
    with pytest.raises(DataError, match="both trainNdxs and testNdxs"):
        NYULabeled(path, splits_path=tmp_path / "bad.mat")


def test_split_file_that_is_hdf5_or_text(labeled, tmp_path):
    path, _, _ = labeled
    with pytest.raises(DataError, match="swap"):
        read_splits(path)
    (tmp_path / "s.mat").write_text("1 2 3\n")
    with pytest.raises(DataError, match="not a readable MATLAB-5 split file"):
        read_splits(tmp_path / "s.mat")


def test_bad_arguments(labeled):
    path, _, _ = labeled
    with pytest.raises(DataError, match="split must be"):
        NYULabeled(path, split="val")
    with pytest.raises(DataError, match="depth must be"):
        NYULabeled(path, depth="metric")
    with pytest.raises(IndexError):
        NYULabeled(path, split="all")[4]

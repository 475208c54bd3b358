"""DenseDepth CSV and BTS list exports: millimetre PNGs to metres, holes invalid, bad input."""

import numpy as np
import pytest
from PIL import Image

from depthlib.data.folders import BTSFolder, DenseDepthFolder, read_depth_png
from depthlib.errors import DataError

H, W = 5, 7


def pair(index):
    """An asymmetric pair: red top-left pixel, depth ramp along x in mm, a hole at the bottom right."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[..., 2] = index
    depth_mm = np.broadcast_to(np.arange(1000, 1000 + 250 * W, 250, dtype=np.uint16), (H, W)).copy()
    depth_mm[-1, -1] = 0
    return rgb, depth_mm


def save_pair(rgb_path, depth_path, index):
    rgb, depth_mm = pair(index)
    rgb_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(rgb_path)
    Image.fromarray(depth_mm).save(depth_path)
    return rgb, depth_mm


def check_sample(sample, rgb, depth_mm, row):
    np.testing.assert_array_equal(sample["rgb"], rgb)
    assert sample["depth"].dtype == np.float32 and sample["depth"].shape == (H, W)
    assert sample["depth"][0, 0] == pytest.approx(1.0) and sample["depth"][0, 1] == pytest.approx(
        1.25
    )
    assert not sample["valid"][-1, -1] and sample["depth"][-1, -1] == 0
    assert sample["valid"].sum() == H * W - 1
    np.testing.assert_allclose(sample["depth"], depth_mm / 1000.0, rtol=1e-6)
    assert sample["index"] == row


def densedepth_export(root):
    data = root / "data"
    lines, pairs = [], []
    for i in range(3):
        rgb_rel, depth_rel = (
            f"data/nyu2_test/{i:05d}_colors.png",
            f"data/nyu2_test/{i:05d}_depth.png",
        )
        pairs.append(save_pair(root / rgb_rel, root / depth_rel, i))
        lines.append(f"{rgb_rel},{depth_rel}")
    (data / "nyu2_test.csv").write_text("\n".join(lines) + "\n")
    return data / "nyu2_test.csv", pairs


def test_densedepth_paths_relative_to_csv_parent(tmp_path):
    csv, pairs = densedepth_export(tmp_path)
    reader = DenseDepthFolder(csv)
    assert len(reader) == 3 and reader.image_size == (H, W)
    for row in (0, 2):
        check_sample(reader[row], *pairs[row], row)
    assert reader[1]["name"] == "data/nyu2_test/00001_colors"


def test_densedepth_paths_relative_to_csv_folder(tmp_path):
    rgb, depth = save_pair(tmp_path / "a" / "0_colors.png", tmp_path / "a" / "0_depth.png", 4)
    (tmp_path / "list.csv").write_text("a/0_colors.png, a/0_depth.png\n\n")
    reader = DenseDepthFolder(tmp_path / "list.csv")
    assert len(reader) == 1
    check_sample(reader[0], rgb, depth, 0)


def bts_export(root):
    lines, pairs = [], []
    for i, scene in ((45, "bathroom"), (46, "kitchen")):
        rgb_rel, depth_rel = f"{scene}/rgb_{i:05d}.png", f"{scene}/sync_depth_{i:05d}.png"
        pairs.append(save_pair(root / "test" / rgb_rel, root / "test" / depth_rel, i))
        lines.append(f"/{rgb_rel} {depth_rel} 518.8579")
    (root / "nyu_test.txt").write_text("\n".join(lines) + "\n")
    return root / "nyu_test.txt", pairs


def test_bts_list_with_data_root(tmp_path):
    listing, pairs = bts_export(tmp_path)
    reader = BTSFolder(listing, data_root=tmp_path / "test")
    assert len(reader) == 2 and reader.focals.tolist() == [pytest.approx(518.8579)] * 2
    check_sample(reader[1], *pairs[1], 1)
    assert reader[0]["name"] == "bathroom/rgb_00045"
    assert reader[-1]["index"] == 1


def test_bts_jpeg_rgb(tmp_path):
    rgb, depth = pair(0)
    rgb[:, : W // 2] = (255, 0, 0)  # a block, so chroma subsampling keeps it red
    Image.fromarray(rgb).save(tmp_path / "rgb_0.jpg", quality=95)
    Image.fromarray(depth).save(tmp_path / "d_0.png")
    (tmp_path / "l.txt").write_text("rgb_0.jpg d_0.png\n")
    sample = BTSFolder(tmp_path / "l.txt")[0]
    assert sample["rgb"].shape == (H, W, 3) and sample["rgb"].dtype == np.uint8
    assert sample["rgb"][0, 0, 0] > 200 and sample["rgb"][0, -1, 0] < 50  # lossy, still red left


# ------------------------------------------------------------------------------- bad input


def test_missing_list_file(tmp_path):
    with pytest.raises(DataError, match="No DenseDepth CSV.*horatio"):
        DenseDepthFolder(tmp_path / "nyu2_test.csv")
    with pytest.raises(DataError, match="No BTS list file"):
        BTSFolder(tmp_path / "x.txt")


def test_all_missing_files_are_reported(tmp_path):
    csv, _ = densedepth_export(tmp_path)
    for i in range(3):
        (tmp_path / f"data/nyu2_test/{i:05d}_depth.png").unlink()
    (tmp_path / "data/nyu2_test/00002_colors.png").unlink()
    with pytest.raises(DataError) as err:
        DenseDepthFolder(csv)
    message = str(err.value)
    assert message.startswith("4 files listed") and "00000_depth.png" in message


def test_bts_missing_files(tmp_path):
    listing, _ = bts_export(tmp_path)
    with pytest.raises(DataError, match="4 files listed.*bathroom/rgb_00045"):
        BTSFolder(listing)  # wrong root: the list is for tmp_path/test


def test_eight_bit_depth_png_is_refused(tmp_path):
    rgb, _ = pair(0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.full((H, W), 100, np.uint8)).save(tmp_path / "d.png")
    (tmp_path / "l.csv").write_text("c.png,d.png\n")
    with pytest.raises(
        DataError,
        match="8-bit greyscale PNG, but this list's depth scale 'mm' needs 16-bit greyscale",
    ):
        DenseDepthFolder(tmp_path / "l.csv")
    Image.fromarray(rgb).save(tmp_path / "d.png")
    with pytest.raises(DataError, match="8-bit RGB PNG"):
        read_depth_png(tmp_path / "d.png")
    Image.fromarray(rgb).save(tmp_path / "d.jpg")
    with pytest.raises(DataError, match="not a PNG"):
        read_depth_png(tmp_path / "d.jpg")


def test_malformed_lines(tmp_path):
    (tmp_path / "l.csv").write_text("only_one_field.png\n")
    with pytest.raises(DataError, match="line 1"):
        DenseDepthFolder(tmp_path / "l.csv")
    (tmp_path / "l.txt").write_text("a.jpg None 518.8\n")
    with pytest.raises(DataError, match="with a depth file"):
        BTSFolder(tmp_path / "l.txt")
    (tmp_path / "l.txt").write_text("a.jpg b.png f\n")
    with pytest.raises(DataError, match="not a number"):
        BTSFolder(tmp_path / "l.txt")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(DataError, match="no image pairs"):
        BTSFolder(tmp_path / "e.txt")


def test_size_mismatch_between_rgb_and_depth(tmp_path):
    rgb, depth = pair(0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(depth[:, :-1].copy()).save(tmp_path / "d.png")
    (tmp_path / "l.csv").write_text("c.png,d.png\n")
    with pytest.raises(DataError, match="do not match"):
        DenseDepthFolder(tmp_path / "l.csv")[0]

"""The procedural rooms set: exact geometry, determinism, knobs, sensor holes, files, CLI."""

import dataclasses

import h5py
import numpy as np
import pytest

from depthlib.cli import main
from depthlib.data.info import dataset_summary, format_dataset_summary
from depthlib.data.nyu import NYULabeled, read_extras, write_labeled
from depthlib.data.rooms import (
    RoomKnobs,
    ensure_rooms,
    parse_knobs,
    parse_size,
    render_room,
    render_scene,
    sample_scene,
    split_indices,
    synthesize,
)
from depthlib.data.rooms import render as rooms_render
from depthlib.data.rooms import writer as rooms_writer
from depthlib.data.rooms.furniture import _piece, _to_world
from depthlib.data.rooms.scene import Material, Primitive, _material, look_at_rotation, pick_color
from depthlib.errors import ConfigError

H, W = 48, 64


def empty_room(room=(4.0, 2.8, 6.0), camera=(2.0, 1.5, 0.5), yaw=0.0, pitch=0.0, primitives=()):
    """A furnished scene stripped bare, with a hand-placed camera."""
    scene = sample_scene(0, 0, RoomKnobs(n_objects=0))
    return dataclasses.replace(
        scene,
        room=np.array(room, float),
        camera=np.array(camera, float),
        rotation=look_at_rotation(yaw, pitch, 0.0),
        primitives=list(primitives),
    )


def prim(kind, center, half, yaw=0.0):
    grey = Material(np.full(3, 0.5, np.float32))
    return Primitive(kind, np.array(center, float), np.array(half, float), yaw, grey, 0)


# ------------------------------------------------------------------------------------ geometry


def test_intrinsics_are_nyus_at_640x480_and_scale():
    assert rooms_render.intrinsics(480, 640) == pytest.approx(
        (518.8579, 519.4696, 325.5824, 253.7362)
    )
    fx, fy, cx, cy = rooms_render.intrinsics(240, 320)
    assert (fx, fy) == pytest.approx((518.8579 / 2, 519.4696 / 2))
    assert cx == pytest.approx((325.5824 + 0.5) / 2 - 0.5)


def test_back_wall_depth_is_constant_and_exact():
    scene = empty_room()
    depth, surf, _ = rooms_render.cast(scene, H, W)
    wall = surf == 5  # the z = D wall
    assert wall[H // 2, W // 2] and wall.mean() > 0.3
    np.testing.assert_allclose(depth[wall], 6.0 - 0.5, rtol=1e-5)


def test_floor_depth_follows_the_pinhole_model():
    scene = empty_room(camera=(2.0, 1.2, 0.5))
    depth, surf, _ = rooms_render.cast(scene, H, W)
    fx, fy, cx, cy = rooms_render.intrinsics(H, W)
    rows, cols = np.nonzero(surf == 2)
    assert len(rows) > 50
    np.testing.assert_allclose(depth[rows, cols], 1.2 * fy / (rows - cy), rtol=1e-5)


def test_turned_camera_sees_side_wall_at_analytic_depth():
    scene = empty_room(yaw=90.0)  # looking along +x at the x = 4 wall from x = 2
    depth, surf, _ = rooms_render.cast(scene, H, W)
    assert surf[H // 2, W // 2] == 1
    np.testing.assert_allclose(depth[surf == 1], 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    "shape, expected",
    [
        (prim("box", (2.0, 1.5, 3.0), (0.4, 0.4, 0.25)), 3.0 - 0.25 - 0.5),
        (
            prim("box", (2.0, 1.5, 3.0), (0.4, 0.4, 0.4), yaw=np.pi / 4),
            3.0 - 0.4 * np.sqrt(2) - 0.5,
        ),
        (prim("cylinder", (2.0, 1.5, 3.0), (0.3, 0.6, 0.3)), 3.0 - 0.3 - 0.5),
        (prim("sphere", (2.0, 1.5, 3.0), (0.35, 0.35, 0.35)), 3.0 - 0.35 - 0.5),
        # a frustum 0.4 m wide at the bottom, 0.2 m at the top: 0.3 m at the camera's height
        (prim("cone", (2.0, 1.5, 3.0), (0.4, 0.6, 0.2)), 3.0 - 0.3 - 0.5),
        (prim("cone", (2.0, 1.0, 3.0), (0.1, 0.3, 0.1)), np.inf),  # below the ray: missed
    ],
)
def test_primitives_in_front_of_the_camera_are_hit_at_their_surface(shape, expected):
    # The principal point is not the image centre: aim the camera so a pixel looks straight ahead.
    scene = empty_room(primitives=[shape])
    depth, surf, _ = rooms_render.cast(scene, 480, 640)
    v, u = 254, 326  # nearest pixel to (cx, cy) = (325.6, 253.7)
    if expected == np.inf:
        assert surf[v, u] < rooms_render.N_ROOM_FACES
        return
    assert surf[v, u] == rooms_render.N_ROOM_FACES
    assert depth[v, u] == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("seed", range(4))
def test_a_tables_top_sits_at_its_catalogue_height_in_the_depth_map(seed):
    """Sizes are metres as the catalogue draws them: back-projected, the top of a table drawn
    by the furniture catalogue lies at its drawn height above the floor."""
    rng = np.random.default_rng(seed)
    parts, _, top = _piece(rng, "table", 1.0, 2.8)
    assert 0.68 <= top <= 0.78 or 0.35 <= top <= 0.5
    table = [_to_world(part[:4], 2.0, 2.6, 0.3, Material(np.full(3, 0.5, np.float32)), 0)
             for part in parts]  # fmt: skip
    scene = empty_room(camera=(2.0, 1.45, 0.7), pitch=35.0, primitives=table)
    depth, surf, dirs = rooms_render.cast(scene, 240, 320)
    on_top = surf == rooms_render.N_ROOM_FACES  # part 0 is the table top
    heights = scene.camera[1] + dirs[1][on_top] * depth[on_top]
    assert on_top.sum() > 100
    assert heights.max() == pytest.approx(top, abs=2e-3)
    assert np.mean(np.abs(heights - top) < 2e-3) > 0.5  # most of what is seen is the top face


def test_nearest_surface_wins():
    far, near = (
        prim("box", (2.0, 1.5, 4.0), (0.5, 0.5, 0.1)),
        prim("sphere", (2.0, 1.5, 2.0), (0.2,) * 3),
    )
    depth, surf, _ = rooms_render.cast(empty_room(primitives=[far, near]), 480, 640)
    assert surf[254, 326] == rooms_render.N_ROOM_FACES + 1
    assert depth[254, 326] == pytest.approx(2.0 - 0.2 - 0.5, abs=2e-3)


# ------------------------------------------------------------------------------------ samples


def test_same_seed_same_bytes_other_seed_or_index_differs():
    a, b = render_room(3, 5, H, W), render_room(3, 5, H, W)
    for key in ("rgb", "depth", "raw_depth"):
        assert a[key].tobytes() == b[key].tobytes()
    assert a["knobs"] == b["knobs"]
    assert not np.array_equal(render_room(4, 5, H, W)["depth"], a["depth"])
    assert not np.array_equal(render_room(3, 6, H, W)["depth"], a["depth"])


def test_depths_finite_in_nyu_range_and_raw_holes_are_a_subset():
    for i in range(6):
        s = render_room(1, i, H, W)
        depth, raw = s["depth"], s["raw_depth"]
        assert depth.dtype == np.float32 and s["rgb"].dtype == np.uint8
        assert np.isfinite(depth).all() and depth.min() >= 0.4 and depth.max() <= 9.95
        holes = raw == 0
        assert holes.any() and not holes.all()
        close = np.abs(raw[~holes] - depth[~holes]) / depth[~holes]
        assert close.max() < 0.06  # disparity quantisation only
        assert s["knobs"]["hole_fraction"] == pytest.approx(holes.mean())


def test_forcing_light_darkens_the_image_and_leaves_the_geometry():
    for i in range(3):
        dark, bright = render_room(2, i, H, W, light=0.15), render_room(2, i, H, W, light=1.2)
        assert dark["rgb"].mean() < bright["rgb"].mean() - 20
        np.testing.assert_array_equal(dark["depth"], bright["depth"])
        assert (
            dark["knobs"]["light"] == 0.15
            and dark["knobs"]["mean_luminance"] < bright["knobs"]["mean_luminance"]
        )


def test_appearance_never_changes_the_depth_map():
    """Other colours, textures, gloss, light and camera effects: the same scene, the same depth."""
    scene = sample_scene(4, 2)
    rng = np.random.default_rng(9)
    restyled = dataclasses.replace(
        scene,
        surfaces=[_material(rng, pick_color(rng, [], 1.0), "carpet", (0.5, 1.0)) for _ in range(6)],
        primitives=[
            dataclasses.replace(p, material=_material(rng, (0.2, 0.9, 0.1), "wood"))
            for p in scene.primitives
        ],  # fmt: skip
        lamp_power=3.0,
    )
    one = render_scene(scene, H, W, np.random.default_rng(0), raw=False)
    other = render_scene(restyled, H, W, np.random.default_rng(1), raw=False)
    assert np.abs(one["rgb"].astype(int) - other["rgb"]).mean() > 10
    np.testing.assert_array_equal(one["depth"], other["depth"])
    for knobs in ({"contrast": 0.0}, {"object_albedo": 0.2}, {"noise": 0.2}):
        forced = render_room(4, 2, H, W, raw=False, **knobs)
        np.testing.assert_array_equal(forced["depth"], render_room(4, 2, H, W, raw=False)["depth"])


def test_furniture_keeps_its_catalogue_size_unless_the_stress_knob_is_forced():
    assert {render_room(1, i, 8, 8, raw=False)["knobs"]["size_scale"] for i in range(5)} == {1.0}


def test_size_knob_makes_objects_larger():
    small = [
        render_room(5, i, H, W, size_scale=0.6, raw=False)["knobs"]["object_size_mean"]
        for i in range(4)
    ]
    large = [
        render_room(5, i, H, W, size_scale=1.5, raw=False)["knobs"]["object_size_mean"]
        for i in range(4)
    ]
    assert np.mean(large) > 1.5 * np.mean(small)


def test_contrast_knob_sets_the_realised_colour_distance():
    low = [
        render_room(6, i, H, W, contrast=0.05, raw=False)["knobs"]["color_distance"]
        for i in range(4)
    ]
    high = [
        render_room(6, i, H, W, contrast=1.0, raw=False)["knobs"]["color_distance"]
        for i in range(4)
    ]
    assert np.mean(low) < 0.5 * np.mean(high)


def test_no_objects_means_no_object_pixels():
    k = render_room(0, 1, H, W, n_objects=0)["knobs"]
    assert k["object_fraction"] == 0 and k["objects_visible"] == 0 and k["n_objects"] == 0


def test_knobs_accept_a_dataclass_and_reject_nonsense():
    k = render_room(0, 2, H, W, RoomKnobs(light=0.5), contrast=0.3, raw=False)["knobs"]
    assert (k["light"], k["contrast"]) == (0.5, 0.3)
    with pytest.raises(ConfigError, match="outside"):
        render_room(0, 0, H, W, contrast=2.0)
    with pytest.raises(ConfigError, match="choose from"):
        render_room(0, 0, H, W, brightness=0.5)
    with pytest.raises(ConfigError, match="non-negative"):
        render_room(-1, 0, H, W)


def test_render_scene_of_a_bare_room_has_only_room_pixels():
    out = render_scene(empty_room(), H, W, np.random.default_rng(0))
    assert out["stats"]["object_fraction"] == 0 and out["rgb"].shape == (H, W, 3)


# ------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("text", ["240by320", "-240x320", "240x", "4x320", "240x320x3"])
def test_bad_sizes_name_the_format(text):
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_size(text)


def test_sizes_and_knobs_parse():
    assert parse_size("240x320") == (240, 320) and parse_size("48X64") == (48, 64)
    assert parse_knobs(["light=0.2", "n_objects=3"]) == RoomKnobs(light=0.2, n_objects=3)
    assert parse_knobs([]) is None
    for bad in (["light"], ["glow=1"], ["light=dark"], ["contrast=3"]):
        with pytest.raises(ConfigError):
            parse_knobs(bad)


def test_splits_follow_nyu_proportions_and_are_disjoint():
    train, test = split_indices(1449)
    assert (len(train), len(test)) == (795, 654)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == 1449
    assert len(split_indices(10, n_train=3)[0]) == 3
    with pytest.raises(ConfigError):
        split_indices(1)
    with pytest.raises(ConfigError, match="non-empty"):
        split_indices(10, n_train=10)


def test_a_larger_pool_adds_training_rooms_and_keeps_the_654_test_rooms():
    train, test = split_indices(1449, seed=3)
    more_train, same_test = split_indices(2000, seed=3)
    np.testing.assert_array_equal(same_test, test)
    assert len(more_train) == 795 + 551 and set(train) < set(more_train)
    assert np.intersect1d(more_train, same_test).size == 0


# ------------------------------------------------------------------------------------ files


def test_synthesize_round_trips_through_the_nyu_reader(tmp_path):
    path = synthesize(tmp_path / "rooms.mat", 12, (24, 32), seed=1, progress=False, workers=1)
    assert (tmp_path / "rooms_splits.mat").is_file()
    train, test = NYULabeled(path, "train"), NYULabeled(path, "test")
    assert (len(train), len(test)) == (7, 5)
    sample = test[1]
    assert sample["rgb"].shape == (24, 32, 3) and sample["depth"].shape == (24, 32)
    direct = render_room(1, sample["index"], 24, 32)
    np.testing.assert_array_equal(sample["rgb"], direct["rgb"])
    np.testing.assert_array_equal(sample["depth"], direct["depth"])
    raw = NYULabeled(path, "test", depth="raw")[1]
    np.testing.assert_array_equal(raw["valid"], direct["raw_depth"] > 0)
    extras, attrs = read_extras(path)
    assert extras["light"][sample["index"]] == direct["knobs"]["light"]
    assert len(extras["index"]) == 12 and list(extras["index"]) == list(range(12))
    assert (attrs["n"], attrs["seed"], attrs["height"], attrs["width"]) == (12, 1, 24, 32)


def test_files_are_identical_whatever_the_number_of_workers(tmp_path):
    a = synthesize(tmp_path / "a.mat", 8, (16, 24), seed=2, progress=False, workers=1)
    b = synthesize(tmp_path / "b.mat", 8, (16, 24), seed=2, progress=False, workers=2)
    c = synthesize(tmp_path / "c.mat", 8, (16, 24), seed=3, progress=False, workers=1)
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        for name in ("images", "depths", "rawDepths"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes()
        assert fa["depths"][()].tobytes() != fc["depths"][()].tobytes()


def test_ensure_rooms_reuses_a_matching_file_and_rerenders_otherwise(tmp_path):
    path = tmp_path / "rooms.mat"
    ensure_rooms(path, 6, (16, 24), seed=0, progress=False, workers=1)
    stamp = path.stat().st_mtime_ns
    ensure_rooms(path, 6, "16x24", seed=0, progress=False, workers=1)
    assert path.stat().st_mtime_ns == stamp
    ensure_rooms(path, 6, (16, 24), seed=1, progress=False, workers=1)
    assert read_extras(path)[1]["seed"] == 1


def test_writer_falls_back_to_plain_writes_for_other_layouts(tmp_path):
    zeros = np.zeros((2, 16, 24), np.float32)
    path = write_labeled(
        tmp_path / "plain.mat", np.zeros((2, 16, 24, 3), np.uint8), zeros, compression=None
    )
    sample = render_room(0, 0, 16, 24)
    with h5py.File(path, "r+") as f:
        assert rooms_writer.deflate_level(f) is None
        rooms_writer.put(f, 1, rooms_writer.chunks(sample, None))
    np.testing.assert_array_equal(NYULabeled(path, "all")[1]["rgb"], sample["rgb"])


def test_summary_of_rooms_and_of_a_file_without_knobs(tmp_path):
    path = synthesize(tmp_path / "rooms.mat", 10, (16, 24), seed=0, progress=False, workers=1)
    s = dataset_summary(path)
    assert (s["n_images"], s["n_train"], s["n_test"], s["height"], s["width"]) == (10, 5, 5, 16, 24)
    assert 0.4 < s["depth_min"] <= s["depth_median"] <= s["depth_max"] < 10
    assert 0 < s["raw_hole_fraction"] < 1 and "light" in s["knobs"] and "index" not in s["knobs"]
    assert "light" in format_dataset_summary(s)
    plain = write_labeled(
        tmp_path / "nyu_like.mat",
        np.zeros((3, 8, 8, 3), np.uint8),
        np.full((3, 8, 8), 2.0, np.float32),
    )
    p = dataset_summary(plain)
    assert p["knobs"] == {} and p["n_train"] is None and p["depth_median"] == 2.0
    assert "no split file" in format_dataset_summary(p)


# ------------------------------------------------------------------------------------ CLI


def test_cli_synth_and_info(tmp_path, capsys):
    out = tmp_path / "tiny.mat"
    code = main(["synth", "--out", str(out), "--n", "6", "--size", "16x24", "--seed", "4", "--quiet",
                 "--workers", "1", "--knob", "light=0.4"])  # fmt: skip
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "6 images of 16x24" in printed and "train 3, test 3" in printed
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "forced knobs {'light': 0.4}" in info and "size_scale" in info


def test_cli_uses_the_profile_defaults(tmp_path, capsys):
    assert (
        main(
            ["synth", "--out", str(tmp_path / "q.mat"), "--profile", "quick", "--n", "4", "--quiet"]
        )
        == 0
    )
    assert "4 images of 48x64" in capsys.readouterr().out


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x.mat"), "--size", "240by320"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.mat")]) == 2
    assert "No dataset file" in capsys.readouterr().err

"""Furniture for a procedural room: wardrobes, beds, sofas, tables, chairs, lamps, clutter, decor.

Each piece is a few primitives built in its own frame (origin on the floor under its centre, +z
pointing out of its front) and then placed against a wall or freely, with a random turn about the
vertical, without overlapping other pieces or the camera. Pieces stand on the floor and small
items rest on top of them, so contact with the floor (a strong depth cue) is always right.
"""

from __future__ import annotations

import numpy as np

from depthlib.data.rooms.scene import (
    CAMERA_CLEARANCE,
    OBJECT_COLORS,
    Material,
    Primitive,
    _material,
    pick_color,
)

# name: (probability, placement)
PIECES = {
    "cabinet": (0.20, "wall"),
    "shelf": (0.08, "wall"),
    "plant": (0.06, "free"),
    "bed": (0.07, "wall"),
    "sofa": (0.08, "wall"),
    "desk": (0.08, "wall"),
    "table": (0.13, "free"),
    "round_table": (0.05, "free"),
    "chair": (0.11, "free"),
    "drum": (0.10, "free"),
    "floor_lamp": (0.06, "free"),
    "ball": (0.06, "free"),
    "block": (0.05, "free"),
    "stool": (0.01, "free"),
}
_NAMES = list(PIECES)
_PROBS = np.array([p for p, _ in PIECES.values()])
_PROBS = _PROBS / _PROBS.sum()


def _box(center, half, yaw=0.0):
    return ("box", np.asarray(center, float), np.asarray(half, float), float(yaw))


def _cylinder(x, z, y0, y1, r):
    return ("cylinder", np.array([x, (y0 + y1) / 2, z]), np.array([r, (y1 - y0) / 2, r]), 0.0)


def _cone(x, z, y0, y1, r0, r1):
    """A vertical frustum: radius r0 at height y0, r1 at y1."""
    return ("cone", np.array([x, (y0 + y1) / 2, z]), np.array([r0, (y1 - y0) / 2, r1]), 0.0)


def _sphere(x, y, z, r):
    return ("sphere", np.array([x, y, z]), np.array([r, r, r]), 0.0)


def _legs(hx, hz, top, leg):
    """Four square legs under a top of half size (hx, hz) whose underside is at height ``top``."""
    return [
        _box((sx * (hx - leg), top / 2, sz * (hz - leg)), (leg, top / 2, leg))
        for sx in (-1, 1)
        for sz in (-1, 1)
    ]


def _piece(rng, name, s, ceiling):
    """Parts in the piece's frame, its footprint half sizes and the height of its top surface.

    Each part is ``(kind, center, half, yaw, part)`` where ``part`` (0 body, 1 accent) picks
    the material. A top height of 0 means nothing is put on it.
    """
    u = rng.uniform
    if name == "cabinet":  # wardrobe, bookshelf, dresser, low cabinet
        w, d = u(0.5, 1.6) * s, u(0.3, 0.6) * s
        h = min((u(1.5, 2.2) if rng.random() < 0.45 else u(0.45, 1.0)) * s, ceiling - 0.1)
        parts = [(*_box((0, h / 2, 0), (w / 2, h / 2, d / 2)), 0)]
        if rng.random() < 0.5:  # a door or drawer panel on the front in the accent colour
            parts.append((*_box((0, h / 2, d / 2 + 0.01), (w / 2 - 0.04, h / 2 - 0.05, 0.01)), 1))
        return parts, (w / 2, d / 2 + 0.02), h if h < 1.3 else 0.0
    if name == "bed":
        w, d, h = u(0.9, 1.8) * s, u(1.9, 2.1) * s, u(0.4, 0.6) * s
        head = min(u(0.8, 1.2) * s, ceiling - 0.1)
        parts = [
            (*_box((0, h / 2, 0.04), (w / 2, h / 2, d / 2 - 0.04)), 0),
            (*_box((0, head / 2, -d / 2 + 0.03), (w / 2 + 0.02, head / 2, 0.03)), 1),
        ]
        for x in (-w / 4, w / 4) if w > 1.2 else (0,):  # pillows
            parts.append(
                (*_box((x, h + 0.06 * s, -d / 2 + 0.25 * s), np.multiply((0.3, 0.06, 0.18), s)), 1)
            )
        return parts, (w / 2 + 0.02, d / 2), 0.0
    if name == "sofa":
        w, d, seat = u(1.4, 2.4) * s, u(0.8, 1.0) * s, u(0.38, 0.48) * s
        back, arm = u(0.75, 0.95) * s, u(0.1, 0.2) * s
        parts = [
            (*_box((0, seat / 2, 0.1 * d), (w / 2 - arm, seat / 2, 0.4 * d)), 0),
            (*_box((0, back / 2, -0.4 * d), (w / 2, back / 2, 0.1 * d)), 0),
            (*_box((-(w / 2 - arm / 2), 0.3 * back, 0), (arm / 2, 0.3 * back, d / 2)), 1),
            (*_box((w / 2 - arm / 2, 0.3 * back, 0), (arm / 2, 0.3 * back, d / 2)), 1),
        ]
        for x in u(-0.35, 0.35, rng.integers(0, 3)) * w:  # cushions leaning on the back
            parts.append(
                (
                    *_box(
                        (x, seat + 0.2 * s, -0.25 * d),
                        np.multiply((0.2, 0.2, 0.06), s),
                        u(-0.3, 0.3),
                    ),
                    1,
                )
            )
        return parts, (w / 2, d / 2), 0.0
    if name in ("desk", "table"):
        w, d = u(0.8, 1.8) * s, u(0.5, 0.9) * s
        h = (u(0.68, 0.78) if rng.random() < 0.75 or name == "desk" else u(0.35, 0.5)) * s
        t, leg = 0.03 + 0.02 * rng.random(), u(0.02, 0.04) * s
        parts = [(*_box((0, h - t / 2, 0), (w / 2, t / 2, d / 2)), 0)]
        parts += [(*p, 1) for p in _legs(w / 2, d / 2, h - t, leg)]
        if name == "desk" and rng.random() < 0.5:  # a monitor on its foot
            sw, sh = u(0.45, 0.7) * s, u(0.28, 0.42) * s
            parts.append((*_box((0, h + 0.12 * s + sh / 2, -d / 4), (sw / 2, sh / 2, 0.02)), 1))
            parts.append((*_box((0, h + 0.06 * s, -d / 4), (0.1 * s, 0.06 * s, 0.08 * s)), 1))
        return parts, (w / 2, d / 2), h
    if name == "shelf":  # an open bookshelf: sides, boards and rows of books
        w, d, h = u(0.6, 1.2) * s, u(0.25, 0.4) * s, min(u(0.8, 2.0) * s, ceiling - 0.1)
        parts = [
            (*_box((sx * (w / 2 - 0.01), h / 2, 0), (0.01, h / 2, d / 2)), 0) for sx in (-1, 1)
        ]
        parts.append((*_box((0, h / 2, -d / 2 + 0.005), (w / 2, h / 2, 0.005)), 0))
        for y in np.arange(0.02, h, u(0.3, 0.4) * s):
            parts.append((*_box((0, y, 0), (w / 2, 0.01, d / 2)), 0))
            x = -w / 2 + 0.02
            while y + 0.25 * s < h and x < w / 2 - 0.06 * s and rng.random() < 0.93:
                bw, bh = u(0.02, 0.05) * s, u(0.15, 0.26) * s
                parts.append(
                    (*_box((x + bw / 2, y + 0.01 + bh / 2, 0.0), (bw / 2, bh / 2, d / 3)), 1)
                )
                x += bw + (u(0.05, 0.2) * s if rng.random() < 0.1 else 0.002)
        return parts, (w / 2, d / 2), h if h < 1.3 else 0.0
    if name == "plant":  # a pot and its foliage
        r, h, leaves = u(0.1, 0.22) * s, u(0.2, 0.45) * s, u(0.2, 0.45) * s
        parts = [
            (*_cone(0, 0, 0, h, 0.75 * r, r), 1),
            (*_sphere(0, h + 0.8 * leaves, 0, leaves), 0),
        ]
        return parts, (max(r, leaves),) * 2, 0.0
    if name == "round_table":
        r, h = u(0.35, 0.65) * s, u(0.65, 0.78) * s
        parts = [
            (*_cylinder(0, 0, h - 0.04, h, r), 0),
            (*_cylinder(0, 0, 0.03, h - 0.04, 0.04 * s), 1),
            (*_cylinder(0, 0, 0, 0.03, 0.25 * r + 0.1), 1),
        ]
        return parts, (r, r), h
    if name == "chair":
        w, seat, back = u(0.4, 0.5) * s, u(0.42, 0.48) * s, u(0.35, 0.5) * s
        leg = 0.02 * s
        parts = [(*_box((0, seat - 0.025, 0), (w / 2, 0.025, w / 2)), 0)]
        parts += [(*p, 1) for p in _legs(w / 2, w / 2, seat - 0.05, leg)]
        parts.append((*_box((0, seat + back / 2, -w / 2 + 0.02), (w / 2, back / 2, 0.02)), 0))
        return parts, (w / 2, w / 2), 0.0
    if name in ("drum", "stool"):  # bin, plant pot, pouf, pillar-like stand
        r, h = u(0.12, 0.35) * s, min(u(0.3, 1.0) * s, ceiling - 0.1)
        return [(*_cylinder(0, 0, 0, h, r), 0)], (r, r), h if h < 1.0 else 0.0
    if name == "floor_lamp":
        h, r = min(u(1.3, 1.7) * s, ceiling - 0.4), u(0.12, 0.22) * s
        parts = [
            (*_cylinder(0, 0, 0, 0.03, 0.15 * s), 1),
            (*_cylinder(0, 0, 0.03, h, 0.015 * s), 1),
            (*_sphere(0, h + r * 0.9, 0, r), 0)
            if rng.random() < 0.4
            else (*_cone(0, 0, h - 0.05, h + 1.2 * r, 1.1 * r, 0.7 * r), 0),
        ]
        return parts, (max(r, 0.15 * s),) * 2, 0.0
    if name == "ball":
        r = u(0.12, 0.35) * s
        return [(*_sphere(0, r, 0, r), 0)], (r, r), 0.0
    # "block": a crate, box or footrest
    w, d, h = u(0.3, 0.8) * s, u(0.3, 0.8) * s, u(0.2, 0.6) * s
    return [(*_box((0, h / 2, 0), (w / 2, h / 2, d / 2)), 0)], (w / 2, d / 2), h


def _small_item(rng, s, hx, hz, top):
    """A book, box, cup, vase, bin or ball standing on a surface of half size (hx, hz) at height
    ``top`` (0: the floor)."""
    u, kind = rng.uniform, rng.integers(4)
    x, z = u(-0.7, 0.7) * hx, u(-0.7, 0.7) * hz
    if kind == 0:
        w, h, d = u(0.12, 0.35) * s, u(0.03, 0.25) * s, u(0.12, 0.3) * s
        return _box((x, top + h / 2, z), (w / 2, h / 2, d / 2), rng.uniform(-0.6, 0.6))
    if kind == 1:
        r, h = u(0.03, 0.1) * s, u(0.08, 0.4) * s
        return _cylinder(x, z, top, top + h, r)
    if kind == 2:
        r, h = u(0.04, 0.14) * s, u(0.08, 0.4) * s
        return _cone(x, z, top, top + h, r * u(0.5, 1.0), r)
    r = u(0.05, 0.13) * s
    return _sphere(x, top + r, z, r)


def _object_material(rng, background, contrast, albedo: float = 1.0) -> Material:
    """A furniture colour pulled towards the room's background colour by ``1 - contrast``, then
    scaled by ``albedo`` (dark objects)."""
    color = pick_color(rng, OBJECT_COLORS, 0.4)
    pattern = "wood" if rng.random() < 0.3 else "plain"
    period, amount, axis = rng.uniform(0.01, 0.04), rng.uniform(0.03, 0.1), int(rng.choice([0, 2]))
    m = _material(rng, color, pattern, (0.5, 0.5), period=period, amount=amount, axis=axis)
    m.color = (albedo * (background + contrast * (m.color - background))).astype(np.float32)
    return m


class _Floorplan:
    """Footprints already taken (axis-aligned rectangles in x-z) and the camera's clear circle."""

    def __init__(self, room, camera, forward):
        self.room, self.camera, self.taken = room, camera, []
        self.heading = float(np.arctan2(forward[0], forward[2]))  # camera's yaw

    def fits(self, x, z, ex, ez) -> bool:
        if x - ex < 0 or x + ex > self.room[0] or z - ez < 0 or z + ez > self.room[2]:
            return False
        near = np.clip(self.camera[[0, 2]], [x - ex, z - ez], [x + ex, z + ez])
        if np.hypot(*(near - self.camera[[0, 2]])) < CAMERA_CLEARANCE:
            return False
        return all(
            x + ex < a - 0.03 or x - ex > b + 0.03 or z + ez < c - 0.03 or z - ez > e + 0.03
            for a, b, c, e in self.taken
        )

    def take(self, x, z, ex, ez):
        self.taken.append((x - ex, x + ex, z - ez, z + ez))


def _against_wall(room, wall: int, along: float, offset: float) -> tuple[float, float, float]:
    """x, z and yaw of a piece ``offset`` in front of wall x=0, x=W, z=0 or z=D, facing in."""
    far = room[0] - offset if wall < 2 else room[2] - offset
    x, z = ((offset, along), (far, along), (along, offset), (along, far))[wall]
    return x, z, (np.pi / 2, -np.pi / 2, 0.0, np.pi)[wall]


def _place(rng, plan, placement, hx, hz, tries=25):
    """Position and yaw for a footprint of half size (hx, hz), or None if the room is full."""
    room = plan.room
    for _ in range(tries):
        if placement == "wall":
            wall = rng.choice(4, p=[0.3, 0.3, 0.1, 0.3])  # x=0, x=W, z=0 (behind the camera), z=D
            length = room[2] if wall < 2 else room[0]
            if 2 * hx + 0.04 > length:
                continue
            x, z, yaw = _against_wall(room, wall, rng.uniform(hx + 0.02, length - hx - 0.02), hz)
        else:
            yaw = rng.uniform(-np.pi, np.pi) if rng.random() < 0.5 else rng.integers(4) * np.pi / 2
            x, z = rng.uniform(0, room[0]), rng.uniform(0, room[2])
            if rng.random() < 0.7:  # mostly in front of the camera, where it will be seen
                angle = plan.heading + rng.uniform(-0.5, 0.5)
                reach = rng.uniform(CAMERA_CLEARANCE + 0.2, 5.0)
                x, z = plan.camera[[0, 2]] + reach * np.array([np.sin(angle), np.cos(angle)])
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        ex, ez = c * hx + s * hz, s * hx + c * hz
        if plan.fits(x, z, ex, ez):
            plan.take(x, z, ex, ez)
            return x, z, float(yaw)
    return None


def _to_world(part, x, z, yaw, material, group) -> Primitive:
    kind, center, half, part_yaw = part
    c, s = np.cos(yaw), np.sin(yaw)
    world = np.array(
        [x + c * center[0] + s * center[2], center[1], z - s * center[0] + c * center[2]]
    )
    return Primitive(kind, world, half, part_yaw + yaw if kind == "box" else 0.0, material, group)


def _decor(rng, room, background) -> list[Primitive]:
    """Pictures, a door, a window and rugs: texture without furniture-like depth (group -1)."""
    out = []
    for _ in range(rng.integers(0, 5)):
        kind = rng.choice(["picture", "door", "window", "rug"], p=[0.4, 0.2, 0.25, 0.15])
        wall = rng.integers(4)
        length = room[2] if wall < 2 else room[0]
        if kind == "rug":
            w, d = rng.uniform(0.8, 2.5), rng.uniform(0.6, 1.8)
            x, z = rng.uniform(0.3, room[0] - 0.3), rng.uniform(0.3, room[2] - 0.3)
            half = (min(w, room[0] - 0.2) / 2, 0.005, min(d, room[2] - 0.2) / 2)
            part = _box((0, 0.005, 0), half, rng.uniform(-0.3, 0.3))
            m = _object_material(rng, background, 1.0)
            m.pattern, m.period = "stripes", rng.uniform(0.05, 0.3)
            m.color2 = _object_material(rng, background, 1.0).color
            out.append(_to_world(part, x, z, 0.0, m, -1))
            continue
        # width, height, bottom edge (m) and, for windows, a bright sky-like colour
        w, h, y0, color = {
            "picture": ((0.3, 1.2), (0.3, 0.9), (0.9, 1.4), None),
            "door": ((0.8, 0.95), (2.0, 2.1), (0.0, 0.0), None),
            "window": ((0.8, 2.0), (0.8, 1.3), (0.8, 1.0), (0.85, 0.9, 0.95)),
        }[kind]
        w, h, y0 = (rng.uniform(*r) for r in (w, h, y0))
        h = min(h, room[1] - 0.1 - y0)
        w = min(w, length - 0.4)
        along = rng.uniform(w / 2 + 0.2, length - w / 2 - 0.2)
        depth = 0.02 if kind != "door" else 0.035
        x, z, yaw = _against_wall(room, wall, along, depth)
        part = _box((0, y0 + h / 2, 0), (w / 2, h / 2, depth))
        if color is None:
            m = _object_material(rng, background, 1.0)
        else:
            m = _material(rng, color, "plain", amount=0.02, emissive=float(rng.uniform(0.2, 0.6)))
        out.append(_to_world(part, x, z, yaw, m, -1))
    return out


def furnish(rng, room, camera, forward, knobs, background) -> tuple[list[Primitive], np.ndarray]:
    """All primitives of a room and the characteristic size (largest extent, m) of each object."""
    s, contrast, albedo = knobs["size_scale"], knobs["contrast"], knobs["object_albedo"]
    plan, prims, group = _Floorplan(room, camera, forward), [], 0
    for _ in range(knobs["n_objects"]):
        name = _NAMES[rng.choice(len(_NAMES), p=_PROBS)]
        parts, (hx, hz), top = _piece(rng, name, s, room[1])
        materials = [_object_material(rng, background, contrast, albedo) for _ in range(2)]
        spot = _place(rng, plan, PIECES[name][1], hx, hz)
        if spot is None:
            continue
        x, z, yaw = spot
        prims += [_to_world(p[:4], x, z, yaw, materials[p[4]], group) for p in parts]
        group += 1
        for _ in range(rng.integers(0, 7) if top > 0 else 0):
            item = _small_item(rng, s, hx, hz, top)
            material = _object_material(rng, background, contrast, albedo)
            prims.append(_to_world(item, x, z, yaw, material, group))
            group += 1
    clutter = rng.integers(0, 10) if knobs["n_objects"] else 0  # none in an empty room
    for _ in range(clutter):  # clutter on the floor: boxes, bins, cups, balls
        item = _small_item(rng, s, 0.0, 0.0, 0.0)
        reach = np.max(np.abs(Primitive(*item, None, 0).bounds()[:, [0, 2]]))  # any turn fits
        spot = _place(rng, plan, "free", reach, reach)
        if spot is not None:
            material = _object_material(rng, background, contrast, albedo)
            prims.append(_to_world(item, *spot, material, group))
            group += 1
    prims += _decor(rng, room, background)
    sizes = np.zeros(group)
    for g in range(group):
        corners = np.concatenate([p.bounds() for p in prims if p.group == g])
        sizes[g] = np.max(corners.max(0) - corners.min(0))
    return prims, sizes

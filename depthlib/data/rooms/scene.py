"""Sampling one procedural room: the geometry, materials, camera and lamp, before any pixel exists.

A scene (an axis-aligned room, furniture of boxes, vertical cylinders and spheres, one point
lamp, a pinhole camera) is drawn from a random generator. The factors an experiment may control
are the fields of ``RoomKnobs``; all knobs are drawn first, in a fixed order, then replaced by
any forced value, so forcing one knob changes no other draw (forcing light keeps the geometry;
forcing size_scale or n_objects keeps room, camera, lamp and colours: only furniture moves).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field, fields

import numpy as np

from depthlib.errors import ConfigError

MAX_DEPTH = 9.9  # every visible point lies closer than this (NYU's filled depths end near 10 m)
CAMERA_CLEARANCE = 0.8  # no furniture within this horizontal radius of the camera (m)


@dataclass(frozen=True)
class RoomKnobs:
    """Scene factors an experiment can force; ``None`` means "sample as usual".

    light       scales ambient light and lamp together (1 = normal, 0.1 = dark)
    size_scale  multiplies every object's dimensions (0.5 = small clutter, 1.5 = bulky furniture)
    contrast    object colours: 0 = the mean colour of walls and floor, 1 = freely chosen colours
    object_albedo  multiplies the furniture's colours (0.2 = dark objects); 1 unless forced
    n_objects   number of furniture pieces (small items on and around them come in addition;
                0 = an empty room)
    noise       RGB sensor noise, standard deviation on the 0..1 scale
    camera_height, pitch_deg, roll_deg  camera pose (metres above floor; degrees, down/clockwise > 0)
    """

    light: float | None = None
    size_scale: float | None = None
    contrast: float | None = None
    object_albedo: float | None = None
    n_objects: int | None = None
    noise: float | None = None
    camera_height: float | None = None
    pitch_deg: float | None = None
    roll_deg: float | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def validated(self) -> RoomKnobs:
        """Itself, after checking that forced values are physically possible."""
        limits = {
            "light": (0.0, 10.0),
            "size_scale": (0.1, 3.0),
            "contrast": (0.0, 1.0),
            "object_albedo": (0.0, 1.0),
            "n_objects": (0, 40),
            "noise": (0.0, 0.5),
            "camera_height": (0.3, 2.2),
            "pitch_deg": (-60.0, 60.0),
            "roll_deg": (-30.0, 30.0),
        }
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if value is not None and not (lo <= value <= hi):
                raise ConfigError(
                    f"Room knob {name}={value!r} is outside [{lo}, {hi}]; pick a value in range."
                )
        return self


# What the default draws of every knob cover (a constant knob: one value); draw_knobs reads
# them. A sweep value outside its range tests a model out of its training distribution.
DRAW_RANGES = {
    "light": (0.1, 1.3),
    "size_scale": (1.0, 1.0),
    "contrast": (0.15, 1.0),
    "object_albedo": (1.0, 1.0),
    "n_objects": (3, 14),
    "noise": (0.003, 0.02),
    "camera_height": (1.0, 1.8),
    "pitch_deg": (-5.0, 30.0),
    "roll_deg": (-5.0, 5.0),
}


def draw_knobs(rng: np.random.Generator, overrides: RoomKnobs | None = None) -> dict[str, float]:
    """Every knob's default draw, in this order, then the forced values on top (forcing shifts no
    other draw).

    Object sizes come from the catalogue's real dimensions (size_scale is 1 unless forced), and
    the camera is held at an everyday height: metric depth from one image is only learnable if
    such scale cues are reliable, as they are in real rooms. Force the knobs to study the tails.
    """
    dark = rng.random() < 0.2
    (dim, bright), r = DRAW_RANGES["light"], DRAW_RANGES
    light = rng.uniform(dim, 0.6) if dark else rng.uniform(0.6, bright)
    knobs = {
        "light": float(light),
        "size_scale": r["size_scale"][0],  # a stress knob: catalogue sizes unless forced
        "contrast": float(rng.uniform(*r["contrast"])),
        "object_albedo": r["object_albedo"][0],  # a constant, no draw: default rooms unchanged
        "n_objects": int(rng.integers(r["n_objects"][0], r["n_objects"][1] + 1)),
        "noise": float(rng.uniform(*r["noise"])),
        "camera_height": float(np.clip(rng.normal(1.4, 0.15), *r["camera_height"])),
        "pitch_deg": float(rng.uniform(*r["pitch_deg"])),
        "roll_deg": float(np.clip(rng.normal(0.0, 2.0), *r["roll_deg"])),
    }
    if overrides is not None:
        overrides = overrides.validated()
        for name in RoomKnobs.names():
            value = getattr(overrides, name)
            if value is not None:
                knobs[name] = int(value) if name == "n_objects" else float(value)
    return knobs


@dataclass
class Material:
    """A procedural albedo: a base colour, a pattern drawn in world coordinates, and its settings."""

    color: np.ndarray  # linear RGB albedo
    pattern: str = "plain"  # plain | tiles | planks | carpet | stripes | panels | wood
    period: float = 0.5  # pattern period in metres (tile side, plank width, stripe period)
    amount: float = 0.05  # strength of the per-cell / noise variation
    color2: np.ndarray | None = None  # grout, gaps, second stripe colour
    axis: int = 0  # planks/grain direction: 0 = along x, 2 = along z
    emissive: float = 0.0  # windows glow a little even in dark rooms
    skirting: float = 0.0  # walls: height of the skirting board (m); 0 = none
    skirting_color: np.ndarray | None = None
    gloss: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # highlight
    # strength and Blinn-Phong exponent: lacquer, tiles and plastic shine, paint and cloth do not
    salt: int = 0  # seeds the hash and noise of this material
    noise_freq: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), np.float32))
    noise_phase: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))


@dataclass
class Primitive:
    """A box (rotated about the vertical), vertical cylinder or cone, or a sphere; ``group`` =
    the furniture item it belongs to."""

    kind: str  # box | cylinder | cone | sphere
    center: np.ndarray  # (3,) world metres
    half: np.ndarray  # box half extents; cylinder (r, half height, r); cone (r bottom, half
    # height, r top); sphere (r, r, r)
    yaw: float
    material: Material
    group: int  # index of the object it belongs to; -1 for wall decor and rugs (not objects)

    def bounds(self) -> np.ndarray:
        """(8, 3) corners of an axis-aligned box containing the primitive."""
        if self.kind == "cone":  # half = (bottom radius, half height, top radius)
            r = max(self.half[0], self.half[2])
            half = np.array([r, self.half[1], r])
        elif self.kind == "box" and self.yaw != 0.0:
            c, s = np.cos(self.yaw), np.sin(self.yaw)
            ex = abs(c) * self.half[0] + abs(s) * self.half[2]
            ez = abs(s) * self.half[0] + abs(c) * self.half[2]
            half = np.array([ex, self.half[1], ez])
        else:
            half = self.half
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        return self.center + signs * half


@dataclass
class Scene:
    room: np.ndarray  # (3,) width (x), height (y), depth (z) in metres; the room is [0, room]
    camera: np.ndarray  # (3,) position
    rotation: np.ndarray  # (3, 3) world-from-camera (camera axes: x right, y down, z forward)
    lamp: np.ndarray  # (3,) point-light position
    ambient: float
    lamp_power: float
    surfaces: list[Material]  # 6 room faces: x=0, x=W, floor, ceiling, z=0, z=D
    primitives: list[Primitive]
    sizes: np.ndarray  # characteristic size (largest extent, m) of each object group
    background: np.ndarray  # mean linear albedo of walls and floor (what contrast is relative to)
    knobs: dict[str, float]


def _srgb_to_linear(c) -> np.ndarray:
    return np.asarray(c, np.float32) ** 2.2


WALL_COLORS = [(0.92, 0.91, 0.88), (0.87, 0.80, 0.68), (0.75, 0.76, 0.78), (0.70, 0.78, 0.85),
               (0.74, 0.82, 0.72), (0.93, 0.88, 0.66), (0.88, 0.72, 0.64), (0.55, 0.60, 0.68),
               (0.82, 0.82, 0.80), (0.96, 0.95, 0.93)]  # fmt: skip
FLOOR_COLORS = {
    "planks": [(0.55, 0.38, 0.22), (0.76, 0.62, 0.45), (0.35, 0.22, 0.13), (0.66, 0.50, 0.34)],
    "tiles": [(0.60, 0.60, 0.60), (0.85, 0.85, 0.82), (0.72, 0.66, 0.58), (0.35, 0.36, 0.38)],
    "carpet": [(0.35, 0.40, 0.50), (0.68, 0.60, 0.50), (0.45, 0.45, 0.45), (0.55, 0.30, 0.28)],
}
OBJECT_COLORS = [(0.55, 0.38, 0.22), (0.76, 0.62, 0.45), (0.30, 0.20, 0.12), (0.92, 0.92, 0.90),
                 (0.12, 0.12, 0.13), (0.50, 0.50, 0.52), (0.70, 0.15, 0.12), (0.15, 0.30, 0.65),
                 (0.20, 0.50, 0.25), (0.90, 0.75, 0.20), (0.90, 0.45, 0.15), (0.15, 0.55, 0.55),
                 (0.55, 0.25, 0.50), (0.80, 0.70, 0.60)]  # fmt: skip


def _material(rng, color, pattern="plain", shine=(0.0, 0.0), **kw) -> Material:
    """A material of this colour (jittered a little); ``shine``: the highest highlight strength
    drawn and how likely the surface is glossy at all."""
    jitter = rng.uniform(0.9, 1.1, 3)
    freq = rng.normal(0.0, 1.0, (3, 3)) * rng.uniform(0.5, 3.0)
    glossy = rng.random() < shine[1]
    gloss = (rng.uniform(0.05, shine[0]), rng.uniform(10, 80)) if glossy else (0.0, 1.0)
    return Material(
        color=np.clip(_srgb_to_linear(color) * jitter, 0.005, 0.95).astype(np.float32),
        pattern=pattern,
        gloss=np.array(gloss, np.float32),
        salt=int(rng.integers(0, 2**30)),
        noise_freq=freq.astype(np.float32),
        noise_phase=rng.uniform(0, 2 * np.pi, 3).astype(np.float32),
        **kw,
    )


def pick_color(rng, palette, wild: float) -> tuple:
    """A colour of ``palette`` or, with probability ``wild``, any colour at all: appearance varies
    widely so that a model has to read geometry, not learn the palette."""
    if rng.random() < wild:
        return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.15, 0.95))
    return palette[rng.integers(len(palette))]


def _room_surfaces(rng) -> list[Material]:
    wall_color = pick_color(rng, WALL_COLORS, 0.25)
    wall_kind = rng.choice(["plain", "plain", "stripes"])
    skirting = {"skirting": rng.uniform(0.06, 0.14) if rng.random() < 0.7 else 0.0}
    skirting["skirting_color"] = _srgb_to_linear(
        rng.choice([(0.95, 0.95, 0.93), (0.4, 0.28, 0.18)])
    )
    walls = []
    for _ in range(4):
        # Mostly one paint for all walls; sometimes an accent wall.
        color = pick_color(rng, WALL_COLORS, 0.25) if rng.random() < 0.2 else wall_color
        second = np.clip(_srgb_to_linear(color) * rng.uniform(0.75, 0.95), 0, 1)
        period, amount = rng.uniform(0.08, 0.4), rng.uniform(0.02, 0.06)
        style = {"period": period, "amount": amount, "color2": second, **skirting}
        walls.append(_material(rng, color, wall_kind, shine=(0.06, 0.3), **style))
    floor_kind = rng.choice(["planks", "tiles", "carpet"], p=[0.45, 0.35, 0.2])
    palette = FLOOR_COLORS[floor_kind]
    floor_color = pick_color(rng, palette, 0.15)
    period = {"planks": rng.uniform(0.09, 0.22), "tiles": rng.uniform(0.3, 0.8), "carpet": 0.02}
    amount, axis = rng.uniform(0.06, 0.16), int(rng.choice([0, 2]))
    grout = _srgb_to_linear(floor_color) * rng.uniform(0.3, 0.6)
    style = {"period": float(period[floor_kind]), "amount": amount, "axis": axis, "color2": grout}
    shine = (0.0, 0.0) if floor_kind == "carpet" else (0.4, 0.7)
    floor = _material(rng, floor_color, floor_kind, shine, **style)
    ceiling_kind = rng.choice(["plain", "panels"], p=[0.7, 0.3])
    style = {"period": 0.6, "amount": 0.02, "color2": _srgb_to_linear((0.6, 0.6, 0.6))}
    ceiling = _material(rng, (0.93, 0.93, 0.91), ceiling_kind, **style)
    return [walls[0], walls[1], floor, ceiling, walls[2], walls[3]]


def _camera(rng, knobs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room dimensions, camera position and world-from-camera rotation."""

    def log_uniform(lo, hi):
        return np.exp(rng.uniform(np.log(lo), np.log(hi)))

    room = np.array([log_uniform(2.2, 7.5), rng.uniform(2.4, 3.2), log_uniform(2.8, 10.0)])
    frac = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.4)])
    target = np.array([rng.uniform(0.15, 0.85), rng.uniform(0.6, 1.0)])
    yaw_jitter = rng.normal(0.0, np.radians(12))
    height = min(knobs["camera_height"], room[1] - 0.3)
    plan = room[[0, 2]]

    def place(plan):  # at least 0.5 m from every wall: nothing in view nearer than NYU's ~0.5 m
        return np.clip(frac * plan, 0.5, plan - 0.5)

    # Shrink the floor plan until the farthest corner is within MAX_DEPTH of the camera.
    corners = np.array([[x, z] for x in (0, 1) for z in (0, 1)], float) * plan
    far = np.max(np.linalg.norm(corners - place(plan), axis=1))
    rise = max(height, room[1] - height)
    limit = np.sqrt(MAX_DEPTH**2 - rise**2) - 0.1
    if far > limit:
        plan = plan * limit / far
    room[[0, 2]] = plan
    camera = np.array([*place(plan)[:1], height, *place(plan)[1:]])
    aim = target * plan - camera[[0, 2]]
    yaw = np.arctan2(aim[0], aim[1]) + yaw_jitter
    pitch, roll = np.radians(knobs["pitch_deg"]), np.radians(knobs["roll_deg"])
    return room, camera, _rotation(yaw, pitch, roll)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera: yaw about up, pitch down (> 0), roll about the optical axis."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, 1.0])  # camera y points down, world y up
    return ry @ rx @ rz @ flip


def look_at_rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0):
    """The rotation a scene uses, for building scenes by hand (tests, figures)."""
    return _rotation(*np.radians([yaw_deg, pitch_deg, roll_deg]))


def sample_room(rng: np.random.Generator, knobs: dict) -> tuple:
    """Room, camera and lamp: ``(room, camera, rotation, surfaces, lamp, ambient, power)``."""
    room, camera, rotation = _camera(rng, knobs)
    knobs["camera_height"] = float(camera[1])  # a forced height may not fit under the ceiling
    surfaces = _room_surfaces(rng)
    lamp = np.array(
        [rng.uniform(0.2, 0.8) * room[0], room[1] - 0.05, rng.uniform(0.2, 0.8) * room[2]]
    )
    side, near_camera = rng.uniform(-0.5, 0.5), rng.random() < 0.15
    if near_camera:  # a lamp beside the camera, like a flash or a desk lamp
        lamp = camera + rotation @ np.array([side, -0.3, 0.0])
        lamp[1] = min(lamp[1], room[1] - 0.05)
    ambient = knobs["light"] * rng.uniform(0.15, 0.35)
    power = knobs["light"] * rng.uniform(0.9, 1.4)
    return room, camera, rotation, surfaces, lamp, float(ambient), float(power)

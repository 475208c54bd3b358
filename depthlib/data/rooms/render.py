"""Ray casting a procedural room: exact z-depth, surface ids, normals, textures and shading.

One ray per pixel through a pinhole camera with NYU's intrinsics. Ray directions are scaled so
their camera-z component is 1, which makes the ray parameter at a hit equal to the z-depth (what
NYU's depth maps hold). Everything is vectorised numpy in float32; each primitive is tested only
against the pixels of its projected bounding box, so small objects cost little.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from depthlib.data.rooms.scene import Material, Primitive, Scene

NYU_SIZE = (480, 640)
NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy at 640x480
ROOM_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32
)
# Surface ids 0-5 are the room faces (x=0, x=W, floor, ceiling, z=0, z=D); 6+k is primitive k.
N_ROOM_FACES = 6
LAMP_FALLOFF = 2.5  # metres at which the lamp's light has halved
_EPS = 1e-4


def intrinsics(height: int, width: int) -> tuple[float, float, float, float]:
    """NYU's fx, fy, cx, cy scaled to an image of this size (pixel centres at integer coordinates)."""
    fx, fy, cx, cy = NYU_INTRINSICS
    sx, sy = width / NYU_SIZE[1], height / NYU_SIZE[0]
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


@lru_cache(maxsize=8)
def _camera_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    fx, fy, cx, cy = intrinsics(height, width)
    xs = ((np.arange(width, dtype=np.float64) - cx) / fx).astype(np.float32)
    ys = ((np.arange(height, dtype=np.float64) - cy) / fy).astype(np.float32)
    # Read-only views: the cache hands the same arrays to every caller.
    return np.broadcast_to(xs, (height, width)), np.broadcast_to(ys[:, None], (height, width))


def rays(scene: Scene, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space ray directions (H, W) each, with camera-z component 1 (no exact zeros)."""
    xs, ys = _camera_grid(height, width)
    r = scene.rotation
    out = []
    for i in range(3):
        d = float(r[i, 0]) * xs + float(r[i, 1]) * ys + np.float32(r[i, 2])
        d[d == 0] = 1e-9  # keeps slab tests free of 0/0
        out.append(d)
    return tuple(out)


def intersect(prim: Primitive, origin, dx, dy, dz) -> np.ndarray:
    """Ray parameter of the first hit with ``prim`` (inf where missed); origin is one point."""
    shape = {"box": _box, "cylinder": _cylinder, "cone": _cone, "sphere": _sphere}[prim.kind]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return shape(prim, origin, dx, dy, dz)


def _box(prim, origin, dx, dy, dz):
    px, py, pz = (float(v) for v in np.asarray(origin) - prim.center)
    if prim.yaw != 0.0:  # into the box frame: rotate by -yaw about the vertical
        c, s = float(np.cos(prim.yaw)), float(np.sin(prim.yaw))
        px, pz = c * px - s * pz, s * px + c * pz
        dx, dz = c * dx - s * dz, s * dx + c * dz
    near = far = None
    for p, h, d in zip((px, py, pz), (float(v) for v in prim.half), (dx, dy, dz), strict=True):
        inv = 1.0 / d
        a, b = (-h - p) * inv, (h - p) * inv
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        near = lo if near is None else np.maximum(near, lo)
        far = hi if far is None else np.minimum(far, hi)
    return np.where((near <= far) & (near > _EPS), near, np.inf)


def _cylinder(prim, origin, dx, dy, dz):
    px, _, pz = (float(v) for v in np.asarray(origin) - prim.center)
    oy, r = float(origin[1]), float(prim.half[0])
    y0, y1 = float(prim.center[1] - prim.half[1]), float(prim.center[1] + prim.half[1])
    a = dx * dx + dz * dz
    b = px * dx + pz * dz
    disc = b * b - a * (px * px + pz * pz - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    y = oy + t * dy
    t = np.where((disc >= 0) & (y >= y0) & (y <= y1) & (t > _EPS), t, np.inf)
    if oy > y1 or oy < y0:  # the cap facing the origin
        tc = ((y1 if oy > y1 else y0) - oy) / dy
        xc, zc = px + tc * dx, pz + tc * dz
        t = np.where((xc * xc + zc * zc <= r * r) & (tc > _EPS) & (tc < t), tc, t)
    return t


def _cone(prim, origin, dx, dy, dz):
    """A vertical frustum (lamp shade, vase, bin): radius ``half[0]`` at the bottom, ``half[2]``
    at the top. Its side solves rho = a + k*y, a quadratic whose both roots are checked."""
    px, py, pz = (float(v) for v in np.asarray(origin) - prim.center)
    r0, hh, r1 = (float(v) for v in prim.half)
    k, a = (r1 - r0) / (2 * hh), (r0 + r1) / 2
    ry = a + k * py
    qa = dx * dx + dz * dz - k * k * dy * dy
    qb = px * dx + pz * dz - k * ry * dy
    disc = qb * qb - qa * (px * px + pz * pz - ry * ry)
    root = np.sqrt(np.maximum(disc, 0))
    best = np.full(np.shape(dx), np.inf, np.float32)
    for t in ((-qb - root) / qa, (-qb + root) / qa):
        y = py + t * dy
        ok = (disc >= 0) & (np.abs(y) <= hh) & (t > _EPS) & (t < best)
        best = np.where(ok, t, best)
    for cap_y, r in ((-hh, r0), (hh, r1)):
        tc = (cap_y - py) / dy
        xc, zc = px + tc * dx, pz + tc * dz
        best = np.where((xc * xc + zc * zc <= r * r) & (tc > _EPS) & (tc < best), tc, best)
    return best


def _sphere(prim, origin, dx, dy, dz):
    px, py, pz = (float(v) for v in np.asarray(origin) - prim.center)
    r = float(prim.half[0])
    a = dx * dx + dy * dy + dz * dz
    b = px * dx + py * dy + pz * dz
    disc = b * b - a * (px * px + py * py + pz * pz - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _screen_box(scene: Scene, prim: Primitive, height: int, width: int):
    """Pixel rectangle (v0, v1, u0, u1) that can see ``prim``; None if it is fully out of view."""
    cam = (prim.bounds() - scene.camera) @ scene.rotation  # rows: camera coordinates
    if np.any(cam[:, 2] < 0.05):
        return 0, height, 0, width  # straddles the camera plane: test every pixel
    fx, fy, cx, cy = intrinsics(height, width)
    u, v = fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, width)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, height)
    return None if u0 >= u1 or v0 >= v1 else (v0, v1, u0, u1)


def cast(scene: Scene, height: int, width: int):
    """Z-depth (H, W) float32, surface id (H, W) int16 and the ray directions."""
    dx, dy, dz = rays(scene, height, width)
    o = [float(v) for v in scene.camera]
    with np.errstate(divide="ignore"):  # inside the room every ray leaves through one face
        faces = []
        for axis, d in enumerate((dx, dy, dz)):
            hi = float(scene.room[axis])
            faces.append((np.where(d > 0, hi - o[axis], -o[axis]) / d, d > 0, 2 * axis))
    depth, ahead, first = faces[0]
    surf = (first + ahead).astype(np.int16)
    for t, ahead, first in faces[1:]:
        closer = t < depth
        depth = np.where(closer, t, depth)
        surf = np.where(closer, first + ahead, surf).astype(np.int16)
    for k, prim in enumerate(scene.primitives):
        box = _screen_box(scene, prim, height, width)
        if box is None:
            continue
        v0, v1, u0, u1 = box
        window = np.s_[v0:v1, u0:u1]
        t = intersect(prim, o, dx[window], dy[window], dz[window])
        closer = t < depth[window]
        np.copyto(depth[window], t, where=closer)
        np.copyto(surf[window], np.int16(N_ROOM_FACES + k), where=closer)
    return depth.astype(np.float32), surf, (dx, dy, dz)


def _hash(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """A uniform [0, 1) value per integer cell (i, j), stable across platforms."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ salt
    h &= 0xFFFFFFFF
    for _ in range(2):
        h = ((h >> 16) ^ h) * 0x45D9F3B & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return (h & 0xFFFFFF).astype(np.float32) / np.float32(2**24)


def _noise(m: Material, p: np.ndarray) -> np.ndarray:
    """Smooth world-space variation in [-1, 1] (a sum of three random plane waves)."""
    return np.sin(p @ m.noise_freq.T + m.noise_phase).mean(axis=1)


def _albedo(m: Material, p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 3) albedo of material ``m`` at world points ``p`` with surface coordinates (a, b)."""
    base, n = m.color, _noise(m, p)
    amount = np.float32(m.amount)
    if m.pattern in ("tiles", "panels"):
        fa, fb = a / m.period, b / m.period
        ia, ib = np.floor(fa), np.floor(fb)
        fa, fb = fa - ia, fb - ib
        grout = (0.006 if m.pattern == "tiles" else 0.01) / m.period
        jitter = (2 * _hash(ia, ib, m.salt) - 1) if m.pattern == "tiles" else 0.0
        out = base * (1 + amount * jitter + 0.02 * n)[:, None]
        line = (np.minimum(fa, 1 - fa) < grout) | (np.minimum(fb, 1 - fb) < grout)
        out[line] = m.color2
        return out
    if m.pattern == "planks":  # a runs along the planks, b across
        fb = b / m.period
        ib = np.floor(fb)
        length = 10 * m.period
        fa = a / length + _hash(ib, ib, m.salt + 1)
        ia = np.floor(fa)
        grain = np.sin(2 * np.pi * (fb * 5 + 0.5 * n) + 3 * _hash(ia, ib, m.salt + 2))
        shade = 1 + amount * (2 * _hash(ia, ib, m.salt) - 1) + 0.04 * grain
        out = base * shade[:, None]
        gap = ((fb - ib) < 0.03) | ((fa - ia) < 0.004)
        out[gap] *= 0.55
        return out
    if m.pattern == "carpet":
        fine = _hash(np.floor(a / 0.015), np.floor(b / 0.015), m.salt) - 0.5
        return base * (1 + 0.12 * fine + amount * 0.5 * n)[:, None]
    if m.pattern == "stripes":
        s = np.clip(3 * np.sin(2 * np.pi * a / m.period), -1, 1) * 0.5 + 0.5
        out = base + (m.color2 - base) * s[:, None]
        return out * (1 + amount * 0.5 * n)[:, None]
    if m.pattern == "wood":
        along = p[:, 0] if m.axis == 0 else p[:, 2]
        across = p[:, 1] + (p[:, 2] if m.axis == 0 else p[:, 0])
        grain = np.sin(2 * np.pi * across / m.period + 4 * n + 0.3 * along)
        return base * (1 + amount * grain)[:, None]
    return base * (1 + amount * n)[:, None]


def _primitive_normals(prim: Primitive, p: np.ndarray) -> np.ndarray:
    q = p - prim.center.astype(np.float32)
    if prim.kind == "sphere":
        return q / np.linalg.norm(q, axis=1, keepdims=True)
    if prim.kind in ("cylinder", "cone"):
        r0, hh, r1 = (np.float32(v) for v in prim.half)
        slope = (r1 - r0) / (2 * hh)  # 0 for a cylinder
        radial = np.hypot(q[:, 0], q[:, 2])
        on_cap = np.abs(np.abs(q[:, 1]) - hh) < np.abs(radial - (r0 + r1) / 2 - slope * q[:, 1])
        length = np.maximum(radial, 1e-6)
        n = np.stack([q[:, 0] / length, np.full_like(radial, -slope), q[:, 2] / length], 1)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        n[on_cap] = 0
        n[on_cap, 1] = np.sign(q[on_cap, 1])
        return n
    c, s = np.float32(np.cos(prim.yaw)), np.float32(np.sin(prim.yaw))
    local = np.stack([c * q[:, 0] - s * q[:, 2], q[:, 1], s * q[:, 0] + c * q[:, 2]], 1)
    axis = np.argmax(np.abs(local) / prim.half.astype(np.float32), axis=1)
    n_local = np.zeros_like(local)
    rows = np.arange(len(local))
    n_local[rows, axis] = np.sign(local[rows, axis])
    nx, ny, nz = n_local[:, 0], n_local[:, 1], n_local[:, 2]
    return np.stack([c * nx + s * nz, ny, -s * nx + c * nz], 1)


def surfaces(scene: Scene, depth: np.ndarray, surf: np.ndarray, dirs):
    """World points, normals, albedo, glow and gloss per pixel, flattened to (H*W, ...)."""
    t = depth.reshape(-1)
    p = np.stack([d.reshape(-1) * t for d in dirs], 1) + scene.camera.astype(np.float32)
    normals = np.empty_like(p)
    albedo = np.empty_like(p)
    glow = np.zeros(len(p), np.float32)
    gloss = np.zeros((len(p), 2), np.float32)
    ids = surf.reshape(-1)
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(ids[order], np.arange(N_ROOM_FACES + len(scene.primitives) + 1))
    for k in range(len(bounds) - 1):
        idx = order[bounds[k] : bounds[k + 1]]
        if len(idx) == 0:
            continue
        q = p[idx]
        if k < N_ROOM_FACES:
            m = scene.surfaces[k]
            normals[idx] = ROOM_NORMALS[k]
            gloss[idx] = m.gloss
            if k in (2, 3):  # floor, ceiling: planks run along the material's axis
                a, b = (q[:, 0], q[:, 2]) if m.axis == 0 else (q[:, 2], q[:, 0])
            else:  # walls: along-wall coordinate and height
                a, b = (q[:, 2], q[:, 1]) if k < 2 else (q[:, 0], q[:, 1])
            albedo[idx] = _albedo(m, q, a, b)
            if m.skirting > 0:
                albedo[idx[q[:, 1] < m.skirting]] = m.skirting_color
        else:
            prim = scene.primitives[k - N_ROOM_FACES]
            m = prim.material
            normals[idx] = _primitive_normals(prim, q)
            albedo[idx] = _albedo(m, q, q[:, 0] + q[:, 2], q[:, 1])
            glow[idx] = m.emissive
            gloss[idx] = m.gloss
    return p, normals, np.clip(albedo, 0.0, 1.0), glow, gloss


def shade(scene: Scene, p, normals, albedo, glow, gloss=None) -> tuple[np.ndarray, np.ndarray]:
    """Linear radiance (n, 3): hemispheric ambient + a point lamp with falloff and hard shadows,
    plus the lamp's white highlight on glossy surfaces (``gloss``: (n, 2) strength, exponent).

    Also returns the incidence cosine towards the lamp (used for sensor holes on grazing surfaces).
    """
    to_lamp = scene.lamp.astype(np.float32) - p
    dist2 = np.einsum("ij,ij->i", to_lamp, to_lamp)
    cos = np.einsum("ij,ij->i", normals, to_lamp) / np.sqrt(dist2)
    lit = np.flatnonzero(cos > 0)
    visible = np.ones(len(lit), bool)
    lamp = scene.lamp.astype(np.float32)
    back = -to_lamp[lit]  # from the lamp to each lit point: hits with t < 1 are occluders
    unit = back / np.sqrt(dist2[lit])[:, None]
    for prim in scene.primitives:
        if prim.group < 0:  # decor is flat on walls and floor: its shadow would not show
            continue
        # Only rays inside the cone from the lamp around the primitive's bounding sphere can hit it.
        towards = prim.center.astype(np.float32) - lamp
        reach, radius = float(np.linalg.norm(towards)), float(np.linalg.norm(prim.half))
        if reach > radius:
            cone = np.sqrt(1 - (radius / reach) ** 2)
            idx = np.flatnonzero(unit @ (towards / reach) > cone)
        else:
            idx = np.arange(len(lit))
        if len(idx):
            t = intersect(prim, lamp, back[idx, 0], back[idx, 1], back[idx, 2])
            visible[idx[t < 0.999]] = False
    direct = np.zeros(len(p), np.float32)
    falloff = scene.lamp_power * visible / (1 + dist2[lit] / LAMP_FALLOFF**2)
    direct[lit] = cos[lit] * falloff
    ambient = scene.ambient * (0.85 + 0.15 * normals[:, 1])  # sky-like: up-facing brighter
    radiance = albedo * (ambient + direct)[:, None] + glow[:, None] * max(scene.knobs["light"], 0.3)
    if gloss is not None and len(lit):  # Blinn-Phong: half vector between lamp and eye
        eye = scene.camera.astype(np.float32) - p[lit]
        half = to_lamp[lit] / np.sqrt(dist2[lit])[:, None]
        half += eye / np.linalg.norm(eye, axis=1, keepdims=True)
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-6)
        spec = np.maximum(np.einsum("ij,ij->i", normals[lit], half), 0) ** gloss[lit, 1]
        radiance[lit] += (gloss[lit, 0] * spec * falloff)[:, None]
    return radiance, cos

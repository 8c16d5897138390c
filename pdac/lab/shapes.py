"""Shapes the procedural phantoms paint with: a canvas that evaluates predicates in physical space only inside
each structure's bounding box, and the primitive solids (ellipsoid, cylinder, capsule, centreline, lobulated blob).
Each primitive returns (inside-or-distance function, low corner, high corner) in the anatomy frame (mm)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pdac.infer.geometry import index_region_of_world_box


class Canvas:
    """The image and label arrays plus the world coordinates of any sub-block, on demand."""

    def __init__(self, size, spacing, direction, origin, translation):
        self.size, self.spacing, self.direction = size, spacing, direction
        self.a = direction * np.asarray(spacing)
        self.origin = np.asarray(origin, dtype=np.float64)
        self.translation = np.asarray(translation, dtype=np.float64)  # anatomy frame -> world
        self.image = np.full(size[::-1], -1000.0, dtype=np.float32)
        self.label = np.zeros(size[::-1], dtype=np.uint8)

    def _region(self, lo, hi):
        """Index slices covering the anatomy-frame box [lo, hi], or None."""
        region = index_region_of_world_box(self.a, self.origin, self.size, np.asarray(lo) + self.translation,
                                           np.asarray(hi) + self.translation)
        return None if region is None else region.numpy_slices

    def coords(self, slices):
        """Anatomy-frame coordinates (x, y, z), each a float32 array of the sub-block's shape."""
        k = np.arange(slices[0].start, slices[0].stop, dtype=np.float64)[:, None, None]
        j = np.arange(slices[1].start, slices[1].stop, dtype=np.float64)[None, :, None]
        i = np.arange(slices[2].start, slices[2].stop, dtype=np.float64)[None, None, :]
        base = self.origin - self.translation
        return [
            (base[d] + self.a[d, 0] * i + self.a[d, 1] * j + self.a[d, 2] * k).astype(np.float32)
            for d in range(3)
        ]

    def paint(self, lo, hi, inside: Callable, hu=None, label=None, within=None, only_labels=None):
        """Paint voxels where inside(x, y, z) holds (and `within`, a predicate, when given, and the
        current label is one of `only_labels`, when given).

        `hu` is a constant or a function of the coordinates; returns the boolean mask (sub-block)."""
        slices = self._region(lo, hi)
        if slices is None:
            return None
        x, y, z = self.coords(slices)
        mask = inside(x, y, z)
        if within is not None:
            mask &= within(x, y, z)
        if only_labels is not None:
            mask &= np.isin(self.label[slices], only_labels)
        if hu is not None:
            values = hu(x, y, z) if callable(hu) else hu
            sub = self.image[slices]
            sub[mask] = values[mask] if isinstance(values, np.ndarray) else values
        if label is not None:
            self.label[slices][mask] = label
        return mask


def ellipsoid(c, r):
    c, r = np.asarray(c, dtype=np.float32), np.asarray(r, dtype=np.float32)
    return (lambda x, y, z: ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1,
            c - r, c + r)


def cylinder_z(cx, cy, rx, ry, z0, z1):
    return (lambda x, y, z: (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) & (z >= z0) & (z <= z1),
            (cx - rx, cy - ry, z0), (cx + rx, cy + ry, z1))


def capsule(p0, p1, radius):
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length2 = float(d @ d)

    def dist(x, y, z):
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2
        t = np.clip(t, 0, 1)
        return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)

    lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
    return dist, lo, hi


class Curve:
    """A sampled centreline with a radius profile; distance queries return (distance, parameter t)."""

    def __init__(self, points: np.ndarray, ts: np.ndarray):
        self.points, self.ts = points, ts

    def query(self, x, y, z):
        best = np.full(x.shape, np.inf, dtype=np.float32)
        best_t = np.zeros(x.shape, dtype=np.float32)
        for p, t in zip(self.points, self.ts, strict=True):
            d2 = (x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2
            closer = d2 < best
            best = np.where(closer, d2, best)
            best_t = np.where(closer, np.float32(t), best_t)
        return np.sqrt(best), best_t

    def box(self, margin: float):
        return self.points.min(axis=0) - margin, self.points.max(axis=0) + margin


def irregular_blob(rng, centre, radius):
    """A lobulated mass: a sphere whose radius varies smoothly with direction."""
    dirs = rng.normal(size=(4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.uniform(0.6, 1.4, size=4) * np.pi / max(radius, 1.0)
    phases = rng.uniform(0, 2 * np.pi, size=4)
    c = np.asarray(centre, dtype=np.float32)

    def inside(x, y, z):
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        wobble = sum(np.sin(f * (u[0] * dx + u[1] * dy + u[2] * dz) + ph)
                     for u, f, ph in zip(dirs, freqs, phases, strict=True)) / 4
        return dx * dx + dy * dy + dz * dz <= (radius * (1 + 0.22 * wobble)) ** 2

    return inside, c - 1.3 * radius, c + 1.3 * radius

"""Image planes along and across a straight needle (pure numpy/scipy: no display).

The in-plane reslice shows the image along the needle (what the operator sees in the
"oblique axial" view of a needle) and the perpendicular one looks down the needle at the
tip. Both are sampled from the volume with :func:`scipy.ndimage.map_coordinates` in patient
LPS mm, so rotated grids stay exact. Used by the report (:mod:`planner.report`) and the
napari plugin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from planner.volume import Volume


def needle_basis(entry_lps: np.ndarray, target_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal ``(d, u, v)`` in LPS: ``d`` along the needle (entry to target).

    ``u`` is the patient axis least parallel to the needle, made orthogonal to it, so the
    in-plane reslice (spanned by ``d`` and ``u``) is the familiar "oblique axial" view for
    a needle in the axial plane; ``v = d x u`` completes the perpendicular plane.
    """
    d = np.asarray(target_lps, float) - np.asarray(entry_lps, float)
    length = float(np.linalg.norm(d))
    if length == 0:
        raise ValueError("entry and target coincide: the needle has no direction")
    d /= length
    axes = np.eye(3)
    # prefer the left-right (x) axis, then anterior-posterior (y), then superior (z)
    ref = next(a for a in axes if abs(float(a @ d)) < 0.9)
    u = ref - (ref @ d) * d
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    return d, u, v


@dataclass(frozen=True)
class Reslice:
    """A 2D image sampled on a plane in patient space.

    ``image[row, col]`` is at ``origin_lps + row * pixel_mm * row_dir + col * pixel_mm * col_dir``.
    ``needle_px`` are the ``(row, col)`` pixel positions of entry and target (in-plane
    reslice) or of the tip only (perpendicular reslice).
    """

    image: np.ndarray
    labels: np.ndarray | None
    pixel_mm: float
    origin_lps: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    needle_px: np.ndarray

    def pixel_to_lps(self, rc: np.ndarray) -> np.ndarray:
        rc = np.asarray(rc, float)
        return (self.origin_lps + rc[..., :1] * self.pixel_mm * self.row_dir
                + rc[..., 1:2] * self.pixel_mm * self.col_dir)


def _sample(volume: Volume, points_lps: np.ndarray, order: int) -> np.ndarray:
    index = volume.lps_to_index(points_lps)  # [..., (z, y, x)]
    coords = np.moveaxis(index, -1, 0)
    array = volume.array
    cval = float(array.min()) if order > 0 and array.size else 0.0
    return ndimage.map_coordinates(array, coords, order=order, mode="constant", cval=cval,
                                   prefilter=False)


def _plane(volume: Volume, labels: Volume | None, origin: np.ndarray, row_dir: np.ndarray,
           col_dir: np.ndarray, shape: tuple[int, int], pixel_mm: float, needle_px: np.ndarray) -> Reslice:
    rows = np.arange(shape[0], dtype=float)[:, None, None] * pixel_mm * row_dir
    cols = np.arange(shape[1], dtype=float)[None, :, None] * pixel_mm * col_dir
    points = origin + rows + cols
    image = _sample(volume, points, order=1)
    lab = _sample(labels, points, order=0).astype(np.int32) if labels is not None else None
    return Reslice(image=image, labels=lab, pixel_mm=pixel_mm, origin_lps=origin, row_dir=row_dir,
                   col_dir=col_dir, needle_px=needle_px)


def reslice_along_needle(volume: Volume, entry_lps: np.ndarray, target_lps: np.ndarray,
                         labels: Volume | None = None, pixel_mm: float = 0.5,
                         half_width_mm: float = 40.0, margin_mm: float = 20.0) -> Reslice:
    """The in-plane reslice: columns run along the needle, rows along ``u`` (see :func:`needle_basis`).

    The needle lies on the middle row from ``margin_mm`` before the entry to ``margin_mm``
    beyond the target.
    """
    entry, target = np.asarray(entry_lps, float), np.asarray(target_lps, float)
    d, u, _ = needle_basis(entry, target)
    length = float(np.linalg.norm(target - entry))
    n_cols = int(np.ceil((length + 2 * margin_mm) / pixel_mm)) + 1
    n_rows = int(np.ceil(2 * half_width_mm / pixel_mm)) + 1
    origin = entry - margin_mm * d - half_width_mm * u
    mid = (n_rows - 1) / 2
    needle_px = np.array([[mid, margin_mm / pixel_mm], [mid, (margin_mm + length) / pixel_mm]])
    return _plane(volume, labels, origin, u, d, (n_rows, n_cols), pixel_mm, needle_px)


def reslice_at_tip(volume: Volume, entry_lps: np.ndarray, target_lps: np.ndarray,
                   labels: Volume | None = None, pixel_mm: float = 0.5, half_width_mm: float = 30.0) -> Reslice:
    """The perpendicular reslice through the tip (target), looking down the needle."""
    entry, target = np.asarray(entry_lps, float), np.asarray(target_lps, float)
    _, u, v = needle_basis(entry, target)
    n = int(np.ceil(2 * half_width_mm / pixel_mm)) + 1
    origin = target - half_width_mm * u - half_width_mm * v
    mid = (n - 1) / 2
    return _plane(volume, labels, origin, u, v, (n, n), pixel_mm, np.array([[mid, mid]]))

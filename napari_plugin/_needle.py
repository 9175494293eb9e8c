"""Needle geometry for display (pure numpy/scipy: testable without a display).

The needle is the straight segment from the skin entry to the target. In napari world
coordinates (``[z, y, x]`` mm, see :mod:`napari_plugin._layers`) it is drawn as a 3D path;
on a 2D slice the viewer shows where it crosses the slice plane (a marker) and its
projection onto that plane. The reslices along and across the needle are computed by
:mod:`planner.reslice` (shared with the report).
"""

from __future__ import annotations

import numpy as np

from planner.volume import Volume

#: RGBA colours of the needle: within every hard constraint, or breaking one
NEEDLE_OK_COLOR = (0.0, 1.0, 1.0, 1.0)
NEEDLE_BROKEN_COLOR = (1.0, 0.0, 0.0, 1.0)


def needle_color(feasible: bool) -> tuple[float, float, float, float]:
    return NEEDLE_OK_COLOR if feasible else NEEDLE_BROKEN_COLOR


def hex_color(feasible: bool) -> str:
    """The needle colour as ``#rrggbb`` (what napari layers take most cheaply)."""
    return "#" + "".join(f"{round(255 * c):02x}" for c in needle_color(feasible)[:3])


def as_vectors(path: np.ndarray) -> np.ndarray:
    """``(1, 2, 3)`` napari Vectors data (start, displacement) of a ``(2, 3)`` segment."""
    path = np.asarray(path, float)
    return np.stack([path[0], path[1] - path[0]])[None]


#: colour of skin entries from which no path is feasible
NO_PATH_COLOR = (0.45, 0.45, 0.5, 0.5)


def risk_colors(risk: np.ndarray, cmap: str = "RdYlGn_r") -> np.ndarray:
    """RGBA per skin entry: green (low risk) to red (high risk), grey where ``risk`` is ``nan``."""
    from matplotlib import colormaps

    risk = np.asarray(risk, float)
    colors = np.tile(np.asarray(NO_PATH_COLOR), (risk.size, 1))
    ok = np.isfinite(risk)
    colors[ok] = colormaps[cmap](np.clip(risk[ok], 0.0, 1.0))
    return colors


def needle_world(volume: Volume, entry_lps: np.ndarray, target_lps: np.ndarray) -> np.ndarray:
    """``(2, 3)`` napari world ``[z, y, x]`` mm of entry and target given in LPS mm."""
    return volume.lps_to_napari(np.stack([np.asarray(entry_lps, float), np.asarray(target_lps, float)]))


def plane_crossing(p0: np.ndarray, p1: np.ndarray, axis: int, value: float) -> np.ndarray | None:
    """Where segment ``p0 -> p1`` crosses the plane ``coordinate[axis] == value``, or ``None``.

    A segment lying in the plane crosses it at its midpoint.
    """
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    da, db = a[axis] - value, b[axis] - value
    if da == 0 and db == 0:
        return (a + b) / 2
    if da * db > 0:
        return None
    t = da / (da - db)
    point = a + t * (b - a)
    point[axis] = value
    return point


def projection_on_plane(p0: np.ndarray, p1: np.ndarray, axis: int, value: float) -> np.ndarray:
    """The segment ``p0 -> p1`` projected along ``axis`` onto ``coordinate[axis] == value``."""
    segment = np.stack([np.asarray(p0, float), np.asarray(p1, float)])
    segment[:, axis] = value
    return segment


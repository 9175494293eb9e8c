"""Matplotlib drawings for the widget: the two needle reslices and the relief curve.

They draw on a plain :class:`matplotlib.figure.Figure` (no Qt), so tests can render them
to PNG. The images come from :mod:`planner.reslice`; the outcome numbers come from
``planner.analgesia`` through :class:`napari_plugin._session.PlanningSession`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_plugin import _needle
from napari_plugin._layers import CT_WINDOW
from planner import anatomy
from planner.errors import LabelMapError
from planner.reslice import Reslice, reslice_along_needle, reslice_at_tip

BACKGROUND = "#262930"
FOREGROUND = "#e8e8e8"


def _label_rgba(labels: np.ndarray, alpha: float = 0.22) -> np.ndarray:
    """RGBA overlay of a label image with the vocabulary colours."""
    rgba = np.zeros(labels.shape + (4,), dtype=float)
    for value in np.unique(labels):
        if value == anatomy.BACKGROUND:
            continue
        try:
            color = anatomy.structure(int(value)).color_float
        except LabelMapError:
            continue
        rgba[labels == value] = (*color[:3], alpha)
    return rgba


def _style(ax: Any, title: str) -> None:
    ax.set_facecolor("black")
    ax.set_title(title, color=FOREGROUND, fontsize=8)
    ax.tick_params(colors=FOREGROUND, labelsize=6)
    for spine in ax.spines.values():
        spine.set_color("#606060")
    ax.set_xlabel("mm", color=FOREGROUND, fontsize=6)


def _window(image: np.ndarray, modality: str) -> tuple[float, float]:
    if modality == "CT":
        return CT_WINDOW
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def draw_reslices(figure: Any, volume: Any, labels: Any, entry_lps: np.ndarray, target_lps: np.ndarray,
                  feasible: bool) -> tuple[Reslice, Reslice]:
    """Draw the in-plane reslice along the needle (top) and the perpendicular one at the tip."""
    along = reslice_along_needle(volume, entry_lps, target_lps, labels=labels)
    tip = reslice_at_tip(volume, entry_lps, target_lps, labels=labels)
    color = _needle.needle_color(feasible)
    vmin, vmax = _window(along.image, volume.modality)
    figure.clear()
    figure.set_facecolor(BACKGROUND)
    top = figure.add_subplot(2, 1, 1)
    bottom = figure.add_subplot(2, 1, 2)
    for ax, rs, title in ((top, along, "Along the needle (in-plane)"), (bottom, tip, "Perpendicular at the tip")):
        h, w = rs.image.shape
        extent = (0.0, w * rs.pixel_mm, h * rs.pixel_mm, 0.0)
        ax.imshow(rs.image, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="bilinear")
        if rs.labels is not None and rs.labels.any():
            ax.imshow(_label_rgba(rs.labels), extent=extent, interpolation="nearest")
        _style(ax, title)
    (r0, c0), (r1, c1) = along.needle_px * along.pixel_mm
    top.plot([c0, c1], [r0, r1], color=color, linewidth=2)
    top.plot([c0], [r0], "o", color="#40ff40", markersize=4)
    top.plot([c1], [r1], "o", color="#ffd700", markersize=4)
    top.text(c0, r0 - 3, "entry", color=FOREGROUND, fontsize=6, ha="center")
    top.text(c1, r1 - 3, "tip", color=FOREGROUND, fontsize=6, ha="center")
    rt, ct = tip.needle_px[0] * tip.pixel_mm
    bottom.plot([ct], [rt], "+", color=color, markersize=14, markeredgewidth=2)
    bottom.add_patch(_circle(ct, rt, 5.0, color))
    figure.tight_layout(pad=0.6)
    return along, tip


def _circle(x: float, y: float, radius: float, color: Any) -> Any:
    from matplotlib.patches import Circle

    return Circle((x, y), radius, fill=False, edgecolor=color, linewidth=1, linestyle="--")


def draw_relief_curve(figure: Any, weeks: np.ndarray, relieved: np.ndarray, estimate: Any = None) -> None:
    """P(still relieved | response) over time; the estimate's time points with their 80% intervals.

    ``relieved`` and every number of ``estimate`` come from :mod:`planner.analgesia`.
    """
    figure.clear()
    figure.set_facecolor(BACKGROUND)
    ax = figure.add_subplot(1, 1, 1)
    ax.set_facecolor(BACKGROUND)
    ax.plot(weeks, relieved, color="#4aa3ff", linewidth=2, label="if response")
    if estimate is not None:
        for tp in estimate.timepoints:
            lo, hi = tp.p_relieved_if_response_interval_80
            ax.errorbar([tp.weeks], [tp.p_relieved_if_response],
                        yerr=[[tp.p_relieved_if_response - lo], [hi - tp.p_relieved_if_response]],
                        fmt="o", color="#ffd700", markersize=3, capsize=2, linewidth=1)
        median = estimate.median_relief_weeks
        if median is not None and np.isfinite(median):
            ax.axvline(median, color="#ffd700", linewidth=1, linestyle="--")
            ax.text(median, 0.95, f" median {median:.0f} wk", color="#ffd700", fontsize=6, va="top")
    ax.set_ylim(0, 1)
    ax.set_xlim(float(np.min(weeks)), float(np.max(weeks)))
    ax.set_xlabel("weeks after the procedure", color=FOREGROUND, fontsize=7)
    ax.set_ylabel("P(still relieved)", color=FOREGROUND, fontsize=7)
    ax.tick_params(colors=FOREGROUND, labelsize=6)
    for spine in ax.spines.values():
        spine.set_color("#606060")
    ax.grid(color="#404040", linewidth=0.5)
    figure.tight_layout(pad=0.5)

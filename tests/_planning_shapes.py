"""Analytic label maps for planner tests: shapes whose distances are known exactly.

``torso()`` builds a small abdomen-like case on an anisotropic grid from cylinders,
ellipsoids and boxes (LPS: x patient left, y posterior, z superior; origin chosen so
that the body centre is at x = y = 0): vertebral body and posterior elements around a
spinal canal, aorta anterior-left of the spine with the celiac plexus target region
anterolateral to it, posterior crus shell, IVC, kidneys, lung bases cranially.
"""

from __future__ import annotations

import numpy as np

from planner.anatomy import label_of
from planner.volume import Volume

AORTA_CENTRE = (15.0, 5.0)  # x, y mm
AORTA_RADIUS = 12.0


def grid(shape: tuple[int, int, int], spacing: tuple[float, float, float],
         origin: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS coordinates (x, y, z) of every voxel centre of an axis-aligned grid, each [z, y, x]."""
    z = origin[2] + spacing[0] * np.arange(shape[0])
    y = origin[1] + spacing[1] * np.arange(shape[1])
    x = origin[0] + spacing[2] * np.arange(shape[2])
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return xx, yy, zz


def volumes(labels: np.ndarray, spacing, origin, hu: dict[int, float] | None = None) -> tuple[Volume, Volume]:
    """(CT image, label map) Volumes on the same grid from a label array."""
    image = np.full(labels.shape, -1000.0, dtype=np.float32)
    for value, h in (hu or {}).items():
        image[labels == value] = h
    image[(labels > 0) & (image == -1000.0)] = 40.0
    img = Volume(array=image, spacing=spacing, origin=origin, modality="CT")
    return img, img.with_array(labels.astype(np.int16), modality="SEG")


def torso(spacing: tuple[float, float, float] = (4.0, 2.5, 2.5), with_target: bool = True
          ) -> tuple[Volume, Volume]:
    """Analytic abdomen-like case (see module docstring)."""
    half = np.array([80.0, 115.0, 165.0])  # z, y, x half extents (mm)
    shape = tuple(int(v) for v in np.floor(2 * half / np.asarray(spacing)) + 1)
    origin = (-half[2], -half[1], -half[0])
    x, y, z = grid(shape, spacing, origin)  # type: ignore[arg-type]
    lab = np.zeros(shape, dtype=np.int16)
    body = (x / 160.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    lab[body] = label_of("body")
    ax, ay = AORTA_CENTRE
    r_aorta = np.hypot(x - ax, y - ay)
    vb = np.hypot(x, y - 40.0) <= 20.0
    posterior = (np.abs(x) <= 12.0) & (y >= 58.0) & (y <= 92.0)
    canal = np.hypot(x, y - 68.0) <= 7.0
    lab[vb | posterior] = label_of("vertebra_L1")
    lab[canal] = label_of("spinal_canal")
    crus = (r_aorta > AORTA_RADIUS) & (r_aorta <= AORTA_RADIUS + 6.0) & (y > ay) & ~vb
    lab[crus] = label_of("diaphragm_crura")
    lab[r_aorta <= AORTA_RADIUS] = label_of("aorta")
    lab[np.hypot(x + 25.0, y - 10.0) <= 10.0] = label_of("inferior_vena_cava")
    for sign, name in ((1, "kidney_left"), (-1, "kidney_right")):
        k = ((x - sign * 80.0) / 24.0) ** 2 + ((y - 55.0) / 28.0) ** 2 + (z / 50.0) ** 2 <= 1.0
        lab[k & body] = label_of(name)
    lungs = (z >= 48.0) & (np.abs(x) >= 45.0) & (np.abs(x) <= 125.0) & (y >= 15.0) & (y <= 95.0)
    lab[lungs & body] = label_of("lungs")
    if with_target:
        tgt = ((r_aorta >= AORTA_RADIUS + 7.0) & (r_aorta <= AORTA_RADIUS + 16.0) & (y <= ay + 4.0)
               & (np.abs(z) <= 20.0) & (lab == label_of("body")))
        lab[tgt] = label_of("celiac_plexus_region")
    hu = {label_of("vertebra_L1"): 700.0, label_of("aorta"): 200.0, label_of("lungs"): -850.0,
          label_of("kidney_left"): 150.0, label_of("kidney_right"): 150.0}
    return volumes(lab, spacing, origin, hu)

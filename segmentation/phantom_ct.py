"""Seeded synthetic abdominal CT phantoms with exact labels (T10 to the sacrum).

Why: tests need anatomy whose truth is known exactly, trainees need sample cases, and the
CT network needs labelled examples of nerve-plexus targets that no real dataset here has.

Geometry: patient supine, DICOM LPS (x = patient left, y = posterior, z = superior),
axial slices, identity direction. Arrays are ``[z, y, x]``; slice 0 is the most inferior.
Every structure is an analytic shape (per-slice super-ellipses, ellipsoids, tubes along
curves, capsules) drawn from the seed and painted in a fixed priority order, so each voxel
holds exactly one vocabulary label (:mod:`planner.anatomy`). The CT image is made from the
labels: tissue HU of portal-venous contrast CT (see ``docs/phantom.md`` for the cited ranges),
texture, cortical rims on bone, gas in bowel and stomach, a blur that models the voxel box
plus the scanner point-spread function (partial volume at boundaries), and Gaussian noise.

Only numpy and scipy are used, so importing this module is cheap (no torch).

Example:
    >>> from segmentation.phantom_ct import make_ct_phantom
    >>> ph = make_ct_phantom(3, spacing_mm=(6.0, 6.0, 6.0))
    >>> ph.image.array.dtype.name, ph.labels.array.dtype.name
    ('int16', 'uint8')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from planner.anatomy import VERTEBRAL_LEVELS, label_of, vertebra_name
from planner.errors import PlannerError
from planner.volume import Volume

#: portal-venous CT attenuation (HU) per vocabulary structure: (mean, texture sigma).
#: Ranges and sources: docs/phantom.md.
TISSUE_HU: dict[str, tuple[float, float]] = {
    "aorta": (185.0, 6.0),
    "celiac_trunk": (180.0, 6.0),
    "superior_mesenteric_artery": (180.0, 6.0),
    "renal_arteries": (180.0, 6.0),
    "iliac_arteries": (175.0, 6.0),
    "inferior_vena_cava": (140.0, 8.0),
    "portal_vein": (170.0, 6.0),
    "iliac_veins": (125.0, 8.0),
    "liver": (110.0, 6.0),
    "spleen": (120.0, 6.0),
    "pancreas": (100.0, 8.0),
    "kidney_left": (175.0, 10.0),
    "kidney_right": (175.0, 10.0),
    "adrenal_glands": (60.0, 6.0),
    "stomach": (30.0, 8.0),
    "bowel": (40.0, 10.0),
    "tumour": (50.0, 8.0),
    "spinal_cord": (35.0, 4.0),
    "spinal_canal": (12.0, 4.0),
    "lungs": (-860.0, 25.0),
    "diaphragm_crura": (55.0, 5.0),
    "muscle": (55.0, 6.0),
    "paraspinal_muscles": (50.0, 6.0),
    "psoas_muscles": (55.0, 6.0),
    "body": (-90.0, 18.0),
    "subcutaneous_fat": (-105.0, 8.0),
    "skin": (45.0, 6.0),
    "ribs": (250.0, 20.0),
    "bone_other": (230.0, 20.0),
    "sacrum": (210.0, 20.0),
}
#: unenhanced (non-contrast) CT attenuation of the structures that take up contrast, HU:
#: blood 35-50, liver 50-65, spleen 40-50, pancreas 35-50, kidney 25-40 (docs/phantom.md).
#: Training scales each structure's enhancement (TISSUE_HU mean minus this) to mimic other phases.
UNENHANCED_HU: dict[str, float] = {
    "aorta": 42.0, "celiac_trunk": 42.0, "superior_mesenteric_artery": 42.0, "renal_arteries": 42.0,
    "iliac_arteries": 42.0, "inferior_vena_cava": 42.0, "portal_vein": 42.0, "iliac_veins": 42.0,
    "liver": 58.0, "spleen": 46.0, "pancreas": 42.0, "kidney_left": 32.0, "kidney_right": 32.0,
}
#: which enhancement each of those follows: "arterial" peaks early, "venous" (veins and
#: parenchyma) later; the training transform draws one factor per group
ENHANCEMENT_GROUP: dict[str, str] = {
    **{n: "arterial" for n in ("aorta", "celiac_trunk", "superior_mesenteric_artery", "renal_arteries",
                               "iliac_arteries")},
    **{n: "venous" for n in ("inferior_vena_cava", "portal_vein", "iliac_veins", "liver", "spleen", "pancreas",
                             "kidney_left", "kidney_right")},
}
VERTEBRA_CANCELLOUS_HU = 220.0  # trabecular bone, adult (Pickhardt 2013: ~150-300)
CORTICAL_HU = 850.0  # cortical bone rim (> 700)
DISC_HU = 85.0
GAS_HU = -1000.0
AIR_HU = -1000.0
ORGAN_WALL_HU = 95.0  # enhancing gastric / bowel wall
AORTIC_WALL_HU = 50.0  # arterial wall and mural thrombus: unenhanced soft tissue
PLAQUE_HU = (350.0, 900.0)  # calcified atherosclerotic plaque
ARTERIES = tuple(n for n, group in ENHANCEMENT_GROUP.items() if group == "arterial")
KIDNEY_MEDULLA_HU = 140.0
BILE_HU = 8.0  # gallbladder bile, water-like
HEPATIC_VEIN_HU = 165.0  # opacified in the portal-venous phase
STOOL_HU = -40.0  # faeces: mixed fat, water and gas
FOOD_HU = 40.0  # stomach contents after a meal
COSTAL_CARTILAGE_HU = 140.0  # hyaline cartilage, partly calcified in adults

FOV_XY_MM = 384.0
FOV_Z_MM = 360.0

# Craniocaudal body heights and following-disc heights (mm), adult means scaled per seed.
_BODY_HEIGHT = {"T10": 21.0, "T11": 22.0, "T12": 23.5, "L1": 25.0, "L2": 26.0, "L3": 27.0,
                "L4": 27.0, "L5": 26.5}
_DISC_HEIGHT = {"T10": 6.0, "T11": 6.5, "T12": 7.5, "L1": 9.0, "L2": 10.0, "L3": 10.5,
                "L4": 11.0, "L5": 10.5}
_BODY_WIDTH = {"T10": 34.0, "T11": 36.0, "T12": 39.0, "L1": 42.0, "L2": 44.0, "L3": 46.0,
               "L4": 48.0, "L5": 50.0, "S1": 50.0}
_BODY_DEPTH = {"T10": 27.0, "T11": 28.0, "T12": 29.0, "L1": 30.0, "L2": 31.0, "L3": 32.0,
               "L4": 33.0, "L5": 33.0, "S1": 33.0}
_TP_LENGTH = {"T10": 14.0, "T11": 9.0, "T12": 6.0, "L1": 13.0, "L2": 18.0, "L3": 24.0,
              "L4": 20.0, "L5": 17.0}
#: labels deep structures may overwrite (never skin or subcutaneous fat)
_INNER_SOFT = ("body", "muscle", "bowel", "psoas_muscles", "paraspinal_muscles", "iliac_arteries",
               "iliac_veins")
_LUMBAR = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")


#: Allowed range and meaning of each anatomy parameter a training run may vary; checked by
#: :class:`PhantomParams` and used by the CT training settings that draw them
#: (``segmentation.ct.VARIED_FIELDS``).
PARAM_RANGES: dict[str, tuple[float, float, str]] = {
    "spleen_scale": (0.5, 2.0, "1 = adult mean size"),
    "aortic_wall_mm": (0.0, 5.0, "mm, 0 = no wall"),
    "spleen_wrap": (0.0, 1.0, "0 = the free crescent, 1 = along the wall from the spine to the anterolateral wall"),
    "diaphragm_rise_mm": (0.0, 60.0, "mm above the drawn height"),
    "upper_ribs": (0.0, 3.0, "ribs above the 10th"),
    "stomach_food": (0.0, 1.0, "0 = fasting"),
    "aorta_on_spine": (0.0, 1.0, "0 = a fat gap as drawn, 1 = against the vertebral bodies"),
}


@dataclass(frozen=True)
class PhantomParams:
    """What a phantom is drawn from; everything not listed here comes from ``seed``.

    Args:
        seed: drives every random choice (sizes, positions, aortic course, noise).
        bmi: body-mass index; sets subcutaneous (and a little visceral) fat.
        tumour_encasement: 0 = no tumour; otherwise the fraction (0..1] of the celiac-axis
            circumference encased by a pancreatic body tumour.
        celiac_level: vertebral level the celiac origin faces, "T12" or "L1";
            ``None`` draws it from the seed (T12 body, T12-L1 disc or L1 body).
        noise_hu: image noise sigma in HU; ``None`` draws 10-15 HU from the seed.
        spleen_scale: spleen size against the adult mean (1 = about 110 x 100 x 45 mm); the
            length and height scale with it, the thickness with its square root.
        aortic_wall_mm: thickness of a soft-tissue aortic wall (0 = none, up to 5 mm), drawn
            inside the aorta label (the label keeps the outer contour, as TotalSegmentator's
            aorta does), with calcified plaques on part of it as in older patients.
        spleen_wrap: how far the spleen reaches along the left posterolateral wall: 0 = the
            free crescent alone; up to 1 = a shell against the wall from beside the spine round
            to the anterolateral wall, as a large adult spleen lies under the ribs.
        diaphragm_rise_mm: how much higher the diaphragm domes and the costophrenic recess
            sit than drawn from the seed (0..60 mm), so that T11-T12 slices can hold no lung,
            as in expiration or a full abdomen.
        upper_ribs: how many ribs above the 10th to draw (0..3, rounded: the 9th, 8th and 7th,
            their anterior ends costal cartilage), for the full lower rib cage round the upper
            abdomen.
        stomach_food: fraction (0..1) of the stomach's lumen, from its dependent side, filled with
            mottled food rather than fluid (0 = a fasting stomach).
        aorta_on_spine: how far the drawn 2-5 mm fat gap between the aorta and the front of
            the vertebral bodies closes (0 = as drawn; 1 = the aorta lies against the bone, as
            in many older patients, whose aorta is wide and unfolded onto the spine).
    """

    seed: int
    bmi: float = 24.0
    tumour_encasement: float = 0.0
    celiac_level: str | None = None
    noise_hu: float | None = None
    spleen_scale: float = 1.0
    aortic_wall_mm: float = 0.0
    spleen_wrap: float = 0.0
    diaphragm_rise_mm: float = 0.0
    upper_ribs: float = 0.0
    stomach_food: float = 0.0
    aorta_on_spine: float = 0.0

    def __post_init__(self) -> None:
        if not 14.0 <= float(self.bmi) <= 50.0:
            raise PlannerError(f"phantom bmi={self.bmi} is outside the supported 14-50 kg/m^2")
        if not 0.0 <= float(self.tumour_encasement) <= 1.0:
            raise PlannerError(
                f"phantom tumour_encasement={self.tumour_encasement} must be a fraction in 0..1")
        if self.celiac_level not in (None, "T12", "L1"):
            raise PlannerError(
                f"phantom celiac_level={self.celiac_level!r} must be 'T12', 'L1' or None")
        if self.noise_hu is not None and not 0.0 <= float(self.noise_hu) <= 100.0:
            raise PlannerError(f"phantom noise_hu={self.noise_hu} must be 0..100 HU")
        for name, (low, high, meaning) in PARAM_RANGES.items():
            value = getattr(self, name)
            if not low <= float(value) <= high:
                raise PlannerError(f"phantom {name}={value} must be {low:g}..{high:g} ({meaning})")


@dataclass(frozen=True)
class CTPhantom:
    """A generated phantom: CT image, exact labels on the same grid, landmark points.

    ``landmarks`` are patient LPS mm: ``celiac_origin``, ``sma_origin``,
    ``aortic_bifurcation``, ``renal_artery_left_origin``, ``renal_artery_right_origin``,
    ``ivc_confluence``, ``conus_medullaris`` and the vertebral body centres ``T10`` ..
    ``L5``, ``S1``. ``details`` holds drawn values: ``celiac_level`` ("T12"/"L1"),
    ``celiac_origin_faces`` ("T12 body", "T12-L1 disc", "L1 body"),
    ``subcutaneous_fat_anterior_mm``, ``costophrenic_recess_z_mm``, endplate z per level.
    """

    image: Volume
    labels: Volume
    landmarks: dict[str, tuple[float, float, float]]
    params: PhantomParams
    details: Mapping[str, object] = field(default_factory=dict)


# ============================================================================ geometry
class _Grid:
    """Voxel-centre LPS coordinates of the output grid and helpers to paint shapes."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 origin: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = spacing
        self.origin = origin
        nz, ny, nx = shape
        self.z = (origin[2] + spacing[0] * np.arange(nz)).astype(np.float32)
        self.y = (origin[1] + spacing[1] * np.arange(ny)).astype(np.float32)
        self.x = (origin[0] + spacing[2] * np.arange(nx)).astype(np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.min_radius = 0.55 * max(spacing)  # thinner tubes would break into pieces
        #: image-only detail inside a label (hepatic veins, gallbladder bile, colon stool):
        #: (box, mask, label name, kind); the labels stay those of the organ
        self.hu_marks: list[tuple[tuple[slice, slice, slice], np.ndarray, str, str]] = []

    def index_range(self, axis: int, lo: float, hi: float) -> slice:
        coord = (self.z, self.y, self.x)[axis]
        i0 = int(np.searchsorted(coord, lo, side="left"))
        i1 = int(np.searchsorted(coord, hi, side="right"))
        return slice(max(i0, 0), min(max(i1, 0), len(coord)))

    def box(self, lo_xyz: np.ndarray, hi_xyz: np.ndarray) -> tuple[slice, slice, slice]:
        return (self.index_range(0, lo_xyz[2], hi_xyz[2]),
                self.index_range(1, lo_xyz[1], hi_xyz[1]),
                self.index_range(2, lo_xyz[0], hi_xyz[0]))

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (X, Y, Z) coordinate arrays of a box."""
        zs, ys, xs = box
        return (self.x[xs][None, None, :], self.y[ys][None, :, None], self.z[zs][:, None, None])

    def paint(self, name: str, mask: np.ndarray, box: tuple[slice, slice, slice] | None = None,
              only_on: tuple[str, ...] | None = None, not_on: tuple[str, ...] = ()) -> None:
        """Write ``name``'s label where ``mask`` holds (optionally only over, or never
        over, given labels)."""
        target = self.labels if box is None else self.labels[box]
        if target.size == 0:
            return
        mask = np.broadcast_to(mask, target.shape)
        if only_on is not None:
            mask = mask & np.isin(target, [label_of(n) for n in only_on])
        if not_on:
            mask = mask & ~np.isin(target, [label_of(n) for n in not_on])
        target[mask] = label_of(name)

    # ---------------------------------------------------------------- shapes
    def ellipsoid(self, center: np.ndarray, axes: np.ndarray, rot: np.ndarray | None = None
                  ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Box and mask of an ellipsoid; ``rot`` columns are its axes in LPS."""
        rot = np.eye(3) if rot is None else rot
        ext = np.sqrt(((rot * axes[None, :]) ** 2).sum(axis=1))
        box = self.box(center - ext, center + ext)
        X, Y, Z = self.coords(box)
        dx, dy, dz = X - center[0], Y - center[1], Z - center[2]
        total = np.zeros(np.broadcast_shapes(dx.shape, dy.shape, dz.shape), dtype=np.float32)
        for k in range(3):
            q = dx * rot[0, k] + dy * rot[1, k] + dz * rot[2, k]
            total += (q / axes[k]) ** 2
        return box, total <= 1.0

    def tube(self, points: np.ndarray, radii: np.ndarray | float
             ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Box and mask of a tube around a densely sampled polyline (N, 3) LPS mm."""
        points = np.asarray(points, dtype=float)
        r_in = np.atleast_1d(np.asarray(radii, dtype=float))
        # radii given per control point are spread evenly along the (spline) points
        r_pts = np.interp(np.linspace(0, 1, len(points)), np.linspace(0, 1, len(r_in)), r_in)
        pts, r = _resample_curve(points, step=min(self.spacing) * 0.5, values=r_pts)
        r = np.maximum(r, self.min_radius)
        box = self.box(pts.min(axis=0) - r.max(), pts.max(axis=0) + r.max())
        shape = tuple(s.stop - s.start for s in box)
        if 0 in shape:
            return box, np.zeros(shape, dtype=bool)
        return box, self._near_points(box, pts, r)

    def _near_points(self, box: tuple[slice, slice, slice], pts: np.ndarray,
                     r: np.ndarray) -> np.ndarray:
        """Voxels of ``box`` within ``r[i]`` of their nearest point ``pts[i]``.

        Candidates come from a distance transform of the voxels holding points, so the
        exact nearest-point query runs only near the curve (much faster than the box)."""
        shape = tuple(s.stop - s.start for s in box)
        start = np.array([box[0].start, box[1].start, box[2].start])
        origin_zyx = np.array([self.z[0], self.y[0], self.x[0]])
        ijk = np.rint((pts[:, ::-1] - origin_zyx) / np.asarray(self.spacing)).astype(int) - start
        ijk = ijk[np.all((ijk >= 0) & (ijk < shape), axis=1)]
        seeds = np.ones(shape, dtype=bool)
        seeds[tuple(ijk.T)] = False
        near = ndimage.distance_transform_edt(seeds, sampling=self.spacing) \
            <= float(r.max()) + max(self.spacing)
        cand = np.argwhere(near)
        if len(cand) == 0:
            return np.zeros(shape, dtype=bool)
        xyz = np.stack([self.x[cand[:, 2] + start[2]], self.y[cand[:, 1] + start[1]],
                        self.z[cand[:, 0] + start[0]]], axis=1)
        dist, idx = cKDTree(pts).query(xyz, distance_upper_bound=float(r.max()) + 1e-3)
        ok = np.isfinite(dist)
        ok[ok] = dist[ok] <= r[idx[ok]]
        out = np.zeros(shape, dtype=bool)
        out[tuple(cand[ok].T)] = True
        return out

    def slice_ellipses(self, z_lo: float, z_hi: float, cx, cy, ax, ay, xy_pad: float = 0.0
                       ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """Per-slice ellipses; ``cx, cy, ax, ay`` are callables of z (mm)."""
        zs = self.index_range(0, z_lo, z_hi)
        z = self.z[zs]
        if len(z) == 0:
            return (zs, slice(0, 0), slice(0, 0)), np.zeros((0, 0, 0), bool)
        cxv, cyv, axv, ayv = (np.asarray(f(z), dtype=np.float32) for f in (cx, cy, ax, ay))
        lo = np.array([np.min(cxv - axv), np.min(cyv - ayv), 0]) - xy_pad
        hi = np.array([np.max(cxv + axv), np.max(cyv + ayv), 0]) + xy_pad
        box = (zs, self.index_range(1, lo[1], hi[1]), self.index_range(2, lo[0], hi[0]))
        X, Y, _ = self.coords(box)
        mask = (((X - cxv[:, None, None]) / axv[:, None, None]) ** 2
                + ((Y - cyv[:, None, None]) / ayv[:, None, None]) ** 2) <= 1.0
        return box, mask


def _resample_curve(points: np.ndarray, step: float, values: np.ndarray | None = None):
    """Points along a polyline every ``step`` mm (keeps the ends); with ``values`` (one
    per input point) also returns them interpolated at the new points."""
    points = np.asarray(points, dtype=float)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(s[-1] / step)) + 1, 2)
    t = np.linspace(0.0, s[-1], n)
    out = np.stack([np.interp(t, s, points[:, k]) for k in range(3)], axis=1)
    if values is None:
        return out
    return out, np.interp(t, s, values)


def _smooth_curve(control: np.ndarray, n: int = 60) -> np.ndarray:
    """Catmull-Rom spline through control points (K, 3) -> (about n*K, 3) points."""
    c = np.asarray(control, dtype=float)
    if len(c) < 3:
        return _resample_curve(c, step=1.0)
    p = np.vstack([2 * c[0] - c[1], c, 2 * c[-1] - c[-2]])
    out = []
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(c[-1][None, :])
    return np.vstack(out)


def _rot(axis: str, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _capsule_2d(X, Y, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Per-slice distance to segments p1->p2 ((nz, 2) arrays) on broadcast X, Y."""
    ax, ay = p1[:, 0, None, None], p1[:, 1, None, None]
    bx, by = p2[:, 0, None, None], p2[:, 1, None, None]
    vx, vy = bx - ax, by - ay
    t = ((X - ax) * vx + (Y - ay) * vy) / np.maximum(vx * vx + vy * vy, 1e-6)
    t = np.clip(t, 0.0, 1.0)
    return np.hypot(X - (ax + t * vx), Y - (ay + t * vy))


# ============================================================================ anatomy draws
@dataclass
class _Spine:
    """Vertebral levels: z ranges (mm), body centre and size per level."""

    sup: dict[str, float]
    inf: dict[str, float]
    width: dict[str, float]
    depth: dict[str, float]
    z_ctrl: np.ndarray
    x_ctrl: np.ndarray
    y_ctrl: np.ndarray
    canal_w: float
    canal_d: float

    def mid(self, level: str) -> float:
        return 0.5 * (self.sup[level] + self.inf[level])

    def height(self, level: str) -> float:
        return self.sup[level] - self.inf[level]

    def xc(self, z):
        return np.interp(z, self.z_ctrl, self.x_ctrl)

    def yc(self, z):
        return np.interp(z, self.z_ctrl, self.y_ctrl)

    def w(self, z):
        zs = [self.mid(v) for v in VERTEBRAL_LEVELS][::-1]
        return np.interp(z, zs, [self.width[v] for v in VERTEBRAL_LEVELS][::-1])

    def d(self, z):
        zs = [self.mid(v) for v in VERTEBRAL_LEVELS][::-1]
        return np.interp(z, zs, [self.depth[v] for v in VERTEBRAL_LEVELS][::-1])

    def front(self, z):
        """y of the anterior surface of the vertebral column at z."""
        return self.yc(z) - 0.5 * self.d(z)


def _draw_spine(rng: np.random.Generator, z_top: float, y_back: float) -> _Spine:
    scale = rng.uniform(0.92, 1.08)
    sup: dict[str, float] = {}
    inf: dict[str, float] = {}
    z = z_top
    for lev in _LUMBAR:
        sup[lev] = z
        z -= _BODY_HEIGHT[lev] * scale * rng.uniform(0.96, 1.04)
        inf[lev] = z
        z -= _DISC_HEIGHT[lev] * scale * rng.uniform(0.85, 1.15)
    sup["S1"] = z
    inf["S1"] = z - 30.0 * scale
    wscale = rng.uniform(0.92, 1.1)
    width = {k: v * wscale for k, v in _BODY_WIDTH.items()}
    depth = {k: v * rng.uniform(0.95, 1.05) * wscale for k, v in _BODY_DEPTH.items()}
    # body centre: posterior elements + canal + half body in front of the back muscles'
    # floor; lumbar lordosis brings L3-L4 forward, the sacrum slopes backwards.
    lordosis = rng.uniform(6.0, 16.0)
    levels = list(_LUMBAR) + ["S1"]
    zc = np.array([0.5 * (sup[v] + inf[v]) for v in levels])
    dist_back = np.array([64, 66, 68, 70, 72, 74, 74, 72, 70], float) * rng.uniform(0.94, 1.06)
    bump = np.exp(-(((zc - zc[5]) / 70.0) ** 2))
    yc = y_back - dist_back - lordosis * bump
    xc = rng.normal(0, 1.5) + 3.0 * rng.uniform(-1, 1) * np.sin((zc - zc[0]) / 120.0)
    # control points from above the top to the bottom of the field (sacral slope 0.75)
    z_ctrl = np.concatenate([[z_top + 60], zc, [inf["S1"] - 120]])
    y_ctrl = np.concatenate([[yc[0] + 4], yc, [yc[-1] + 0.4 * (zc[-1] - inf["S1"] + 120)]])
    x_ctrl = np.concatenate([[xc[0]], xc, [xc[-1]]])
    order = np.argsort(z_ctrl)
    return _Spine(sup, inf, width, depth, z_ctrl[order], x_ctrl[order], y_ctrl[order],
                  canal_w=rng.uniform(18, 23), canal_d=rng.uniform(14, 18))


class _Torso:
    """Per-slice super-ellipse outline of the body and its layers (skin, fat, wall)."""

    def __init__(self, rng: np.random.Generator, bmi: float, z_ctrl: np.ndarray) -> None:
        visceral = 1.0 + 0.012 * (bmi - 24.0)
        self.a0 = rng.uniform(128, 142) * visceral  # half-width inside subcutaneous fat
        self.bant0 = rng.uniform(98, 108) * (1.0 + 0.02 * (bmi - 24.0))
        self.bpost0 = rng.uniform(92, 100)
        fat = max(6.0, 1.7 * (bmi - 14.0)) * rng.uniform(0.85, 1.15)  # even cachexia keeps a few mm
        self.t_ant, self.t_lat, self.t_post = fat, 1.15 * fat, 0.65 * fat + 2.0
        self.wall = rng.uniform(9, 13)
        # z profile: lower chest, waist (L3), iliac crests, pelvis
        self.z_ctrl = z_ctrl  # (T10 sup, L1, L3, L5, bottom) increasing order
        self.a_prof = np.array([1.08, 1.03, 0.97, 0.98, 1.02]) * rng.uniform(0.97, 1.03, 5)
        self.b_prof = np.array([0.85, 1.0, 1.03, 1.0, 0.97])

    def dims(self, z, inset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half-width, anterior and posterior half-depth at z for a layer boundary."""
        fa = np.interp(z, self.z_ctrl, self.a_prof[::-1])
        fb = np.interp(z, self.z_ctrl, self.b_prof[::-1])
        a, bant, bpost = self.a0 * fa, self.bant0 * fb, self.bpost0 + 0 * fa
        if inset == "skin":
            return a + self.t_lat, bant + self.t_ant, bpost + self.t_post
        if inset == "fat":
            return a, bant, bpost
        if inset == "cavity":
            return a - self.wall, bant - self.wall, bpost - 6.0
        raise ValueError(inset)

    def level(self, X, Y, z, inset: str) -> np.ndarray:
        """Super-ellipse level value (<= 1 inside) on broadcast X (1,1,nx), Y (1,ny,1)."""
        a, bant, bpost = (v[:, None, None] for v in self.dims(z, inset))
        b = np.where(Y < 0, bant, bpost)
        q = np.where(Y < 0, 2.1, 3.2)
        return (np.abs(X) / a) ** 2.3 + (np.abs(Y) / b) ** q


def _thoracic_layers(g: "_Grid", spine: "_Spine", cav: np.ndarray, z_recess: float,
                     z_dome_r: float, z_dome_l: float, dia_th: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Lung bases and diaphragm dome as layers along the chest wall.

    At each level the lung is the part of the thoracic space within D(z) of its wall (the
    body wall, and the paraspinal block behind the vertebral bodies), with D growing from
    0 at the costophrenic recess to the dome: thin posterior crescents at T12, wide lungs
    at T10. The recess is lowest posteriorly (about T12-L1) and higher anteriorly.
    Returns (lung mask, diaphragm mask) on the full grid."""
    zs = g.index_range(0, z_recess - 2.0, g.z[-1] + 1.0)
    lungs = np.zeros(g.shape, bool)
    dia = np.zeros(g.shape, bool)
    if zs.stop <= zs.start:
        return lungs, dia
    X, Y = g.x[None, :], g.y[:, None]
    theta = np.arctan2(np.abs(X), -Y)
    z_rec = z_recess + 55.0 * ((1.0 + np.cos(theta)) / 2.0) ** 1.5
    z_dome = np.where(X > 0, z_dome_l, z_dome_r)
    for k in range(zs.start, zs.stop):
        z = float(g.z[k])
        u = np.clip((z - z_rec) / np.maximum(z_dome - z_rec, 1.0), 0.0, 1.0)
        depth = 75.0 * u ** 1.2
        if depth.max() <= 0:
            continue
        xc, yc = float(spine.xc(z)), float(spine.yc(z))
        # paraspinal block behind the transverse processes, rounded at its corners
        block = ((np.abs(X - xc) / 62.0) ** 4 + ((Y - (yc + 80.0)) / 60.0) ** 4) <= 1.0
        space = cav[k] & ~block
        d_wall = ndimage.distance_transform_edt(space, sampling=g.spacing[1:])
        lungs[k] = space & (d_wall <= depth) & (depth > 0)
        dia[k] = space & (d_wall > depth) & (d_wall <= depth + dia_th) & (depth > 0)
    return lungs, dia


# ============================================================================ generator
def make_ct_phantom(params: PhantomParams | int,
                    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)) -> CTPhantom:
    """Generate one phantom on an axial grid with ``spacing_mm`` given as (z, y, x) mm.

    The field of view is about 384 x 384 mm in-plane (wider for a high BMI) and 360 mm
    craniocaudally, from the T10 upper endplate down into the sacrum.

    Raises:
        PlannerError: for parameters out of range or a non-positive spacing.
    """
    if not isinstance(params, PhantomParams):
        params = PhantomParams(seed=int(params))
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != 3 or min(spacing) <= 0 or max(spacing) > 12:
        raise PlannerError(f"phantom spacing_mm={spacing_mm} must be three values in (0, 12] mm")
    rng = np.random.default_rng([int(params.seed), 20261201])
    bmi = float(params.bmi)

    # ---- skeleton and body outline in mm ------------------------------------------------
    z_top = 0.0  # T10 superior endplate at z = 0, everything else below
    torso = _Torso(rng, bmi, np.zeros(5))  # z profile set once the spine is drawn
    y_back_floor = torso.bpost0 - 6.0  # posterior fascia: spinous tips lie here
    spine = _draw_spine(rng, z_top, y_back_floor)
    z_field_top = z_top + 3.0
    z_field_bot = z_field_top - FOV_Z_MM
    torso.z_ctrl = np.array([z_field_bot, spine.mid("L5"), spine.mid("L3"), spine.mid("L1"), z_top])

    half_w = float(np.max(torso.dims(np.linspace(z_field_bot, z_top, 20), "skin")[0]))
    fov_x = max(FOV_XY_MM, 2.0 * half_w + 24.0)
    half_back = float(torso.bpost0 + torso.t_post)
    half_front = float(np.max(torso.dims(np.linspace(z_field_bot, z_top, 20), "skin")[1]))
    fov_y = max(FOV_XY_MM, half_back + half_front + 24.0)
    sz, sy, sx = spacing
    shape = (int(round(FOV_Z_MM / sz)), int(round(fov_y / sy)), int(round(fov_x / sx)))
    y_centre = 0.5 * (half_back - half_front)
    origin = (-0.5 * (shape[2] - 1) * sx, y_centre - 0.5 * (shape[1] - 1) * sy,
              z_field_top - (shape[0] - 1) * sz)
    g = _Grid(shape, spacing, origin)
    allz = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    X, Y, Z = g.coords(allz)

    # ---- body wall ------------------------------------------------------------------------
    lev_skin = torso.level(X, Y, g.z, "skin")
    inside = lev_skin <= 1.0
    skin_mm = max(2.5, 1.05 * max(sy, sx))
    a, bant, bpost = torso.dims(g.z, "skin")
    shrink = np.stack([a - skin_mm, bant - skin_mm, bpost - skin_mm])
    fat_in = torso.level(X, Y, g.z, "fat") <= 1.0
    cav = torso.level(X, Y, g.z, "cavity") <= 1.0
    g.paint("body", inside)
    g.paint("subcutaneous_fat", inside & ~fat_in)
    del lev_skin
    sk_a, sk_b, sk_p = (v[:, None, None] for v in shrink)
    skin_inner = ((np.abs(X) / sk_a) ** 2.3 + (np.abs(Y) / np.where(Y < 0, sk_b, sk_p))
                  ** np.where(Y < 0, 2.1, 3.2)) <= 1.0
    g.paint("skin", inside & ~skin_inner)
    g.paint("muscle", fat_in & ~cav)
    del skin_inner

    # ---- key z levels ---------------------------------------------------------------------
    sup, inf = spine.sup, spine.inf
    details: dict[str, object] = {"subcutaneous_fat_anterior_mm": round(torso.t_ant, 1),
                                  "bmi": bmi}

    # diaphragm: domes (right higher) and posterior costophrenic recess near T12/L1
    z_dome_r = z_top + rng.uniform(15, 35)
    z_dome_l = z_dome_r - rng.uniform(8, 20)
    z_recess = inf["T12"] + rng.uniform(-12, 6)
    rise = float(params.diaphragm_rise_mm)  # after the draws, so the rest of the phantom is unchanged
    z_dome_r, z_dome_l, z_recess = z_dome_r + rise, z_dome_l + rise, z_recess + rise
    details["costophrenic_recess_z_mm"] = round(float(z_recess), 1)
    y_front = spine.front(g.z)[:, None, None]
    dia_th = 4.5
    lung_zone, dia_zone = _thoracic_layers(g, spine, cav, z_recess, z_dome_r, z_dome_l, dia_th)
    below_dia = ~(lung_zone | dia_zone)

    # ---- aorta centreline ---------------------------------------------------------------
    aorta_scale = rng.uniform(0.85, 1.15)
    z_bif = spine.mid("L4") - rng.uniform(-0.3, 0.6) * spine.height("L4")
    zc_lv = np.array([spine.mid(v) for v in _LUMBAR[:7]])  # T10..L4
    r_ctrl = np.array([13.0, 12.8, 12.4, 12.0, 11.2, 10.5, 9.8]) * aorta_scale
    dx_ctrl = np.array([19.0, 15.0, 10.0, 8.0, 7.0, 7.0, 6.0]) + rng.normal(0, 2.5, 7)
    dx_ctrl[0:2] += rng.uniform(0, 5)
    gap = rng.uniform(2.0, 5.0)
    # fat between the aorta and the vertebral body; aorta_on_spine = 1 closes it (and the
    # 1 mm margin below) so the aortic wall touches the bone
    gap = gap - (gap + 1.0) * float(params.aorta_on_spine)

    def r_a(z):
        return np.interp(z, zc_lv[::-1], r_ctrl[::-1])

    def x_a(z):
        return spine.xc(z) + np.interp(z, zc_lv[::-1], dx_ctrl[::-1])

    def y_a_raw(z):
        return spine.front(z) - r_a(z) - gap + np.interp(z, zc_lv[::-1], [8, 5, 2, 0, 0, 0, 0][::-1])

    # push the aorta forward until it clears the vertebral body ellipse by `gap`
    zza = np.linspace(z_bif, z_field_top, 80)
    ya = y_a_raw(zza)
    th = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    for _ in range(30):
        bx = spine.xc(zza)[:, None] + 0.5 * spine.w(zza)[:, None] * np.sin(th)
        by = spine.yc(zza)[:, None] + 0.5 * spine.d(zza)[:, None] * np.cos(th)
        dist = np.hypot(bx - x_a(zza)[:, None], by - ya[:, None]).min(axis=1)
        short = dist < r_a(zza) + gap + 1.0
        if not short.any():
            break
        ya = ya - 1.0 * short
    ya_smooth = ndimage.gaussian_filter1d(ya, 2.0)
    ya_smooth = np.minimum(ya_smooth, ya)

    def y_a(z):
        return np.interp(z, zza, ya_smooth)

    aorta_xyz = lambda z: np.array([x_a(z), y_a(z), z], dtype=float)  # noqa: E731

    # celiac origin level
    level = params.celiac_level
    choice = rng.uniform()
    if level is None:
        level = "T12" if choice < 0.5 else "L1"
    if level == "T12":
        z_c = inf["T12"] + rng.uniform(0.05, 0.55) * spine.height("T12")
    else:
        z_c = sup["L1"] - rng.uniform(0.05, 0.5) * spine.height("L1")
    faces = f"{level} body"
    if params.celiac_level is None and choice > 0.8:  # sometimes opposite the disc
        z_c = 0.5 * (inf["T12"] + sup["L1"]) + rng.uniform(-1.5, 1.5)
        faces = "T12-L1 disc"
    details["celiac_level"] = level
    details["celiac_origin_faces"] = faces
    z_s = z_c - rng.uniform(9.0, 17.0)
    z_mal = z_c + rng.uniform(3.0, 8.0)  # median arcuate ligament just above the origin
    z_ren_l = z_s - rng.uniform(6.0, 14.0)
    z_ren_r = z_ren_l - rng.uniform(0.0, 8.0)

    # ---- organs' anchor positions (mm) --------------------------------------------------
    cel_o = aorta_xyz(z_c) + np.array([0.0, -r_a(z_c), 0.0])
    cel_len = rng.uniform(14.0, 24.0)
    cel_dir = np.array([rng.uniform(-0.15, 0.15), -1.0, -rng.uniform(0.0, 0.45)])
    cel_dir /= np.linalg.norm(cel_dir)
    cel_b = cel_o + cel_len * cel_dir
    sma_o = aorta_xyz(z_s) + np.array([0.0, -r_a(z_s), 0.0])
    sma_off = rng.uniform(10.0, 17.0)  # aortomesenteric distance (to the aortic wall)

    def sma_pt(z):
        """Centre of the descending SMA at z (below its first bend)."""
        return np.array([x_a(z) - 1.0 - 0.04 * (z_s - z), y_a(z) - r_a(z) - sma_off
                         - 0.05 * (z_s - z), z])

    # kidneys
    k_len = rng.uniform(50, 58)
    kid: dict[str, dict[str, object]] = {}
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        zc_k = 0.5 * (inf["L1"] + sup["L2"]) + (rng.uniform(-6, 10) if side == "left"
                                                 else -rng.uniform(8, 22))
        axes = np.array([k_len * rng.uniform(0.95, 1.05), rng.uniform(25, 30), rng.uniform(20, 25)])
        # long axis: upper pole medial and posterior; hilum turned anteromedially
        rot = _rot("z", sgn * rng.uniform(25, 40)) @ _rot("y", -sgn * rng.uniform(8, 16)) \
            @ _rot("x", -rng.uniform(8, 16))
        rot = rot @ np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)  # axis0 -> z
        half_z = float(np.sqrt(((rot[2] * axes) ** 2).sum()))
        zc_k = float(np.clip(zc_k, inf["L3"] + half_z + 4.0, sup["T12"] - half_z - 4.0))
        # hilum about 5 cm from the median plane (Gray's Anatomy, 41st ed., kidneys), so the
        # psoas and crus, not the kidney, lie beside the T12-L1 vertebral bodies
        xc_k = sgn * (spine.w(zc_k) / 2 + rng.uniform(44, 52))
        yc_k = spine.yc(zc_k) + rng.uniform(0, 10)
        kid[side] = {"c": np.array([xc_k, yc_k, zc_k]), "axes": axes, "rot": rot}

    # ---------------------------------------------------------------- soft organs (low priority)
    # retroperitoneal midline zone kept free of intraperitoneal organs
    aorta_z = np.clip(g.z, z_bif, None)
    xa_s = x_a(aorta_z)[:, None, None]
    ya_s = y_a(aorta_z)[:, None, None]
    ra_s = r_a(aorta_z)[:, None, None]
    periaortic = (np.hypot(X - xa_s, Y - ya_s) < ra_s + 9.0) & (Z > z_s - 20) & (Z < z_c + 22)
    # rounded prevertebral / retrocrural zone (aorta, IVC, crura, azygos and their fat)
    retro = (((X - spine.xc(g.z)[:, None, None]) / (spine.w(g.z)[:, None, None] / 2 + 26)) ** 2
             + ((Y - (y_front + 25.0)) / 35.0) ** 2) <= 1.0
    abdomen = cav & below_dia & ~retro & ~periaortic
    del retro

    _paint_bowel(g, rng, spine, torso, abdomen, kid, z_s, x_a, y_a, r_a)
    stomach_gas = _paint_stomach(g, rng, spine, abdomen, x_a, y_a, r_a, z_c, float(params.stomach_food))
    _paint_liver(g, rng, spine, abdomen, cav & below_dia, z_top)
    spleen_hilum = _paint_spleen(g, rng, spine, cav & below_dia & ~periaortic, float(params.spleen_scale),
                                 float(params.spleen_wrap))

    # pancreas: head in the duodenal loop, body over the aorta near L1, tail to the spleen
    z_conf = z_s - rng.uniform(6.0, 12.0)
    conf = np.array([x_a(z_conf) - rng.uniform(13, 18), y_a(z_conf) - r_a(z_conf) - sma_off - 8.0,
                     z_conf])
    head = np.array([conf[0] - rng.uniform(16, 24), conf[1] + 6.0, z_conf - rng.uniform(18, 28)])
    body = np.array([x_a(z_conf) + 12.0, conf[1] - 10.0, z_conf + 6.0])
    tail = spleen_hilum + np.array([-18.0, -8.0, -4.0])
    pan_ctrl = np.array([head, 0.5 * (head + conf) + [0, -4, 0], conf + [2, -11, 2], body,
                         0.5 * (body + tail) + [0, 10, 4], tail])
    pan_pts = _smooth_curve(pan_ctrl, 30)
    pr = np.interp(np.linspace(0, 1, len(pan_pts)), [0, 0.15, 0.35, 0.6, 1.0],
                   [rng.uniform(15, 19), 12, 9, 10, 9])
    box, m = g.tube(pan_pts, pr)
    pan_allowed = cav & below_dia & ~periaortic
    g.paint("pancreas", m & pan_allowed[box], box)

    # duodenum C-loop around the head (bowel), painted before the pancreas wins
    d_ctrl = np.array([[conf[0] + 5, conf[1] - 40, z_conf + 10], [head[0] - 18, head[1] - 22, z_conf + 4],
                       [head[0] - 26, head[1] - 4, head[2]], [head[0] - 18, head[1] + 2, head[2] - 28],
                       [x_a(z_bif + 30) - 8, y_a(z_bif + 30) - r_a(z_bif + 30) - 8, head[2] - 38],
                       [x_a(z_conf) + 30, conf[1] + 8, z_conf - 24]])
    box, m = g.tube(_smooth_curve(d_ctrl, 30), np.array([11, 12, 13, 12, 8, 10], float))
    g.paint("bowel", m & pan_allowed[box], box, only_on=("body", "bowel", "stomach"))

    # adrenal glands: thin plates above the kidneys' upper poles, beside the crura
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        k = kid[side]
        top = k["c"] + k["rot"][:, 0] * k["axes"][0] * 0.85
        c = np.array([sgn * (spine.w(top[2]) / 2 + rng.uniform(14, 20)),
                      spine.yc(top[2]) - rng.uniform(8, 14), top[2] + rng.uniform(6, 12)])
        for ang in (-25.0, 25.0):
            rot = _rot("z", sgn * 60 + ang) @ _rot("x", 10)
            box, m = g.ellipsoid(c + rot[:, 1] * 7, np.array([2.2, 13.0, 11.0]), rot)
            g.paint("adrenal_glands", m, box, only_on=("body", "liver", "bowel", "spleen",
                                                      "stomach", "pancreas"))

    # kidneys with a medial hilum (renal sinus fat stays "body")
    kid_hilum = {}
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        k = kid[side]
        box, m = g.ellipsoid(k["c"], k["axes"], k["rot"])
        name = f"kidney_{side}"
        g.paint(name, m & cav[box], box)
        hil = k["c"] + np.array([-sgn * k["axes"][1] * 0.75, -6.0, 0.0])
        box, m = g.ellipsoid(hil, np.array([11.0, 8.0, 17.0]), _rot("z", -sgn * 30))
        g.paint("body", m, box, only_on=(name,))
        kid_hilum[side] = hil

    # tumour (pancreatic body, encasing the celiac axis by the given fraction)
    if params.tumour_encasement > 0:
        _paint_tumour(g, rng, params.tumour_encasement, cel_o, cel_b, cel_dir, body, z_c)
        details["tumour"] = True

    # lungs (above the diaphragm, inside the ribcage, outside the mediastinum) and diaphragm
    xs_ = spine.xc(g.z)[:, None, None]
    mediast = ((np.abs(X - (xs_ + 6)) < 26) & (Y < spine.yc(g.z)[:, None, None])
               & (Y > y_front - 40.0)) | \
        ((np.abs(X - xs_) < spine.canal_w / 2 + 12) & (Y >= spine.yc(g.z)[:, None, None]))
    g.paint("lungs", lung_zone & ~mediast, only_on=("body", "liver", "spleen", "stomach", "bowel",
                                                  "muscle"))
    g.paint("muscle", dia_zone & ~mediast, only_on=("body", "liver", "spleen", "stomach", "bowel",
                                                  "adrenal_glands"))
    del mediast, lung_zone, dia_zone

    # ---------------------------------------------------------------- muscles
    _paint_back_muscles(g, rng, spine, torso, cav, z_field_bot)
    _paint_psoas(g, rng, spine, z_field_bot)

    # diaphragm crura around the aorta (retrocrural gap at T12 for the splanchnic zone)
    _paint_crura(g, rng, spine, x_a, y_a, r_a, z_mal, z_c)

    # ---------------------------------------------------------------- veins
    z_ivc_conf = z_bif - rng.uniform(6.0, 18.0)
    ivc_dx = rng.uniform(20.0, 26.0)

    def ivc_x(z):
        return spine.xc(z) - spine.w(z) / 2 - np.interp(z, [z_ivc_conf, sup["L2"], sup["T12"], z_top],
                                                        [-ivc_dx + 22, 4, 6, 8]) - 2.0

    def ivc_y(z):
        return spine.front(z) - np.interp(z, [z_ivc_conf, sup["L2"], sup["T12"], z_top + 10],
                                          [12, 13, 24, 40])

    def ivc_ra(z):
        return np.interp(z, [z_ivc_conf, z_ren_r, z_top], [11.0, 12.5, 13.5])

    def ivc_rb(z):
        return np.interp(z, [z_ivc_conf, z_ren_r, z_top], [8.5, 10.0, 12.0])

    # keep the IVC clear of the aorta
    zz = np.linspace(z_ivc_conf, z_field_top, 60)
    dmin = np.hypot(ivc_x(zz) - x_a(zz), ivc_y(zz) - y_a(zz)) - (r_a(zz) + ivc_ra(zz) + 4.0)
    shift = np.clip(-dmin, 0, None).max()
    box, m = g.slice_ellipses(z_ivc_conf, z_field_top + 5, lambda z: ivc_x(z) - shift, ivc_y,
                              ivc_ra, ivc_rb)
    g.paint("inferior_vena_cava", m, box)
    conf_ivc = np.array([float(ivc_x(z_ivc_conf) - shift), float(ivc_y(z_ivc_conf)), z_ivc_conf])

    # portal vein to the porta hepatis, splenic vein to the hilum, SMV down to L3
    porta = np.array([conf[0] - rng.uniform(30, 40), conf[1] - rng.uniform(5, 15), z_conf + rng.uniform(35, 45)])
    box, m = g.tube(_smooth_curve(np.array([conf, 0.5 * (conf + porta) + [0, -4, 0], porta,
                                            porta + [-25, 5, 8]]), 20), np.array([7.5, 7.5, 6.5, 5.0]))
    g.paint("portal_vein", m, box)
    box, m = g.tube(_smooth_curve(np.array([conf, conf + [20, 8, 4], body + [10, 12, 2],
                                            0.5 * (body + tail) + [0, 18, 4], spleen_hilum]), 20), 4.5)
    g.paint("portal_vein", m, box)
    box, m = g.tube(np.array([conf, conf + [-3, -4, -25], conf + [-6, -8, -55]]), 5.5)
    g.paint("portal_vein", m, box)

    # iliac veins: from the confluence to the pelvis, posteromedial to the arteries
    y_s1 = float(spine.front(spine.mid("S1")))
    for sgn in (1.0, -1.0):
        pts = np.array([conf_ivc, [sgn * 35.0, y_s1 - 4.0, sup["S1"] - 12.0],
                        [sgn * 52.0, y_s1 + 2.0, sup["S1"] - 38.0],
                        [sgn * 66.0, y_s1 - 18.0, z_field_bot - 5.0]])
        box, m = g.tube(_smooth_curve(pts, 20), np.array([9.0, 8.5, 8.0, 7.5]))
        g.paint("iliac_veins", m, box)

    # ---------------------------------------------------------------- arteries
    box, m = g.slice_ellipses(z_bif, z_field_top + 5, x_a, y_a, r_a, r_a)
    g.paint("aorta", m, box)
    bif = aorta_xyz(z_bif)
    for sgn in (1.0, -1.0):
        pts = np.array([bif + [0, 0, 3], bif + [sgn * 10, 2, -15],
                        [sgn * 34.0, y_s1 - 14.0, sup["S1"] - 6.0],
                        [sgn * 56.0, y_s1 - 22.0, sup["S1"] - 34.0],
                        [sgn * 70.0, y_s1 - 36.0, z_field_bot - 5.0]])
        box, m = g.tube(_smooth_curve(pts, 20), np.array([7.0, 6.0, 5.5, 4.5, 4.5]))
        g.paint("iliac_arteries", m, box, not_on=("aorta",))
        pts = np.array([[sgn * 48.0, y_s1 - 18.0, sup["S1"] - 24.0],
                        [sgn * 46.0, y_s1 + 12.0, sup["S1"] - 50.0],
                        [sgn * 50.0, y_s1 + 30.0, z_field_bot - 5.0]])
        box, m = g.tube(_smooth_curve(pts, 20), 3.5)
        g.paint("iliac_arteries", m, box, only_on=("body", "muscle", "bowel", "psoas_muscles",
                                                  "iliac_veins"))

    # celiac trunk and its hepatic, splenic and left gastric branches
    box, m = g.tube(np.array([cel_o + [0, r_a(z_c) * 0.6, 0], cel_o, cel_b]), 3.6)
    g.paint("celiac_trunk", m, box, not_on=("aorta",))
    hep_end = porta + np.array([8.0, -8.0, -2.0])
    branches = [
        (np.array([cel_b, cel_b + [-15, -4, 2], hep_end]), 2.8),
        (np.array([cel_b, cel_b + [18, -2, 6], body + [8, -2, 12], 0.5 * (body + tail) + [0, 6, 12],
                   spleen_hilum + [0, 0, 4]]), 2.8),
        (np.array([cel_b, cel_b + [6, -3, 14], cel_b + [14, -8, 28]]), 2.0),
    ]
    for pts, r in branches:
        box, m = g.tube(_smooth_curve(pts, 20), r)
        g.paint("celiac_trunk", m, box, only_on=("body", "pancreas", "bowel", "stomach", "liver",
                                                "muscle", "diaphragm_crura", "tumour", "spleen"))

    # SMA: 45 degree take-off then caudally in front of the aorta
    z_sma_end = z_bif + 10.0
    sma_pts = np.array([sma_o + [0, r_a(z_s) * 0.6, 0], sma_o, sma_pt(z_s - 10.0) + [0, 4, 0],
                        sma_pt(z_s - 25.0), sma_pt(0.5 * (z_s + z_sma_end)), sma_pt(z_sma_end)])
    box, m = g.tube(_smooth_curve(sma_pts, 20), np.array([3.8, 3.8, 3.6, 3.4, 3.0, 2.6]))
    g.paint("superior_mesenteric_artery", m, box, not_on=("aorta", "celiac_trunk"))

    # renal arteries from the lateral aortic walls to the hila (right one behind the IVC)
    ren = {}
    for side, sgn, zr in (("left", 1.0, z_ren_l), ("right", -1.0, z_ren_r)):
        o = aorta_xyz(zr) + np.array([sgn * r_a(zr) * 0.9, 2.0, 0.0])
        hil = kid_hilum[side]
        mid = 0.5 * (o + hil) + np.array([0, 4.0, 0])
        if side == "right":
            mid = np.array([ivc_x(zr) - shift, ivc_y(zr) + ivc_rb(zr) + 5.0, 0.5 * (zr + hil[2])])
        box, m = g.tube(_smooth_curve(np.array([o - [sgn * 4, 0, 0], o, mid, hil]), 20), 3.0)
        g.paint("renal_arteries", m, box, only_on=("body", "muscle", "psoas_muscles",
                                                  "diaphragm_crura", "bowel", "pancreas",
                                                  "kidney_left", "kidney_right", "adrenal_glands",
                                                  "renal_arteries", "liver"))
        ren[side] = o

    # ---------------------------------------------------------------- bone
    _paint_ribs(g, rng, spine, torso, int(round(params.upper_ribs)),
                np.random.default_rng([int(params.seed), 71]))
    _paint_pelvis(g, rng, spine, torso, z_field_bot)
    z_conus = inf["L1"] - rng.uniform(-8, 10)
    _paint_vertebrae(g, spine, z_field_bot, z_field_top, z_conus)
    _clear_retrorenal_liver(g)  # last, on the final kidney outline

    labels = g.labels
    # ---------------------------------------------------------------- image
    image = _render_hu(g, rng, params, stomach_gas)

    vol_kw = dict(spacing=spacing, origin=origin, direction=np.eye(3))
    landmarks: dict[str, tuple[float, float, float]] = {
        "celiac_origin": tuple(float(v) for v in cel_o),
        "sma_origin": tuple(float(v) for v in sma_o),
        "aortic_bifurcation": tuple(float(v) for v in bif),
        "renal_artery_left_origin": tuple(float(v) for v in ren["left"]),
        "renal_artery_right_origin": tuple(float(v) for v in ren["right"]),
        "ivc_confluence": tuple(float(v) for v in conf_ivc),
        "conus_medullaris": (float(spine.xc(z_conus)), float(spine.yc(z_conus) + spine.d(z_conus) / 2
                                                             + spine.canal_d / 2 + 1), float(z_conus)),
    }
    for lev in VERTEBRAL_LEVELS:
        zc = spine.mid(lev) if lev != "S1" else sup["S1"] - 0.5 * spine.height("S1")
        landmarks[lev] = (float(spine.xc(zc)), float(spine.yc(zc)), float(zc))
    details.update({"z_superior_endplate_mm": {k: round(float(v), 2) for k, v in sup.items()},
                    "z_inferior_endplate_mm": {k: round(float(v), 2) for k, v in inf.items()}})
    return CTPhantom(
        image=Volume(array=image, modality="CT", **vol_kw),
        labels=Volume(array=labels, modality="SEG", **vol_kw),
        landmarks=landmarks, params=params, details=details)


# ============================================================================ painters
def _paint_bowel(g: _Grid, rng, spine: _Spine, torso: _Torso, abdomen: np.ndarray, kid, z_s,
                 x_a, y_a, r_a) -> None:
    """Colon frame (ascending, transverse, descending, sigmoid) and small-bowel loops."""
    zk = float(kid["right"]["c"][2])
    a_waist = torso.dims(np.array([spine.mid("L3")]), "cavity")[0][0]
    b_front = torso.dims(np.array([spine.mid("L3")]), "cavity")[1][0]
    x_lat = a_waist - 22
    colon = np.array([
        [-x_lat + 10, -30, spine.inf["S1"] + 10],             # caecum
        [-x_lat, -10, spine.mid("L4")],
        [-x_lat + 4, 0, zk],                                  # hepatic flexure
        [-x_lat + 30, -b_front + 55, zk + 10],
        [0, -b_front + 30, spine.mid("L2") + rng.uniform(-20, 10)],  # transverse sags
        [x_lat - 30, -b_front + 50, spine.mid("L1") + 20],
        [x_lat - 8, -5, spine.mid("T12") + 5],                # splenic flexure
        [x_lat, 10, spine.mid("L2")],
        [x_lat - 4, 0, spine.mid("L5")],                      # descending
        [x_lat - 30, -40, spine.inf["S1"]],
        [10, -50, spine.inf["S1"] - 30],                      # sigmoid
        [-10, -20, spine.inf["S1"] - 60],
    ])
    colon[:, :2] += rng.normal(0, 4, (len(colon), 2))
    box, m = g.tube(_smooth_curve(colon, 25), rng.uniform(17, 22))
    g.paint("bowel", m & abdomen[box], box)
    g.hu_marks.append((box, m & abdomen[box], "bowel", "stool"))
    # small bowel: random smooth loops inside the mid/lower abdomen
    # loops wander inside an ellipsoid filling the mid and lower abdomen (jejunum higher
    # on the left), turning back when they reach its surface
    lo = np.array([-x_lat + 20, -b_front + 15, spine.inf["S1"] - 45])
    hi = np.array([x_lat - 20, spine.front(spine.mid("L3")) - 15, spine.sup["L1"]])
    centre = 0.5 * (lo + hi) + np.array([10.0, 0.0, 0.0])
    semi = 0.5 * (hi - lo)
    pts_all = []
    for _ in range(14):
        p = centre + semi * rng.uniform(-0.5, 0.5, 3)
        d = rng.normal(0, 1, 3)
        d /= np.linalg.norm(d)
        pts = [p.copy()]
        for _ in range(90):
            d = d + rng.normal(0, 0.35, 3)
            d /= np.linalg.norm(d)
            q = p + 4.0 * d
            if (((q - centre) / semi) ** 2).sum() > 1.0:
                d = -d + rng.normal(0, 0.3, 3)
                d /= np.linalg.norm(d)
                continue
            p = q
            pts.append(p.copy())
        pts_all.append(np.asarray(pts))
    pts = np.vstack(pts_all)
    r_sb = rng.uniform(10, 12.5)
    box = g.box(lo - r_sb, hi + r_sb)
    m = g._near_points(box, pts, np.full(len(pts), max(r_sb, g.min_radius)))
    g.paint("bowel", m & abdomen[box], box)


def _paint_stomach(g: _Grid, rng, spine: _Spine, abdomen, x_a, y_a, r_a, z_c, food: float = 0.0) -> np.ndarray:
    """Stomach from the oesophagus/fundus to the pylorus; returns its gas mask (full grid).

    ``food`` (0..1) is the fraction of the lumen, from the dependent (posterior) side, that holds
    mottled food instead of fluid, as in a patient who has eaten."""
    z_top = spine.sup["T10"]
    za = z_top - 4
    eso = np.array([x_a(za) - 8, y_a(za) - r_a(za) - 9, z_top + 10])
    ctrl = np.array([
        eso,
        [eso[0] + 20, eso[1] - 5, z_top - 12],                     # cardia
        [65 + rng.uniform(-8, 8), spine.front(z_top) - 15, z_top - 20],  # fundus (posterior)
        [70 + rng.uniform(-8, 8), -45, spine.mid("T12")],          # body
        [35, -85 + rng.uniform(-8, 8), spine.mid("L1") - 5],       # antrum (anterior)
        [-10, -75, z_c - rng.uniform(0, 12)],                      # pylorus
    ])
    radii = np.array([7.0, 14.0, rng.uniform(30, 40), rng.uniform(28, 36), 22.0, 11.0])
    box, m = g.tube(_smooth_curve(ctrl, 25), radii)
    m &= abdomen[box] | (g.coords(box)[2] > z_top - 15)
    g.paint("stomach", m, box, only_on=("body", "bowel"))
    st = g.labels[box] == label_of("stomach")
    gas = np.zeros(g.shape, bool)
    if st.any():
        _, Yb, _ = g.coords(box)
        ys = np.broadcast_to(Yb, st.shape)[st]
        level = np.quantile(ys, rng.uniform(0.15, 0.35))  # air-fluid level (supine: anterior gas)
        gas[box] = st & (Yb < level) & ndimage.binary_erosion(st)
        if food > 0:
            food_level = np.quantile(ys, 1.0 - food)
            g.hu_marks.append((box, st & (Yb >= food_level) & ~gas[box], "stomach", "food"))
    return gas


def _paint_liver(g: _Grid, rng, spine: _Spine, abdomen, cav_below, z_top) -> None:
    """Right lobe (down to L2-L3 laterally) and left lobe across the midline anteriorly."""
    c1 = np.array([-62 + rng.uniform(-6, 6), -5 + rng.uniform(-6, 6), z_top - rng.uniform(10, 25)])
    ax1 = np.array([rng.uniform(95, 110), rng.uniform(92, 105), rng.uniform(105, 125)])
    box, m1 = g.ellipsoid(c1, ax1, _rot("y", rng.uniform(-28, -18)))  # inferior border rises medially
    g.paint("liver", m1 & abdomen[box], box, only_on=("body", "bowel"))
    c2 = np.array([15 + rng.uniform(-10, 10), -55, z_top - rng.uniform(5, 15)])
    box, m2 = g.ellipsoid(c2, np.array([rng.uniform(65, 85), 38, rng.uniform(40, 55)]),
                          _rot("z", 10))
    g.paint("liver", m2 & abdomen[box], box, only_on=("body", "bowel"))
    # caudate lobe near the IVC
    box, m3 = g.ellipsoid(np.array([-22, spine.front(z_top - 30) - 32, z_top - 30]),
                          np.array([16, 16, 30]))
    g.paint("liver", m3 & cav_below[box], box, only_on=("body",))
    # gallbladder under the right lobe (labelled liver, as TotalSegmentator's map does):
    # bile density in the image only
    gb = np.array([-48 + rng.uniform(-8, 8), -60 + rng.uniform(-8, 8), spine.mid("L1") + rng.uniform(-5, 15)])
    box, m4 = g.ellipsoid(gb, np.array([14.0, 16.0, 30.0]) * rng.uniform(0.8, 1.1), _rot("x", 30))
    g.paint("liver", m4 & abdomen[box], box, only_on=("body", "bowel", "liver"))
    g.hu_marks.append((box, m4, "liver", "bile"))
    # hepatic veins converging on the IVC at the top of the field (image only)
    ivc_top = np.array([-22.0, spine.front(z_top) - 35.0, z_top + 5.0])
    for end in ([-105, -10, z_top - 45], [-45, -75, z_top - 50], [25, -60, z_top - 25]):
        box, m5 = g.tube(_smooth_curve(np.array([ivc_top, 0.5 * (ivc_top + end) + [0, -5, 5], end]), 10),
                         np.array([6.0, 4.5, 3.0]))
        g.hu_marks.append((box, m5, "liver", "hepatic_vein"))


def _clear_retrorenal_liver(g: _Grid) -> None:
    """Below the right kidney's upper pole the kidney lies on the posterior abdominal wall
    (psoas, quadratus lumborum) with the liver in front of it (hepatorenal pouch); the
    liver's bare area meets the posterior wall only above the kidney. So on every slice
    holding the right kidney, liver behind the kidney's centre and medial to its lateral
    edge becomes retroperitoneal fat (``body``)."""
    kid = g.labels == label_of("kidney_right")
    liver = label_of("liver")
    for k in np.nonzero(kid.any(axis=(1, 2)))[0]:
        ys, xs = np.nonzero(kid[k])
        y_c, x_lat = float(g.y[ys].mean()), float(g.x[xs].min())
        behind = (g.y[:, None] > y_c) & (g.x[None, :] > x_lat)
        sl = g.labels[k]
        sl[behind & (sl == liver)] = label_of("body")


def _paint_spleen(g: _Grid, rng, spine: _Spine, allowed, scale: float = 1.0, wrap: float = 0.0) -> np.ndarray:
    """Left posterolateral crescent, ``scale`` times the mean length and height, reaching ``wrap``
    of the way along the wall (see :func:`_paint_spleen_along_wall`); returns the hilum point."""
    zc = spine.mid("T11") - rng.uniform(5, 25)
    c = np.array([rng.uniform(88, 100), spine.yc(zc) + rng.uniform(-5, 10), zc])
    rot = _rot("z", -rng.uniform(30, 45)) @ _rot("x", rng.uniform(-20, -5))
    axes = np.array([rng.uniform(20, 26), rng.uniform(48, 60), rng.uniform(45, 58)]) \
        * np.array([np.sqrt(scale), scale, scale])
    box, m = g.ellipsoid(c, axes, rot)
    inner = c - rot[:, 0] * axes[0] * 1.6
    X, Y, Z = g.coords(box)
    concave = ((X - inner[0]) ** 2 + (Y - inner[1]) ** 2) / (axes[0] * 1.3) ** 2 \
        + ((Z - inner[2]) / (axes[2] * 1.1)) ** 2 <= 1.0
    g.paint("spleen", m & ~concave & allowed[box], box, only_on=("body", "bowel", "stomach", "liver"))
    if wrap > 0:
        _paint_spleen_along_wall(g, spine, allowed, wrap, z_centre=zc, half_height=float(axes[2]),
                                 thickness=2.0 * float(axes[0]))
    return c - rot[:, 0] * axes[0] * 1.1 + np.array([0, 0, -5.0])


def _paint_spleen_along_wall(g: _Grid, spine: _Spine, allowed, wrap: float, z_centre: float,
                             half_height: float, thickness: float) -> None:
    """Spleen as a shell against the left wall of the space it may fill (``allowed``).

    Seen from the vertebral body's centre the shell runs from 25 degrees off the posterior
    direction (beside the paraspinal muscles) round to 25 + 95 * ``wrap`` degrees (1 = the
    anterolateral wall), ``thickness`` mm deep at ``z_centre`` and thinning to 0 at
    ``z_centre`` +/- ``half_height`` and at both ends, so its medial face is concave like the
    real organ's. Why: the real spleen lies against the ribs and reaches forward along the
    wall; a network that only saw a free crescent calls such a spleen body wall or bowel."""
    theta_lo, theta_hi, taper_deg = 25.0, 25.0 + 95.0 * wrap, 15.0
    zs = g.index_range(0, z_centre - half_height, z_centre + half_height)
    X, Y = g.x[None, :], g.y[:, None]
    for k in range(zs.start, zs.stop):
        z = float(g.z[k])
        depth_z = thickness * np.sqrt(max(0.0, 1.0 - ((z - z_centre) / half_height) ** 2))
        xc, yc = float(spine.xc(z)), float(spine.yc(z))
        theta = np.degrees(np.arctan2(X - xc, Y - yc))  # 0 = posterior, 90 = left lateral
        ends = np.clip(np.minimum(theta - theta_lo, theta_hi - theta) / taper_deg, 0.0, 1.0)
        depth = depth_z * np.sqrt(ends)
        lateral = X > xc + spine.w(z) / 2 + 10.0
        space = allowed[k]
        if depth_z <= 0 or not (space & lateral).any():
            continue
        d_wall = ndimage.distance_transform_edt(space, sampling=g.spacing[1:])
        shell = space & lateral & (d_wall <= depth) & (depth > 0)
        sl = (slice(k, k + 1), slice(0, g.shape[1]), slice(0, g.shape[2]))
        g.paint("spleen", shell[None], sl, only_on=("body", "bowel", "stomach", "liver"))


def _paint_tumour(g: _Grid, rng, fraction: float, cel_o, cel_b, cel_dir, body, z_c) -> None:
    """Hypodense pancreatic body mass plus a sleeve covering ``fraction`` of the trunk."""
    c = np.array([cel_b[0] + rng.uniform(-5, 5), 0.5 * (cel_b[1] + body[1]) - 4.0, z_c - 14.0])
    axes = np.array([rng.uniform(16, 22), rng.uniform(13, 17), rng.uniform(13, 18)]) * (0.8 + 0.4 * fraction)
    box, m = g.ellipsoid(c, axes)
    g.paint("tumour", m, box, only_on=("body", "pancreas", "bowel", "stomach", "liver"))
    start = cel_o + 2.0 * cel_dir
    end = cel_b + 4.0 * cel_dir
    lo = np.minimum(start, end) - 12
    hi = np.maximum(start, end) + 12
    box = g.box(lo, hi)
    X, Y, Z = g.coords(box)
    P = np.stack(np.broadcast_arrays(X, Y, Z), axis=-1).astype(float)
    d = (end - start) / np.linalg.norm(end - start)
    rel = P - start
    t = rel @ d
    u = rel - t[..., None] * d
    e1 = (c - start) - ((c - start) @ d) * d
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    phi = np.arctan2(u @ e2, u @ e1)
    rad = np.linalg.norm(u, axis=-1)
    sleeve = (t >= 0) & (t <= np.linalg.norm(end - start)) & (rad <= 3.6 + max(7.0, 1.2 * max(g.spacing))) \
        & (np.abs(phi) <= np.pi * fraction + 0.15)
    g.paint("tumour", sleeve, box, only_on=("body", "pancreas", "bowel", "stomach", "liver",
                                           "diaphragm_crura", "muscle"))


def _paint_back_muscles(g: _Grid, rng, spine: _Spine, torso: _Torso, cav, z_bot) -> None:
    """Erector spinae either side of the spinous processes; quadratus lumborum laterally."""
    def cx_off(z):
        return spine.canal_w / 2 + 8 + np.interp(z, [z_bot, spine.mid("L3"), spine.sup["T10"]],
                                                   [30, 26, 20])

    def ay(z):
        return np.interp(z, [z_bot, spine.mid("L3"), spine.sup["T10"]], [18, 28, 22])

    def ax(z):
        return np.interp(z, [z_bot, spine.mid("L3"), spine.sup["T10"]], [22, 28, 22])

    def cy(z):
        return spine.yc(z) + spine.d(z) / 2 + spine.canal_d + 12 + np.interp(z, [z_bot, spine.mid("L3"), spine.sup["T10"]], [14, 20, 16])

    z_hi = spine.sup["T10"] + 5
    for sgn in (1.0, -1.0):
        box, m = g.slice_ellipses(z_bot + 40, z_hi, lambda z: spine.xc(z) + sgn * cx_off(z), cy, ax, ay)
        g.paint("paraspinal_muscles", m & cav[box] | m & (g.labels[box] == label_of("muscle")), box,
                only_on=("body", "muscle", "lungs", "bowel", "liver", "spleen", "kidney_left",
                         "kidney_right"))
        # quadratus lumborum (other muscle) lateral to the transverse processes, L1-L4
        z_lo, z_hi = spine.mid("L5"), spine.sup["L1"]

        def taper(z, z_lo=z_lo, z_hi=z_hi):  # thin at the 12th rib and the iliac crest
            return 0.35 + 0.65 * np.sin(np.pi * np.clip((z - z_lo) / (z_hi - z_lo), 0, 1)) ** 0.5

        box, m = g.slice_ellipses(z_lo, z_hi,
                                  lambda z: spine.xc(z) + sgn * (spine.w(z) / 2 + 38),
                                  lambda z: spine.yc(z) + 22,
                                  lambda z: 14 * taper(z), lambda z: 10 * taper(z))
        g.paint("muscle", m, box, only_on=("body", "bowel"))


def _paint_psoas(g: _Grid, rng, spine: _Spine, z_bot) -> None:
    """Psoas from T12/L1 (small) growing to L4-L5, then anterolateral into the pelvis."""
    z0 = spine.inf["T12"] + rng.uniform(-4, 6)
    size = rng.uniform(0.9, 1.15)
    zs = [z_bot - 5, spine.inf["S1"], spine.mid("L5"), spine.mid("L4"), spine.mid("L2"), z0]
    rad = np.array([20, 20, 22, 21, 13, 3]) * size
    for sgn in (1.0, -1.0):
        dx = [48, 42, 14, 12, 8, 3]
        dy = [-38, -28, -8, -6, -2, 2]

        def cx(z):
            return spine.xc(z) + sgn * (spine.w(z) / 2 + np.interp(z, zs, dx) + np.interp(z, zs, rad) * 0.7)

        def cy(z):
            return spine.yc(z) + np.interp(z, zs, dy)

        box, m = g.slice_ellipses(z_bot - 5, z0, cx, cy, lambda z: 0.85 * np.interp(z, zs, rad),
                                  lambda z: np.interp(z, zs, rad))
        g.paint("psoas_muscles", m, box, only_on=("body", "bowel", "muscle", "kidney_left",
                                                 "kidney_right", "liver", "spleen"))


def _paint_crura(g: _Grid, rng, spine: _Spine, x_a, y_a, r_a, z_mal, z_c) -> None:
    """Left and right crus: bands lateral to the aorta joined in front at the arcuate
    ligament, attached to L1-L3 (right) / L1-L2 (left) bodies, separate from the T12 body
    by a retrocrural gap, merging into the diaphragm at T11."""
    z_top = spine.mid("T11")
    th = rng.uniform(4.5, 6.5)
    gap_t12 = rng.uniform(6.0, 9.0)
    for sgn, z_low in ((1.0, spine.mid("L2")), (-1.0, spine.mid("L3"))):
        zs = g.index_range(0, z_low, z_top)
        z = g.z[zs]
        if len(z) == 0:
            continue
        xa, ya, ra = x_a(z), y_a(z), r_a(z)
        xb, yb, w, d = spine.xc(z), spine.yc(z), spine.w(z), spine.d(z)
        # inner end: lateral (low) to anterolateral (high) on the aortic wall
        ang = np.deg2rad(np.interp(z, [z_low, z_mal, z_top], [95, 60, 40]))
        p1 = np.stack([xa + sgn * (ra + th / 2 + 0.8) * np.sin(ang),
                       ya - (ra + th / 2 + 0.8) * np.cos(ang)], axis=1)
        # outer end: anterolateral corner of the vertebral body, off the bone above L1
        gap = np.interp(z, [z_low, spine.sup["L1"] - 4, spine.mid("T12"), z_top],
                        [0.0, 0.0, gap_t12, gap_t12 + 4])
        cx = xb + sgn * (0.5 * w * 0.8 + gap * 0.7 + th / 2)
        cy = yb - 0.5 * d * 0.6 - gap * 0.7 - th / 2
        p2 = np.stack([cx, cy], axis=1)
        box = (zs, g.index_range(1, float(np.min(ya - ra - 20)), float(np.max(yb + 10))),
               g.index_range(2, float(np.min(np.minimum(xa, xb) - 60)), float(np.max(np.maximum(xa, xb) + 60))))
        X, Y, _ = g.coords(box)
        dist = _capsule_2d(X, Y, p1, p2)
        band = dist <= th / 2 + 0.0
        g.paint("diaphragm_crura", band, box, only_on=("body", "muscle", "lungs", "bowel", "liver",
                                                      "spleen", "stomach", "adrenal_glands",
                                                      "pancreas", "psoas_muscles"))
    # median arcuate ligament: an arc in front of the aorta just above the celiac origin
    zs = g.index_range(0, z_mal - 2.0, z_mal + 5.0)
    z = g.z[zs]
    if len(z):
        box = (zs, slice(0, g.shape[1]), slice(0, g.shape[2]))
        X, Y, _ = g.coords(box)
        xa, ya, ra = (v[:, None, None] for v in (x_a(z), y_a(z), r_a(z)))
        rr = np.hypot(X - xa, Y - ya)
        arc = (rr >= ra) & (rr <= ra + th) & (Y < ya)
        g.paint("diaphragm_crura", arc, box, only_on=("body", "muscle", "pancreas", "bowel",
                                                     "liver", "stomach"))


def _paint_ribs(g: _Grid, rng, spine: _Spine, torso: _Torso, upper: int = 0,
                upper_rng: np.random.Generator | None = None) -> None:
    """Ribs 10-12 both sides: from the costovertebral joint around the wall, descending.

    ``upper`` (0-3) adds ribs 9, 8 and 7 above them (drawn from ``upper_rng``), whose anterior
    thirds are costal cartilage sweeping down to the costal margin: the lower rib cage that
    surrounds the real upper abdomen at T11-T12 (the plain phantom draws ribs 10-12 only)."""
    for n, lev, theta_end, drop in ((10, "T10", 150.0, 105.0), (11, "T11", 118.0, 85.0),
                                    (12, "T12", 80.0, 55.0)):
        theta_end += rng.uniform(-10, 10)
        drop *= rng.uniform(0.85, 1.15)
        z0 = spine.mid(lev) + 0.3 * spine.height(lev)
        for sgn in (1.0, -1.0):
            box, m = g.tube(_smooth_curve(_rib_points(spine, torso, z0, theta_end, drop, sgn), 12), 5.0)
            g.paint("ribs", m, box)
    if upper <= 0:
        return
    rng_up = upper_rng if upper_rng is not None else rng
    step = spine.height("T10") + 5.0  # one vertebral body and disc per level above T10
    for n, theta_end, drop in ((9, 158.0, 118.0), (8, 165.0, 112.0), (7, 172.0, 100.0))[:upper]:
        theta_end += rng_up.uniform(-5, 5)
        drop *= rng_up.uniform(0.85, 1.15)
        z0 = spine.mid("T10") + (10 - n) * step + 0.3 * spine.height("T10")
        for sgn in (1.0, -1.0):
            pts = _rib_points(spine, torso, z0, theta_end, drop, sgn)
            box, m = g.tube(_smooth_curve(pts, 12), 5.0)
            g.paint("ribs", m, box)
            cartilage = _rib_points(spine, torso, z0, theta_end, drop, sgn, theta_from=120.0, joint=False)
            box, m = g.tube(_smooth_curve(cartilage, 8), 5.5)
            g.paint("ribs", m, box)
            g.hu_marks.append((box, m, "ribs", "cartilage"))


def _rib_points(spine: _Spine, torso: _Torso, z0: float, theta_end: float, drop: float, sgn: float,
                theta_from: float = 22.0, joint: bool = True) -> np.ndarray:
    """Control points of one rib from its head at ``z0`` round the cavity wall to ``theta_end``
    degrees (0 = posterior, 180 = anterior), ``drop`` mm lower at the end; ``theta_from`` and
    ``joint=False`` give only the part beyond ``theta_from`` (the costal cartilage)."""
    th_all = np.deg2rad(np.linspace(22.0, theta_end, 40))
    z_all = z0 - drop * ((th_all - th_all[0]) / (th_all[-1] - th_all[0])) ** 1.3
    keep = th_all >= np.deg2rad(theta_from)
    th, z = th_all[keep], z_all[keep]
    a, bant, bpost = torso.dims(z, "cavity")
    b = np.where(th < np.pi / 2, bpost, bant)
    curve = np.stack([sgn * (a + 4.0) * np.sin(th), (b + 3.0) * np.cos(th), z], axis=1)
    if not joint:
        return curve[::3] if len(curve) > 8 else curve
    head = np.array([spine.xc(z0) + sgn * (spine.w(z0) / 2 + 2), spine.yc(z0) + spine.d(z0) * 0.35, z0 + 3])
    neck = np.array([spine.xc(z0) + sgn * (spine.w(z0) / 2 + 22),
                     spine.yc(z0) + spine.d(z0) / 2 + spine.canal_d + 4, z0 + 1])
    pts = np.vstack([head, neck, curve[2:]])
    return pts[::3] if len(pts) > 8 else pts


def _paint_pelvis(g: _Grid, rng, spine: _Spine, torso: _Torso, z_bot: float) -> None:
    """Sacrum (S1 and below) with alae, and iliac wings (other bone) to the crests."""
    z_s1 = spine.sup["S1"]
    zs = g.index_range(0, z_bot - 5, z_s1)
    z = g.z[zs]
    if len(z) == 0:
        return
    box = (zs, slice(0, g.shape[1]), slice(0, g.shape[2]))
    X, Y, _ = g.coords(box)
    xc, yc = spine.xc(z)[:, None, None], spine.yc(z)[:, None, None]
    depth = np.interp(z, [z_bot, z_s1], [20, 34])[:, None, None]
    wid = np.interp(z, [z_bot, z_s1 - 25, z_s1], [70, 105, 100])[:, None, None] / 2
    body_w = np.interp(z, [z_bot, z_s1], [28, 50])[:, None, None] / 2
    central = (((X - xc) / body_w) ** 2 + ((Y - yc) / (depth / 2)) ** 2) <= 1
    rel = np.clip(np.abs(X - xc) / wid, 0, 1)
    alae = (np.abs(X - xc) <= wid) & (np.abs(Y - yc - 2 + 6 * rel) <= depth / 2 * (0.85 - 0.35 * rel ** 2))
    canal = (((X - xc) / 8.0) ** 2 + ((Y - (yc + depth / 2 + 6)) / 5.0) ** 2) <= 1
    crest = (np.abs(X - xc) <= 7) & (Y > yc) & (Y <= yc + depth / 2 + 18)
    g.paint("sacrum", central | alae | crest, box, only_on=_INNER_SOFT)
    g.paint("spinal_canal", canal & (np.asarray(z)[:, None, None] > z_bot + 15), box)
    # iliac wings: curved plates from the SI joints to the crest (about L4-L5)
    z_crest = spine.mid("L4") - rng.uniform(0, 12)
    zs = g.index_range(0, z_bot - 5, z_crest)
    z = g.z[zs]
    if len(z) == 0:
        return
    z_half = 0.5 * (z_bot + z_s1)
    for sgn in (1.0, -1.0):
        t = np.clip((z_crest - z) / (z_crest - z_bot), 0, 1)
        a_cav = torso.dims(z, "cavity")[0]
        xs, ys = spine.xc(z), spine.yc(z)
        sac = np.interp(z, [z_bot, z_s1 - 25, z_s1], [35, 52, 50])
        # curved wing: posterior iliac spine -> SI joint -> posterolateral -> anterior spine
        ctrl = [np.stack([xs + sgn * (sac + 10), ys + 34], axis=1),
                np.stack([xs + sgn * (sac + 5), ys + 6], axis=1),
                np.stack([sgn * (a_cav + 2 - 12 * t), ys - 20], axis=1),
                np.stack([sgn * (a_cav - 26 - 14 * t), ys - 88 + 10 * t], axis=1)]
        bez = [ctrl[1]]
        for u in np.linspace(0.2, 1.0, 5):  # quadratic Bezier SI -> lateral control -> ASIS
            bez.append((1 - u) ** 2 * ctrl[1] + 2 * u * (1 - u) * ctrl[2] + u ** 2 * ctrl[3])
        poly = [ctrl[0]] + bez
        x_lo = min(0.0, float(np.min(sgn * a_cav))) if sgn < 0 else 0.0
        x_hi = 0.0 if sgn < 0 else float(np.max(a_cav))
        box = (zs, g.index_range(1, float(np.min(ys)) - 120, float(np.max(ys)) + 60),
               g.index_range(2, x_lo - 5, x_hi + 5))
        X, Y, _ = g.coords(box)
        dist = np.full((len(z),) + (box[1].stop - box[1].start, box[2].stop - box[2].start), np.inf,
                       np.float32)
        # the crest is highest over the middle of the wing, lower at both iliac spines
        n_seg = len(poly) - 1
        zz = z[:, None, None]
        for i, (p1, p2) in enumerate(zip(poly[:-1], poly[1:])):
            u = (i + 0.5) / n_seg
            crest_i = z_crest - 28.0 * (2.0 * u - 1.0) ** 2
            dist = np.minimum(dist, np.where(zz <= crest_i, _capsule_2d(X, Y, p1, p2), np.inf))
        thick = np.interp(z, [z_bot, z_half, z_crest], [12, 10, 7])[:, None, None]
        plate = dist <= thick / 2
        g.paint("bone_other", plate, box, only_on=_INNER_SOFT)
        # gluteal muscles outside and iliacus inside the wing (both "other muscle")
        g.paint("muscle", (dist <= thick / 2 + 16) & ~plate, box, only_on=("body", "bowel"))


def _paint_vertebrae(g: _Grid, spine: _Spine, z_bot: float, z_top: float, z_conus: float) -> None:
    """Bodies, discs, posterior elements (pedicles, laminae, spinous and transverse
    processes), canal and cord, T10-L5 (the sacrum is painted by the pelvis)."""
    zs = g.index_range(0, spine.sup["S1"] - 2, z_top + 5)
    z = g.z[zs]
    ycs = spine.yc(z)
    box = (zs, g.index_range(1, float(ycs.min()) - 40, float(ycs.max()) + 90),
           g.index_range(2, float(spine.xc(z).min()) - 80, float(spine.xc(z).max()) + 80))
    X, Y, _ = g.coords(box)
    zz = z[:, None, None]
    xc, yc = spine.xc(z)[:, None, None], spine.yc(z)[:, None, None]
    w, d = spine.w(z)[:, None, None], spine.d(z)[:, None, None]
    cw, cd = spine.canal_w, spine.canal_d
    body = ((((X - xc) / (w / 2)) ** 2 + ((Y - yc) / (d / 2)) ** 2) <= 1) & (Y < yc + 0.42 * d)
    canal_y = yc + d / 2 + cd / 2 - 1
    canal = (((X - xc) / (cw / 2)) ** 2 + ((Y - canal_y) / (cd / 2)) ** 2) <= 1
    out = np.zeros(body.shape, np.uint8)
    levels = list(_LUMBAR)
    for i, lev in enumerate(levels):
        zsup, zinf, h = spine.sup[lev], spine.inf[lev], spine.height(lev)
        lab = label_of(vertebra_name(lev))
        in_body = (zz <= zsup) & (zz >= zinf)
        out[body & in_body] = lab
        # posterior elements: shifted caudally; spinous tip further down in the thorax
        thoracic = lev.startswith("T")
        pe_lo, pe_hi = zinf - 0.35 * h, zsup - 0.1 * h
        in_pe = (zz <= pe_hi) & (zz >= pe_lo)
        dxa = np.abs(X - xc)
        pedicle = (dxa >= cw / 2 - 1) & (dxa <= cw / 2 + 7) & (Y >= yc + 0.3 * d) & \
            (Y <= canal_y + 2) & (zz >= zinf + 0.35 * h) & (zz <= zsup - 0.05 * h)
        lam_y = canal_y + cd / 2  # back of the canal
        lamina = (dxa <= cw / 2 + 9) & (Y >= canal_y + cd / 2 - 4 + 0.2 * dxa - 2) & \
            (Y <= canal_y + cd / 2 + 5 + 0.2 * dxa) & in_pe
        facet = (dxa >= cw / 2 + 1) & (dxa <= cw / 2 + 11) & (Y >= canal_y - 2) & \
            (Y <= canal_y + cd / 2 + 4) & (zz <= zsup + 4) & (zz >= pe_lo)
        # spinous process: slopes caudally (steeply in the thorax), tapering to its tip
        sp_len = 32.0 if thoracic else 30.0
        slope = 0.9 if thoracic else 0.15
        along = np.clip(Y - lam_y, 0, None)
        sp_mid = zinf + 0.3 * h - slope * along
        sp_half = 0.3 * h * (1.0 - 0.35 * along / sp_len)
        spinous = (dxa <= 3.5) & (Y >= lam_y - 2) & (Y <= lam_y + sp_len) & \
            (np.abs(zz - sp_mid) <= sp_half)
        tp_len = _TP_LENGTH[lev]
        tp = (dxa >= cw / 2 + 3) & (dxa <= cw / 2 + 7 + tp_len) & \
            (np.abs(Y - (canal_y + (6 if thoracic else 0) + 0.15 * (dxa - cw / 2) * thoracic)) <= 4.5) & \
            (zz >= zinf + 0.3 * h) & (zz <= zsup - 0.15 * h)
        pe = (pedicle | lamina | facet | spinous | tp) & ~canal & (out == 0)
        out[pe] = lab
        if i + 1 < len(levels) or lev == "L5":
            nxt = "S1" if lev == "L5" else levels[i + 1]
            disc_lab = label_of(f"disc_{lev}_{nxt}")
            in_disc = (zz < zinf) & (zz > spine.sup[nxt])
            out[body & in_disc & (out == 0)] = disc_lab
    sub = g.labels[box]
    sub[out > 0] = out[out > 0]
    sub[canal & (zz <= z_top + 5)] = label_of("spinal_canal")
    cord = (((X - xc) / 5.0) ** 2 + ((Y - (canal_y - 1)) / 4.2) ** 2) <= 1
    sub[cord & (zz >= z_conus)] = label_of("spinal_cord")


# ============================================================================ image
def _paint_aortic_wall(hu: np.ndarray, lab: np.ndarray, spacing: tuple[float, float, float], wall_mm: float,
                       rng: np.random.Generator) -> None:
    """Darken the outer ``wall_mm`` of the aorta to wall HU (in place), calcified in patches.

    Depth is the distance to the edge of the whole arterial tree, so the ostia of its branches stay
    open; a boundary voxel gets the wall's share of its width (partial volume on coarse grids).
    """
    aorta = lab == label_of("aorta")
    if not aorta.any():
        return
    (found,) = ndimage.find_objects(aorta.astype(np.uint8))
    box = tuple(slice(max(sl.start - 2, 0), sl.stop + 2) for sl in found)
    arteries = np.isin(lab[box], [label_of(n) for n in ARTERIES])
    depth = ndimage.distance_transform_edt(arteries, sampling=spacing)
    voxel = float(np.mean(spacing))
    share = np.clip((wall_mm - depth + voxel) / voxel, 0.0, 1.0) * aorta[box]
    field = ndimage.gaussian_filter(rng.standard_normal(share.shape).astype(np.float32),
                                    sigma=[6.0 / s for s in spacing])
    field /= max(float(field.std()), 1e-6)
    plaque = (share > 0) & (field > rng.uniform(0.3, 2.0))  # about 2 % to 40 % of the wall
    wall_hu = np.where(plaque, rng.uniform(*PLAQUE_HU), AORTIC_WALL_HU).astype(np.float32)
    hu[box] = hu[box] * (1.0 - share) + wall_hu * share


def _render_hu(g: _Grid, rng, params: PhantomParams, stomach_gas: np.ndarray) -> np.ndarray:
    """Labels -> HU: tissue means, texture, cortical rims, gas, blur (partial volume), noise."""
    lab = g.labels
    lut = np.full(256, AIR_HU, np.float32)
    tex = np.zeros(256, np.float32)
    for name, (mu, sd) in TISSUE_HU.items():
        lut[label_of(name)] = mu
        tex[label_of(name)] = sd
    for lev in VERTEBRAL_LEVELS[:-1]:
        lut[label_of(vertebra_name(lev))] = VERTEBRA_CANCELLOUS_HU
        tex[label_of(vertebra_name(lev))] = 20.0
    for lev_a, lev_b in zip(VERTEBRAL_LEVELS[:-1], VERTEBRAL_LEVELS[1:]):
        lut[label_of(f"disc_{lev_a}_{lev_b}")] = DISC_HU
        tex[label_of(f"disc_{lev_a}_{lev_b}")] = 5.0
    hu = lut[lab]
    field_rng = np.random.default_rng([int(params.seed), 7])
    smooth = ndimage.gaussian_filter(field_rng.standard_normal(g.shape).astype(np.float32),
                                     sigma=[4.0 / s for s in g.spacing])
    smooth /= max(float(smooth.std()), 1e-6)
    hu += tex[lab] * smooth
    if params.aortic_wall_mm > 0:
        wall_rng = np.random.default_rng([int(params.seed), 41])
        _paint_aortic_wall(hu, lab, g.spacing, float(params.aortic_wall_mm), wall_rng)
    # cortical rims on bone; kidney medulla; hollow-organ walls; bowel gas
    bone = np.isin(lab, [label_of(vertebra_name(v)) for v in VERTEBRAL_LEVELS] +
                   [label_of("ribs"), label_of("bone_other")])
    rim = bone & ~ndimage.binary_erosion(bone)
    hu[rim] = CORTICAL_HU
    for side in ("left", "right"):
        k = lab == label_of(f"kidney_{side}")
        inner = ndimage.binary_erosion(k, iterations=max(1, int(round(6.0 / max(g.spacing)))))
        hu[inner] = KIDNEY_MEDULLA_HU
    colon = np.zeros(g.shape, bool)
    for box, mask, name, kind in g.hu_marks:
        sel = mask & (lab[box] == label_of(name))
        sub = hu[box]
        if kind == "bile":
            sub[sel] = BILE_HU + 4.0 * smooth[box][sel]
        elif kind == "hepatic_vein":
            sub[sel] = HEPATIC_VEIN_HU + 5.0 * smooth[box][sel]
        elif kind == "food":
            sub[sel] = FOOD_HU + 45.0 * smooth[box][sel]  # mixed meal: fat, water, protein
        elif kind == "cartilage":
            sub[sel] = COSTAL_CARTILAGE_HU + 30.0 * smooth[box][sel]  # patchy calcification
        elif kind == "stool":
            sub[sel] = STOOL_HU + 45.0 * smooth[box][sel]  # mottled faeces
            colon[box] |= sel
    hollow = np.isin(lab, [label_of("bowel"), label_of("stomach")])
    wall = hollow & ~ndimage.binary_erosion(hollow)
    hu[wall] = ORGAN_WALL_HU
    bowel = lab == label_of("bowel")
    gas_field = ndimage.gaussian_filter(field_rng.standard_normal(g.shape).astype(np.float32),
                                        sigma=[8.0 / s for s in g.spacing])
    gas_field /= max(float(gas_field.std()), 1e-6)
    gas = bowel & ~wall & ((gas_field > 1.0) | (colon & (gas_field > 0.3)))
    hu[gas | (stomach_gas & (lab == label_of("stomach")))] = GAS_HU
    # partial volume and scanner PSF: voxel box (s/sqrt(12)) plus ~0.8 mm PSF
    sig = [np.hypot(s / np.sqrt(12.0), 0.8) / s for s in g.spacing]
    hu = ndimage.gaussian_filter(hu, sigma=sig)
    noise_sd = params.noise_hu if params.noise_hu is not None else rng.uniform(10.0, 15.0)
    noise = ndimage.gaussian_filter(field_rng.standard_normal(g.shape).astype(np.float32), 0.5)
    noise *= float(noise_sd) / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

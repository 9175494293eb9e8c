"""Target regions derived from a label map by explicit anatomical rules (never hand-placed).

The same functions run on phantom label maps and on real segmentations (TotalSegmentator
style maps mapped with :func:`planner.anatomy.external_label_mapping`), so they use only
structures such maps contain: the aorta, and the celiac trunk / SMA or the vertebrae.

"Free soft tissue" is a voxel labelled ``body`` or unlabelled (0): real segmentations
leave fat, nerves and small vessels unlabelled. Voxels already painted with a target label
count as free too, so deriving again on a painted map gives the same regions. Every rule
keeps only free voxels, so a target never overlaps a vessel, organ, bone, muscle or tumour.

Rules (distances in mm, levels are patient z, LPS: y grows posteriorly):

* **celiac_plexus_region** - free tissue within :data:`CELIAC_MAX_DISTANCE_MM` of the aortic
  wall, on its anterior or lateral side (seen from the aortic centre of the slice, at most
  :data:`CELIAC_MAX_ANGLE_DEG` from straight anterior), between the levels of the celiac
  trunk origin and the SMA origin (each origin = centroid of the largest patch of branch
  voxels touching the aorta). Without an SMA label the band runs :data:`CELIAC_NO_SMA_SPAN_MM` caudal to the
  celiac origin. Without a celiac trunk label the band is the T12-L1 disc down to mid-L1,
  from the vertebrae.
* **superior_hypogastric_plexus_region** - free tissue up to :data:`SHP_DEPTH_MM` anterior to
  the front of the spine (L5 body, L5-S1 disc, sacrum), from the aortic bifurcation (or
  mid-L5 if the bifurcation is higher) down to :data:`SHP_SACRUM_MM` below the S1 upper
  endplate, between the centres of the left and right iliac arteries and within
  :data:`SHP_HALF_WIDTH_MM` of the midline of the spine.
* **splanchnic_nerve_zone** - the retrocrural space from the T12 body past the T12-L1 disc
  to the upper part of the L1 body (down to :data:`L1_RETROCRURAL_FRACTION` of its height),
  where the crura attach: the classic retrocrural celiac needle is planned at L1 and
  stops anterolateral to the T12-L1 bodies (Korean J Pain 2015;28:109; the plexus itself
  lies from the T12-L1 disc to L2). On each slice: free tissue on either side
  anterolateral to that slice's vertebral body or disc (:data:`SPLANCHNIC_ANGLES_DEG` from
  anterior, seen from its centre) and retrocrural: nearer the body than the diaphragmatic
  crus along the same direction, or, where no crus is labelled in that direction, within
  :data:`SPLANCHNIC_NO_CRUS_MM` of the vertebral body.

When masks overlap, the earlier rule in :data:`TARGET_NAMES` keeps the voxel, so the
masks are disjoint and equal to what :func:`add_targets` paints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from scipy import ndimage

from planner.anatomy import STRUCTURES, label_of, vertebra_name
from planner.errors import LabelMapError
from planner.volume import Volume

TARGET_NAMES: tuple[str, ...] = (
    "celiac_plexus_region",
    "superior_hypogastric_plexus_region",
    "splanchnic_nerve_zone",
)
CELIAC_MAX_DISTANCE_MM = 12.0
CELIAC_MAX_ANGLE_DEG = 95.0
CELIAC_NO_SMA_SPAN_MM = 15.0
SHP_DEPTH_MM = 20.0
SHP_SACRUM_MM = 10.0
SHP_HALF_WIDTH_MM = 25.0
SPLANCHNIC_ANGLES_DEG = (25.0, 95.0)
SPLANCHNIC_MAX_MM = 12.0
SPLANCHNIC_NO_CRUS_MM = 8.0
#: the retrocrural zone reaches this fraction of the L1 body height down from its upper endplate
L1_RETROCRURAL_FRACTION = 0.5
#: a vertebral body is the part of the vertebra label this far behind its front surface
BODY_DEPTH_MM = 20.0
BODY_HALF_WIDTH_MM = 30.0
#: assumed T12-L1 disc height when only its neighbours' endplates bound it
DISC_HALF_MM = 4.0


@dataclass(frozen=True)
class TargetRegions:
    """Masks of the derived targets and what they were derived from.

    Attributes:
        masks: ``{target name: bool [z, y, x] mask}`` for every derivable target.
        landmarks: LPS mm points used (``celiac_origin``, ``sma_origin``,
            ``aortic_bifurcation``, ``T12_centre``...).
        z_ranges: ``{target name: (z_low, z_high)}`` patient z band (mm) each rule used.
        messages: ``{target name: reason}`` for every requested target not derived.
        notes: remarks on targets that were derived from partial inputs.
    """

    masks: dict[str, np.ndarray]
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    z_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.masks)


def _free_labels() -> list[int]:
    """Labels a target may occupy: unlabelled, ``body``, and already painted targets (so
    deriving again on a painted map gives the same regions)."""
    return [0, label_of("body")] + [label_of(n) for n in TARGET_NAMES]


def _free_mask(arr: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(int(arr.max(initial=0)), max(_free_labels())) + 1, dtype=bool)
    lut[_free_labels()] = True
    return lut[arr]


# ============================================================================ geometry
class _Axial:
    """Per-axis patient coordinates of an axis-aligned axial label grid."""

    def __init__(self, labels: Volume) -> None:
        d = np.asarray(labels.direction, dtype=float)
        if not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
            raise LabelMapError(
                "target rules need an axis-aligned axial label map (direction a signed "
                f"identity), got direction {np.round(d, 3).tolist()}; resample the labels first")
        arr = np.asarray(labels.array)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr, 1) == 0):
                raise LabelMapError(f"a label map must hold integer labels, got dtype {arr.dtype}")
            arr = arr.astype(np.int32)
        self.arr = arr
        known = {s.label for s in STRUCTURES} | {0}
        present = np.unique(self.arr)
        unknown = sorted(int(v) for v in present if int(v) not in known)
        if unknown:
            raise LabelMapError(
                f"label map has values {unknown[:10]} outside the vocabulary; map other tools' "
                "labels with planner.anatomy.external_label_mapping first")
        self.present = {int(v) for v in present}
        nz, ny, nx = self.arr.shape
        o = labels.origin
        sz, sy, sx = labels.spacing
        self.x = o[0] + d[0, 0] * sx * np.arange(nx)
        self.y = o[1] + d[1, 1] * sy * np.arange(ny)
        self.z = o[2] + d[2, 2] * sz * np.arange(nz)
        self.spacing = (sz, sy, sx)
        self._free: np.ndarray | None = None

    def has(self, name: str) -> bool:
        return label_of(name) in self.present

    def mask(self, name: str) -> np.ndarray:
        return self.arr == label_of(name)

    def free(self) -> np.ndarray:
        """Free soft tissue (computed once, by table look-up: fast on large maps)."""
        if self._free is None:
            self._free = _free_mask(self.arr)
        return self._free

    def lps(self, idx: np.ndarray) -> np.ndarray:
        """(N, 3) integer [z, y, x] indices -> (N, 3) LPS mm."""
        idx = np.asarray(idx, dtype=int)
        return np.stack([self.x[idx[:, 2]], self.y[idx[:, 1]], self.z[idx[:, 0]]], axis=1)

    def z_slices(self, z_lo: float, z_hi: float) -> np.ndarray:
        return np.where((self.z >= z_lo) & (self.z <= z_hi))[0]

    @property
    def half_slice(self) -> float:
        return 0.5 * self.spacing[0]


def _z_extent(ax: _Axial, mask: np.ndarray) -> tuple[float, float, bool, bool]:
    """(z_low, z_high, low end truncated by the field, high end truncated)."""
    zi = np.where(mask.any(axis=(1, 2)))[0]
    lo, hi = ax.z[zi].min(), ax.z[zi].max()
    k_lo, k_hi = (0, len(ax.z) - 1) if ax.z[-1] > ax.z[0] else (len(ax.z) - 1, 0)
    return float(lo), float(hi), bool(mask[k_lo].any()), bool(mask[k_hi].any())


def _vertebral_body(ax: _Axial, level: str) -> np.ndarray | None:
    """Body part of a vertebra label: within BODY_DEPTH_MM of its front, near its midline."""
    name = vertebra_name(level)
    if not ax.has(name):
        return None
    m = ax.mask(name)
    idx = _indices(m)
    pts = ax.lps(idx)
    front = np.percentile(pts[:, 1], 1.0)
    xmid = np.median(pts[pts[:, 1] <= front + BODY_DEPTH_MM, 0])
    keep = (pts[:, 1] <= front + BODY_DEPTH_MM) & (np.abs(pts[:, 0] - xmid) <= BODY_HALF_WIDTH_MM)
    body = np.zeros_like(m)
    body[tuple(idx[keep].T)] = True
    return body


def _branch_origin(ax: _Axial, branch: str, aorta: np.ndarray) -> np.ndarray:
    """LPS centroid of the branch voxels touching the aorta (the largest touching patch,
    so a distal branch grazing the aorta does not move the origin), else of the branch
    voxels nearest to the aorta."""
    b = ax.mask(branch)
    crop = _crop(b, (1, 1, 1))  # only the branch's neighbourhood can touch it
    offset = np.array([c.start for c in crop])
    touch = b[crop] & ndimage.binary_dilation(aorta[crop], structure=np.ones((3, 3, 3), bool))
    if touch.any():
        comp, n = ndimage.label(touch, structure=np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            touch = comp == (int(np.argmax(sizes)) + 1)
        return ax.lps(np.argwhere(touch) + offset).mean(axis=0)
    idx = _indices(b)
    a_pts = ax.lps(_indices(aorta))
    b_pts = ax.lps(idx)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(a_pts).query(b_pts)
    near = b_pts[d <= d.min() + max(ax.spacing)]
    return near.mean(axis=0)


def _crop(mask: np.ndarray, margin: tuple[int, int, int] = (0, 0, 0)) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask grown by ``margin`` voxels (projections, no
    index arrays: cheap on large maps)."""
    out = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        lo = max(int(hit[0]) - margin[axis], 0)
        hi = min(int(hit[-1]) + margin[axis] + 1, mask.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)


def _indices(mask: np.ndarray) -> np.ndarray:
    """(N, 3) [z, y, x] indices of a mask, found inside its bounding box."""
    if not mask.any():
        return np.zeros((0, 3), dtype=int)
    box = _crop(mask)
    return np.argwhere(mask[box]) + np.array([b.start for b in box])


# ============================================================================ rules
def _t12_l1_disc_z(ax: _Axial) -> tuple[float | None, str]:
    """z of the T12-L1 disc centre, or None with the reason."""
    if ax.has("disc_T12_L1"):
        zi = np.where(ax.mask("disc_T12_L1").any(axis=(1, 2)))[0]
        return float(ax.z[zi].mean()), ""
    t12 = _vertebral_body(ax, "T12")
    l1 = _vertebral_body(ax, "L1")
    if t12 is not None and l1 is not None:
        t_lo, _, t_lo_cut, _ = _z_extent(ax, t12)
        _, l_hi, _, l_hi_cut = _z_extent(ax, l1)
        if not t_lo_cut and not l_hi_cut:
            return 0.5 * (t_lo + l_hi), ""
    if t12 is not None:
        t_lo, _, t_lo_cut, _ = _z_extent(ax, t12)
        if not t_lo_cut:
            return t_lo - DISC_HALF_MM, ""
        return None, "the T12 body reaches the lower edge of the field, so the T12-L1 disc is not in view"
    if l1 is not None:
        _, l_hi, _, l_hi_cut = _z_extent(ax, l1)
        if not l_hi_cut:
            return l_hi + DISC_HALF_MM, ""
        return None, "the L1 body reaches the upper edge of the field, so the T12-L1 disc is not in view"
    return None, "neither a T12-L1 disc nor T12 / L1 vertebrae are labelled"


def _celiac(ax: _Axial, out: TargetRegions) -> np.ndarray:
    name = "celiac_plexus_region"
    if not ax.has("aorta"):
        raise LabelMapError(f"{name}: the label map has no aorta")
    aorta = ax.mask("aorta")
    if ax.has("celiac_trunk"):
        c_org = _branch_origin(ax, "celiac_trunk", aorta)
        out.landmarks["celiac_origin"] = tuple(float(v) for v in c_org)
        z_hi = float(c_org[2])
        if ax.has("superior_mesenteric_artery"):
            s_org = _branch_origin(ax, "superior_mesenteric_artery", aorta)
            out.landmarks["sma_origin"] = tuple(float(v) for v in s_org)
            z_lo = float(s_org[2])
            if z_lo > z_hi:
                out.notes[name] = "the SMA origin lies above the celiac origin; band taken between them"
                z_lo, z_hi = z_hi, z_lo
        else:
            z_lo = z_hi - CELIAC_NO_SMA_SPAN_MM
            out.notes[name] = (f"no SMA label: band runs {CELIAC_NO_SMA_SPAN_MM:g} mm below the "
                               "celiac origin")
    else:
        z_disc, why = _t12_l1_disc_z(ax)
        if z_disc is None:
            raise LabelMapError(f"{name}: no celiac trunk label and no vertebral fallback: {why}")
        l1 = _vertebral_body(ax, "L1")
        if l1 is None:
            raise LabelMapError(f"{name}: no celiac trunk label and no L1 vertebra to find mid-L1")
        l_lo, l_hi, lo_cut, hi_cut = _z_extent(ax, l1)
        if lo_cut:
            raise LabelMapError(f"{name}: no celiac trunk label and the L1 body is cut by the "
                                "lower edge of the field (mid-L1 unknown)")
        z_hi, z_lo = z_disc, 0.5 * (l_lo + l_hi)
        out.notes[name] = "no celiac trunk label: band from the T12-L1 disc to mid-L1 (vertebrae)"
    tol = ax.half_slice
    zsel = ax.z_slices(z_lo - tol, z_hi + tol)
    if len(zsel) == 0:
        raise LabelMapError(f"{name}: the band z {z_lo:.1f}..{z_hi:.1f} mm lies outside the field")
    band = np.zeros(aorta.shape, bool)
    band[zsel] = True
    if not (aorta & band).any():
        raise LabelMapError(f"{name}: no aorta in the band z {z_lo:.1f}..{z_hi:.1f} mm")
    out.z_ranges[name] = (z_lo, z_hi)
    # distance to the aortic wall (3D, in a crop around the band) ...
    margin = tuple(int(np.ceil(CELIAC_MAX_DISTANCE_MM / s)) + 2 for s in ax.spacing)
    in_band = np.zeros(aorta.shape, bool)
    in_band[zsel] = aorta[zsel]
    crop = _crop(in_band, margin)
    dist = ndimage.distance_transform_edt(~aorta[crop], sampling=ax.spacing)
    near = np.zeros(aorta.shape, bool)
    near[crop] = (dist > 0) & (dist <= CELIAC_MAX_DISTANCE_MM) & ax.free()[crop]
    # ... and the direction from the aortic centre of each slice (0 = straight anterior)
    mask = np.zeros(aorta.shape, bool)
    X, Y = ax.x[None, :], ax.y[:, None]
    max_angle = np.deg2rad(CELIAC_MAX_ANGLE_DEG)
    for k in zsel:
        ys, xs = np.nonzero(aorta[k])
        if len(ys) == 0:
            continue
        xa, ya = ax.x[xs].mean(), ax.y[ys].mean()
        mask[k] = near[k] & (np.arctan2(np.abs(X - xa), -(Y - ya)) <= max_angle)
    return mask


def _spine_front(ax: _Axial, spine: np.ndarray, k: int, x_mid: float, half_w: float) -> float | None:
    ys, xs = np.nonzero(spine[k])
    if len(ys) == 0:
        return None
    near = np.abs(ax.x[xs] - x_mid) <= half_w
    if not near.any():
        return None
    return float(ax.y[ys[near]].min())


def _shp(ax: _Axial, out: TargetRegions) -> np.ndarray:
    name = "superior_hypogastric_plexus_region"
    if not ax.has("aorta"):
        raise LabelMapError(f"{name}: the label map has no aorta")
    parts = [n for n in (vertebra_name("L5"), "disc_L5_S1", "sacrum") if ax.has(n)]
    if not parts:
        raise LabelMapError(f"{name}: no L5 vertebra, L5-S1 disc or sacrum is labelled")
    aorta = ax.mask("aorta")
    a_lo, _, a_lo_cut, _ = _z_extent(ax, aorta)
    if a_lo_cut:
        raise LabelMapError(f"{name}: the aorta reaches the lower edge of the field, so the "
                            "aortic bifurcation is not in view")
    k_bif = int(np.argmin(np.where(aorta.any(axis=(1, 2)), ax.z, np.inf)))
    bif_pts = ax.lps(np.argwhere(aorta[k_bif:k_bif + 1]) + [k_bif, 0, 0])
    bif = bif_pts.mean(axis=0)
    out.landmarks["aortic_bifurcation"] = tuple(float(v) for v in bif)
    z_top = float(bif[2])
    l5 = _vertebral_body(ax, "L5")
    if l5 is not None:
        l5_lo, l5_hi, _, _ = _z_extent(ax, l5)
        z_top = min(z_top, 0.5 * (l5_lo + l5_hi))
    if ax.has("sacrum"):
        _, s_hi, _, s_hi_cut = _z_extent(ax, ax.mask("sacrum"))
        if s_hi_cut:
            raise LabelMapError(f"{name}: the sacrum reaches the upper edge of the field")
        z_s1 = s_hi
    elif ax.has("disc_L5_S1"):
        z_s1 = _z_extent(ax, ax.mask("disc_L5_S1"))[0]
    else:
        z_s1 = _z_extent(ax, l5)[0] - 2 * DISC_HALF_MM  # type: ignore[arg-type]
        out.notes[name] = "no sacrum or L5-S1 disc: S1 endplate assumed one disc below L5"
    z_bot = z_s1 - SHP_SACRUM_MM
    if z_top < z_bot:
        raise LabelMapError(f"{name}: the aortic bifurcation (z {bif[2]:.1f} mm) lies below the "
                            f"upper sacrum (z {z_bot:.1f} mm)")
    out.z_ranges[name] = (z_bot, z_top)
    spine = np.zeros(aorta.shape, bool)
    for n in parts:
        spine |= ax.mask(n)
    spine_x = float(np.median(ax.lps(_indices(spine))[:, 0]))
    iliac = ax.mask("iliac_arteries") if ax.has("iliac_arteries") else np.zeros_like(aorta)
    free = ax.free()
    mask = np.zeros(aorta.shape, bool)
    X = ax.x[None, :]
    Y = ax.y[:, None]
    for k in ax.z_slices(z_bot - ax.half_slice, z_top + ax.half_slice):
        front = _spine_front(ax, spine, k, spine_x, 20.0)
        if front is None:
            continue
        lo_x, hi_x = spine_x - SHP_HALF_WIDTH_MM, spine_x + SHP_HALF_WIDTH_MM
        ys, xs = np.nonzero(iliac[k])
        if len(xs):
            xv = ax.x[xs]
            right, left = xv[xv < spine_x], xv[xv >= spine_x]
            if len(right):
                lo_x = max(lo_x, float(right.mean()))
            if len(left):
                hi_x = min(hi_x, float(left.mean()))
        sl = (Y < front) & (Y >= front - SHP_DEPTH_MM) & (X > lo_x) & (X < hi_x)
        mask[k] = sl & free[k]
    return mask


def _splanchnic(ax: _Axial, out: TargetRegions) -> np.ndarray:
    name = "splanchnic_nerve_zone"
    t12 = _vertebral_body(ax, "T12")
    if t12 is None:
        raise LabelMapError(f"{name}: the label map has no T12 vertebra")
    z_lo, z_hi, lo_cut, hi_cut = _z_extent(ax, t12)
    if lo_cut or hi_cut:
        out.notes[name] = "the T12 body is cut by the edge of the field; zone covers the part in view"
    pts = ax.lps(_indices(t12))
    out.landmarks["T12_centre"] = tuple(float(v) for v in pts.mean(axis=0))
    # the retrocrural space continues past the T12-L1 disc onto the upper L1 body, where the
    # crura attach (the classic retrocrural needle is placed at L1): the reference "body" of
    # each slice is the T12 body, the T12-L1 disc, or the upper half of the L1 body
    body = t12.copy()
    l1 = _vertebral_body(ax, "L1")
    if ax.has("disc_T12_L1"):
        disc = ax.mask("disc_T12_L1")
        xmid = float(np.median(pts[:, 0]))
        disc &= (np.abs(ax.x - xmid) <= BODY_HALF_WIDTH_MM)[None, None, :]
        body |= disc & ~t12.any(axis=(1, 2))[:, None, None]
    if l1 is not None:
        l_lo, l_hi, _, _ = _z_extent(ax, l1)
        l_mid = L1_RETROCRURAL_FRACTION * l_lo + (1.0 - L1_RETROCRURAL_FRACTION) * l_hi
        upper = (ax.z >= l_mid)[:, None, None] & ~body.any(axis=(1, 2))[:, None, None]
        body |= l1 & upper
        z_lo = min(z_lo, l_mid)
    out.z_ranges[name] = (z_lo, z_hi)
    crus = ax.mask("diaphragm_crura") if ax.has("diaphragm_crura") else None
    free = ax.free()
    mask = np.zeros(body.shape, bool)
    sz, sy, sx = ax.spacing
    X = ax.x[None, :]
    Y = ax.y[:, None]
    a_lo, a_hi = np.deg2rad(SPLANCHNIC_ANGLES_DEG)
    nbins = 72
    for k in np.where(body.any(axis=(1, 2)))[0]:
        b = body[k]
        ys, xs = np.nonzero(b)
        xb, yb = ax.x[xs].mean(), ax.y[ys].mean()
        d_b = ndimage.distance_transform_edt(~b, sampling=(sy, sx))
        ang = np.arctan2(np.abs(X - xb), -(Y - yb))  # 0 = anterior, pi/2 = lateral
        rho = np.hypot(X - xb, Y - yb)
        cand = free[k] & (d_b > 0) & (d_b <= SPLANCHNIC_MAX_MM) & (ang >= a_lo) & (ang <= a_hi)
        theta = np.arctan2(X - xb, -(Y - yb))  # signed, left positive
        tbin = np.clip(((theta + np.pi) / (2 * np.pi) * nbins).astype(int), 0, nbins - 1)
        inner = np.full(nbins, np.inf)
        if crus is not None and crus[k].any():
            cy, cx = np.nonzero(crus[k])
            np.minimum.at(inner, tbin[cy, cx], rho[cy, cx])
        has_crus = np.isfinite(inner)[tbin]
        retro = np.where(has_crus, rho < inner[tbin], d_b <= SPLANCHNIC_NO_CRUS_MM)
        mask[k] = cand & retro
    if mask.any():
        sides = ax.lps(_indices(mask))[:, 0] - float(pts[:, 0].mean())
        missing = [s for s, n in (("left", (sides > 0).sum()), ("right", (sides < 0).sum())) if n == 0]
        if missing:
            out.notes[name] = (out.notes.get(name, "") + f" no free retrocrural tissue on the "
                               f"{' and '.join(missing)} side").strip()
    return mask


_RULES = {
    "celiac_plexus_region": _celiac,
    "superior_hypogastric_plexus_region": _shp,
    "splanchnic_nerve_zone": _splanchnic,
}


def derive_targets(labels: Volume, which: Iterable[str] | None = None,
                   strict: bool = False) -> TargetRegions:
    """Apply the target rules (module docstring) to a vocabulary label map.

    Args:
        labels: label map on an axis-aligned axial grid (vocabulary labels).
        which: target names to derive (default all of :data:`TARGET_NAMES`).
        strict: raise as soon as any requested target cannot be derived.

    Returns:
        TargetRegions; a target whose inputs are missing, or whose region is empty, is left
        out of ``masks`` with the reason in ``messages``.

    Raises:
        LabelMapError: for a grid or label values the rules cannot use, an unknown target
            name, when none of the requested targets can be derived (all reasons listed),
            or with ``strict`` when any of them cannot.
    """
    names = tuple(TARGET_NAMES if which is None else which)
    unknown = [n for n in names if n not in _RULES]
    if unknown:
        raise LabelMapError(f"unknown target(s) {unknown}; known targets: {', '.join(TARGET_NAMES)}")
    ax = _Axial(labels)
    out = TargetRegions(masks={})
    taken = np.zeros(ax.arr.shape, bool)
    for name in TARGET_NAMES:
        if name not in names:
            continue
        try:
            mask = _RULES[name](ax, out)
        except LabelMapError as exc:
            out.messages[name] = str(exc)
            continue
        mask &= ~taken
        if not mask.any():
            out.messages[name] = f"{name}: the rule found no free soft tissue (region is empty)"
            continue
        taken |= mask
        out.masks[name] = mask
    if not out.masks:
        raise LabelMapError("no target region could be derived: " + "; ".join(out.messages.values()))
    if strict and out.messages:
        raise LabelMapError("; ".join(out.messages.values()))
    return out


def add_targets(labels: Volume, which: Iterable[str] | None = None,
                regions: TargetRegions | None = None) -> Volume:
    """A copy of ``labels`` with the derived target regions painted in.

    Only free soft tissue (``body``, 0 or a target label) is ever overwritten. ``regions``
    reuses a :func:`derive_targets` result; otherwise the rules are run here.
    """
    regions = derive_targets(labels, which) if regions is None else regions
    arr = np.array(labels.array, copy=True)
    free = _free_mask(arr)
    for name, mask in regions.masks.items():
        arr[mask & free] = label_of(name)
    return labels.with_array(arr)

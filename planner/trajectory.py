"""Straight-needle trajectory search, constraints, ranking and robustness.

The maths of planning lives here, on plain arrays, with no display:

1. **Skin and entries.** The body is every labelled voxel (plus air-free image voxels when
   an image is given); its outer surface is the skin, with outward normals from the
   gradient of the smoothed body mask. Candidate entries are all skin voxels facing the
   side the patient position allows (a prone patient: posterior skin, +y in LPS) that can
   reach a target point with the longest needle. Ultrasound in-plane presets instead
   enter at the lateral edges of the probe footprint (top row of the frame).
2. **Targets.** Points sampled inside the target region (farthest-point sampling, seeded)
   where the tip itself keeps every hard margin, not only the centroid.
3. **Evaluation.** Every path is sampled at most every ``sample_step_mm`` (<= 1 mm) by
   trilinear interpolation of the distance maps (:mod:`planner.distance`). The search uses
   one combined *slack* map ``min_s (d_s - margin_s)`` over the structures the preset
   forbids; :meth:`PathPlanner.evaluate` reports every structure separately.
   Risk (EpiNav style) is the length-normalised integral of
   ``f = clip(1 - slack / (preferred_clearance - 5 mm), 0, 1)`` along the path, where the
   slack here counts soft-tissue organs only (bone and discs are obstacles, not organs
   that a touch would injure; they constrain feasibility but not risk or contact).
4. **Hard constraints** (Seitel et al. 2011): longer than the longest needle, gantry
   (axial-plane) angle, skin angle or ultrasound in-plane angle above the preset maximum,
   or any forbidden structure within its margin (which includes crossing it). Bone and
   discs may be *touched* (needles are walked off the vertebral body): their margin is
   ``-0.5 * largest voxel size``, so only a path entering them deeper than the distance
   maps' uncertainty is rejected.
5. **Ranking.** Pareto front over (risk, length, angle), fronts ordered by a weighted
   score, then a diverse top-k whose entries are at least ``min_entry_separation_mm``
   apart; bilateral plans pick the best left/right pair whose needles keep
   ``needle_clash_mm`` from each other.
6. **Robustness.** Probability that the needle touches a forbidden organ at risk under
   placement error (:class:`PlacementError`), by Monte-Carlo with fixed random numbers
   (so a dragged path changes smoothly), lateral and depth error reported separately.

Coordinates: entries and targets are patient LPS mm (x left, y posterior, z superior).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from scipy.special import ndtr

from planner.anatomy import Tissue, structure
from planner.distance import CaseGeometry, sample_trilinear
from planner.errors import PlanError
from planner.presets import Preset, get_preset
from planner.spread import celiac_origin_lps
from planner.volume import Volume

REASONS = ("feasible", "too long for the longest needle", "gantry angle above the preset maximum",
           "skin angle above the preset maximum", "in-plane angle above the preset maximum",
           "violates a structure margin (or crosses a forbidden structure)",
           "angle to the sagittal plane outside the preset range")
OK, TOO_LONG, GANTRY, SKIN_ANGLE, IN_PLANE, MARGIN, SAGITTAL = range(7)
_OBSTACLE_TISSUES = (Tissue.BONE, Tissue.CARTILAGE)
#: slack at which the risk function reaches zero is ``preferred_clearance - RISK_BASE_MARGIN_MM``
RISK_BASE_MARGIN_MM = 5.0


# ----------------------------------------------------------------------------- error model
@dataclass(frozen=True)
class PlacementError:
    """Needle placement error model (defaults from shared/docs/clinical.md).

    Navigated needle-tip error is about 3.9 +/- 1.7 mm. An isotropic Gaussian tip error
    with ``sd = 2.44 mm`` per axis has a Maxwell-distributed magnitude with mean
    ``2.44 * 1.596 = 3.9 mm`` and sd ``2.44 * 0.673 = 1.64 mm``, matching it; it splits
    into a lateral part (2 axes perpendicular to the needle, mean 3.06 mm) and a depth
    part (along the needle, mean |error| 1.95 mm). The shaft runs straight from the
    (slightly displaced) skin entry to the displaced tip, so the angular error follows
    from the lateral error and the path length (reported per path).
    """

    tip_lateral_sd_mm: float = 2.44
    tip_depth_sd_mm: float = 2.44
    entry_sd_mm: float = 1.0
    samples: int = 128
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"tip_lateral_sd_mm": self.tip_lateral_sd_mm, "tip_depth_sd_mm": self.tip_depth_sd_mm,
                "entry_sd_mm": self.entry_sd_mm, "samples": self.samples, "seed": self.seed,
                "tip_error_mean_mm": round(self.tip_error_mean_mm, 3)}

    @property
    def tip_error_mean_mm(self) -> float:
        """Mean 3D tip error magnitude implied by the model (exact for equal sds)."""
        lat, dep = self.tip_lateral_sd_mm, self.tip_depth_sd_mm
        if abs(lat - dep) < 1e-9:
            return lat * 2.0 * math.sqrt(2.0 / math.pi)
        g = np.random.default_rng(0).standard_normal((200_000, 3)) * np.array([lat, lat, dep])
        return float(np.linalg.norm(g, axis=1).mean())


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PathMetrics:
    """Every metric of one straight path (what ``evaluate`` returns and plans store)."""

    entry_lps_mm: tuple[float, float, float]
    target_lps_mm: tuple[float, float, float]
    length_mm: float
    needle_length_mm: float | None
    feasible: bool
    reasons: tuple[str, ...]
    min_clearance_mm: dict[str, float]
    margins_mm: dict[str, float]
    structures_crossed: tuple[str, ...]
    bone_crossed: bool
    risk: float
    min_slack_mm: float
    skin_angle_deg: float | None
    gantry_angle_deg: float | None
    cranial_angle_deg: float | None
    sagittal_angle_deg: float
    in_plane_angle_deg: float | None
    needle_visibility: float | None
    side: str
    entry_from_midline_mm: float
    entry_skin_offset_mm: float
    tip_in_target: bool
    p_oar_contact: float | None = None
    p_oar_contact_lateral: float | None = None
    p_oar_contact_depth: float | None = None
    lateral_error_mean_mm: float | None = None
    depth_error_mean_mm: float | None = None
    angular_error_mean_deg: float | None = None
    nearest_structure: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (floats rounded to 0.01 mm / 0.0001)."""
        def r(v: float | None, nd: int = 2) -> float | None:
            return None if v is None or not np.isfinite(v) else round(float(v), nd)
        return {
            "entry_lps_mm": [round(float(v), 3) for v in self.entry_lps_mm],
            "target_lps_mm": [round(float(v), 3) for v in self.target_lps_mm],
            "length_mm": r(self.length_mm), "needle_length_mm": self.needle_length_mm,
            "feasible": bool(self.feasible), "reasons": list(self.reasons),
            "min_clearance_mm": {k: r(v) for k, v in self.min_clearance_mm.items()},
            "margins_mm": {k: r(v) for k, v in self.margins_mm.items()},
            "structures_crossed": list(self.structures_crossed), "bone_crossed": bool(self.bone_crossed),
            "risk": r(self.risk, 4), "min_slack_mm": r(self.min_slack_mm),
            "skin_angle_deg": r(self.skin_angle_deg, 1), "gantry_angle_deg": r(self.gantry_angle_deg, 1),
            "cranial_angle_deg": r(self.cranial_angle_deg, 1), "sagittal_angle_deg": r(self.sagittal_angle_deg, 1),
            "in_plane_angle_deg": r(self.in_plane_angle_deg, 1), "needle_visibility": r(self.needle_visibility, 3),
            "side": self.side, "entry_from_midline_mm": r(self.entry_from_midline_mm, 1),
            "entry_skin_offset_mm": r(self.entry_skin_offset_mm), "tip_in_target": bool(self.tip_in_target),
            "p_oar_contact": r(self.p_oar_contact, 4), "p_oar_contact_lateral": r(self.p_oar_contact_lateral, 4),
            "p_oar_contact_depth": r(self.p_oar_contact_depth, 4),
            "lateral_error_mean_mm": r(self.lateral_error_mean_mm), "depth_error_mean_mm": r(self.depth_error_mean_mm),
            "angular_error_mean_deg": r(self.angular_error_mean_deg),
            "nearest_structure": self.nearest_structure,
        }


@dataclass(frozen=True, eq=False)
class CandidateSet:
    """All candidate paths of one search as arrays (row ``i`` is one path)."""

    side: str
    entry_lps: np.ndarray
    target_lps: np.ndarray
    entry_normal: np.ndarray
    length_mm: np.ndarray
    angle_deg: np.ndarray  # the ranking angle: skin angle (CT) or in-plane angle (US)
    reason: np.ndarray  # int8 codes into REASONS
    risk: np.ndarray  # nan where not sampled
    min_slack_mm: np.ndarray  # nan where not sampled
    n_entries: int
    n_targets: int
    n_sampled: int
    n_samples: int
    elapsed_s: float

    @property
    def n_paths(self) -> int:
        return int(self.length_mm.shape[0])

    @property
    def feasible(self) -> np.ndarray:
        return self.reason == OK

    def reason_counts(self) -> dict[str, int]:
        counts = np.bincount(self.reason.astype(np.int64), minlength=len(REASONS))
        return {REASONS[i]: int(c) for i, c in enumerate(counts)}


@dataclass(frozen=True)
class SkinSurface:
    """Skin voxels of one case: LPS positions, continuous indices and outward normals."""

    lps: np.ndarray
    index_zyx: np.ndarray
    normals: np.ndarray
    tree: cKDTree = field(repr=False, compare=False)

    def nearest(self, lps: np.ndarray) -> tuple[float, np.ndarray]:
        """Distance (mm) to the nearest skin voxel and that voxel's outward normal."""
        d, i = self.tree.query(np.asarray(lps, dtype=float))
        return float(d), self.normals[int(i)]


# ----------------------------------------------------------------------------- helpers
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def _deg(x: np.ndarray | float) -> np.ndarray:
    return np.degrees(x)


def segment_distance(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> float:
    """Smallest distance (mm) between segments ``p0-p1`` and ``q0-q1`` (needle clash check)."""
    p0, p1, q0, q1 = (np.asarray(v, dtype=float) for v in (p0, p1, q0, q1))
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e, f = d1 @ d1, d2 @ d2, d2 @ r
    if a <= 1e-12 and e <= 1e-12:
        return float(np.linalg.norm(r))
    if a <= 1e-12:
        s, t = 0.0, float(np.clip(f / e, 0, 1))
    else:
        c = d1 @ r
        if e <= 1e-12:
            s, t = float(np.clip(-c / a, 0, 1)), 0.0
        else:
            b = d1 @ d2
            denom = a * e - b * b
            s = float(np.clip((b * f - c * e) / denom, 0, 1)) if denom > 1e-12 else 0.0
            t = (b * s + f) / e
            if t < 0:
                s, t = float(np.clip(-c / a, 0, 1)), 0.0
            elif t > 1:
                s, t = float(np.clip((b - c) / a, 0, 1)), 1.0
    return float(np.linalg.norm((p0 + d1 * s) - (q0 + d2 * t)))


def pareto_fronts(objectives: np.ndarray, max_fronts: int | None = None) -> np.ndarray:
    """Non-dominated sorting: front number (0 = Pareto front) of each row (minimisation).

    Rows beyond ``max_fronts`` fronts get the number ``max_fronts`` (not sorted further).
    """
    obj = np.asarray(objectives, dtype=float)
    n = obj.shape[0]
    front = np.full(n, -1 if max_fronts is None else max_fronts, dtype=np.int64)
    remaining = np.arange(n)
    level = 0
    while remaining.size and (max_fronts is None or level < max_fronts):
        sub = obj[remaining]
        le = np.ones((remaining.size, remaining.size), dtype=bool)
        lt = np.zeros((remaining.size, remaining.size), dtype=bool)
        for j in range(sub.shape[1]):
            col = sub[:, j]
            le &= col[:, None] <= col[None, :]
            lt |= col[:, None] < col[None, :]
        dominated = (le & lt).any(axis=0)  # column j is dominated by some row i
        front[remaining[~dominated]] = level
        remaining = remaining[dominated]
        level += 1
    return front


def farthest_points(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` well-spread rows of ``points`` (farthest-point sampling, seeded start)."""
    n = points.shape[0]
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1), out=dist)
    return np.asarray(chosen)


# ----------------------------------------------------------------------------- skin
def body_mask(geometry: CaseGeometry) -> np.ndarray:
    """Patient body: labelled voxels plus (for CT) image voxels denser than air, holes filled."""
    body = geometry.labels.array > 0
    image = geometry.image
    if image is not None and image.modality.upper() == "CT":
        body |= np.asarray(image.array) > -400
    if not body.any():
        raise PlanError("the label map is empty: no body to plan on")
    lab, n = ndi.label(body)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        body = lab == int(np.argmax(sizes))
    for z in range(body.shape[0]):
        body[z] = ndi.binary_fill_holes(body[z])
    return body


def skin_surface(geometry: CaseGeometry, smooth_mm: float = 4.0) -> SkinSurface:
    """Skin voxels (body voxels with an outside 6-neighbour in the axial plane or along z,
    ignoring the cut faces at the ends of the scan) and their outward normals in LPS."""
    labels = geometry.labels
    body = body_mask(geometry)
    inner = ndi.binary_erosion(body, structure=ndi.generate_binary_structure(3, 1), border_value=1)
    skin = body & ~inner
    idx = np.argwhere(skin)
    if idx.shape[0] == 0:
        raise PlanError("no skin surface found in the label map")
    sigma = [max(smooth_mm / s, 0.5) if n > 1 else 0.0 for s, n in zip(labels.spacing, labels.shape)]
    smooth = ndi.gaussian_filter(body.astype(np.float32), sigma=sigma, mode="nearest")
    grads = []
    for axis in range(3):
        n = smooth.shape[axis]
        if n == 1:
            grads.append(np.zeros(idx.shape[0]))
            continue
        hi = idx.copy()
        lo = idx.copy()
        hi[:, axis] = np.minimum(idx[:, axis] + 1, n - 1)
        lo[:, axis] = np.maximum(idx[:, axis] - 1, 0)
        step = (hi[:, axis] - lo[:, axis]).astype(float) * labels.spacing[axis]
        diff = smooth[tuple(hi.T)] - smooth[tuple(lo.T)]
        grads.append(diff / np.where(step > 0, step, 1.0))
    grad_zyx = np.stack(grads, axis=1)
    normals = _unit(-(grad_zyx[:, ::-1] @ labels.direction.T))
    lps = labels.index_to_lps(idx.astype(float))
    return SkinSurface(lps=lps, index_zyx=idx.astype(float), normals=normals, tree=cKDTree(lps))


def single_frame(volume: Volume, frame: int) -> Volume:
    """One frame ``[frame]`` of a cine (ultrasound) as a one-slice volume at the same place."""
    if not 0 <= frame < volume.shape[0]:
        raise PlanError(f"frame {frame} is outside the {volume.shape[0]} frames of the image")
    origin = tuple(float(v) for v in volume.index_to_lps(np.array([frame, 0.0, 0.0])))
    return dataclasses.replace(volume, array=volume.array[frame:frame + 1], origin=origin, display_rgb=None)


def target_frame(labels: Volume, target: str) -> int:
    """The frame of a cine holding the most target voxels (where an in-plane plan is made)."""
    counts = (labels.array == structure(target).label).sum(axis=(1, 2))
    return int(np.argmax(counts))


# ----------------------------------------------------------------------------- planner
class PathPlanner:
    """Plans and evaluates straight needle paths for one case and one preset.

    Construction computes (once) the distance map of every organ at risk in the case, the
    combined slack and contact maps, the skin and the target samples' region; after that
    :meth:`evaluate` is cheap enough to call on every drag of a path in a viewer.

    Args:
        geometry: the case (labels, optional image) and its cached distance maps.
        preset: a :class:`planner.presets.Preset` or its name.
        error_model: placement error for robustness.
        seed: seeds target sampling.

    Raises:
        PlanError: unknown preset, empty target region, or a target no skin entry reaches.
    """

    def __init__(self, geometry: CaseGeometry, preset: Preset | str,
                 error_model: PlacementError = PlacementError(), seed: int = 0) -> None:
        self.geometry = geometry
        self.preset = get_preset(preset)
        self.error_model = error_model
        self.seed = int(seed)
        labels = geometry.labels
        if not geometry.has(self.preset.target):
            raise PlanError(
                f"target region {self.preset.target!r} of preset {self.preset.name!r} is empty in the label map; "
                "derive the target regions (planner.targets.add_targets) or check the segmentation")
        if self.preset.in_plane and labels.shape[0] > 1:
            raise PlanError(f"preset {self.preset.name!r} plans in one image plane but the labels have "
                            f"{labels.shape[0]} frames: pass one frame (planner.trajectory.single_frame)")
        self.oars = geometry.organs_at_risk()
        self.forbidden = tuple(n for n in self.oars if not self.preset.is_crossable(n))
        # bone and discs may be touched (needles are walked off the vertebral body): a path is
        # rejected only when it enters them deeper than the distance maps' uncertainty
        self.contact_tolerance_mm = 0.5 * max(labels.spacing)
        self.margins = {n: (-self.contact_tolerance_mm
                            if structure(n).tissue in _OBSTACLE_TISSUES and self.preset.margin(n) <= 0
                            else self.preset.margin(n)) for n in self.forbidden}
        geometry.precompute(self.oars + (self.preset.target,))
        # bone and cartilage are obstacles (hard constraint) but touching them harms no organ:
        # they count for feasibility, not for the risk integral or the contact probability
        self.soft_tissue = tuple(n for n in self.forbidden if structure(n).tissue not in _OBSTACLE_TISSUES)
        self.slack = geometry.combined(self.margins)
        self.risk_slack = geometry.combined({n: self.margins[n] for n in self.soft_tissue})
        self.contact = geometry.combined({n: 0.0 for n in self.soft_tissue})
        self.target_distance = geometry.distance(self.preset.target)
        self._oar_maps = [geometry.distance(n) for n in self.oars]
        self._offsets = {sd.name: np.asarray(sd.offset, dtype=np.float32) for sd in self._oar_maps}
        self._crop_lo = np.array([sd.offset for sd in self._oar_maps], dtype=np.float32).reshape(-1, 3)
        self._crop_hi = self._crop_lo + np.array([sd.array.shape for sd in self._oar_maps],
                                                 dtype=np.float32).reshape(-1, 3)
        self.midline_x = self._midline_x()
        origin = celiac_origin_lps(geometry) if self.preset.weights.get("spread", 0.0) else None
        self._celiac_z = None if origin is None else float(origin[2])
        self.is_2d = labels.shape[0] == 1
        self.skin = None if self.preset.in_plane else skin_surface(geometry)
        self._risk_scale = max(self.preset.preferred_clearance_mm - RISK_BASE_MARGIN_MM, 1.0)
        rng = np.random.default_rng(error_model.seed)
        self._noise = rng.standard_normal((error_model.samples, 5))
        if self.is_2d:
            self._noise[:, 1] = 0.0
            self._noise[:, 3] = 0.0

    # ------------------------------------------------------------------ geometry
    def _midline_x(self) -> float:
        """LPS x of the midline: spinal canal (or cord, or vertebrae), else the body centre."""
        g = self.geometry
        for name in ("spinal_canal", "spinal_cord", "vertebra_L1", "vertebra_T12", "vertebra_L2", "vertebra_L4",
                     "vertebrae"):
            if g.has(name):
                idx = np.argwhere(g.mask(name))
                return float(g.labels.index_to_lps(idx.mean(axis=0))[0])
        idx = np.argwhere(g.labels.array > 0)
        return float(g.labels.index_to_lps(idx.mean(axis=0))[0])

    def _target_split_x(self) -> float:
        """x that separates left and right tips: the aortic centre at the target levels when
        the preset says so (periaortic targets) and an aorta is labelled, else the midline."""
        g = self.geometry
        if self.preset.split_tips_at == "aorta" and g.has("aorta"):
            tmask = g.mask(self.preset.target)
            zs = np.nonzero(tmask.any(axis=(1, 2)))[0]
            amask = g.mask("aorta")[zs.min():zs.max() + 1]
            if amask.any():
                idx = np.argwhere(amask) + np.array([zs.min(), 0, 0])
                return float(g.labels.index_to_lps(idx.mean(axis=0))[0])
        return self.midline_x

    def side_of(self, entry_lps: Sequence[float]) -> str:
        x = float(entry_lps[0]) - self.midline_x
        return "left" if x > 0 else "right" if x < 0 else "midline"

    def to_index(self, lps: np.ndarray) -> np.ndarray:
        return self.geometry.labels.lps_to_index(lps)

    # ------------------------------------------------------------------ candidates
    def target_points(self, side: str = "both", n: int = 24) -> np.ndarray:
        """``[n, 3]`` LPS tip candidates inside the target region where the tip keeps every margin."""
        g = self.geometry
        idx = np.argwhere(g.mask(self.preset.target))
        if idx.shape[0] == 0:
            raise PlanError(f"target region {self.preset.target!r} is empty")
        lps = g.labels.index_to_lps(idx.astype(float))
        if side in ("left", "right"):
            split = self._target_split_x()
            sel = lps[:, 0] >= split if side == "left" else lps[:, 0] <= split
            if sel.any():
                idx, lps = idx[sel], lps[sel]
        safe = self.slack[tuple(idx.T)] >= 0
        if not safe.any():
            raise PlanError(
                f"no point of the target region {self.preset.target!r} ({side} side) keeps the hard margins "
                f"({', '.join(f'{k} {v:g} mm' for k, v in self.margins.items() if v > 0)}); "
                "the target is too close to organs at risk for this preset")
        lps = lps[safe]
        return lps[farthest_points(lps, n, seed=self.seed)]

    def entry_points(self, side: str = "both") -> tuple[np.ndarray, np.ndarray]:
        """Candidate skin entries ``(lps [E, 3], outward normals [E, 3])`` for a side."""
        if self.preset.in_plane:
            return self._probe_entries()
        assert self.skin is not None
        normals = self.skin.normals
        want = _unit(np.asarray(self.preset.entry_direction_lps, dtype=float))
        ok = normals @ want >= math.cos(math.radians(self.preset.entry_cone_deg))
        dx = self.skin.lps[:, 0] - self.midline_x
        if side == "left":
            ok &= dx > 0
        elif side == "right":
            ok &= dx < 0
        zone = self.preset.entry_from_midline_mm
        if zone is not None:
            ok &= (np.abs(dx) >= zone[0]) & (np.abs(dx) <= zone[1])
        if not ok.any():
            raise PlanError(f"no skin faces the {self.preset.patient_position} entry direction on the {side} side"
                            + ("" if zone is None else f" within {zone[0]:g}-{zone[1]:g} mm of the midline"))
        return self.skin.lps[ok], normals[ok]

    def _probe_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Ultrasound in-plane: entries on the probe face (top row) at its two lateral edges."""
        labels = self.geometry.labels
        frame = target_frame(labels, self.preset.target)
        nx = labels.shape[2]
        edge = max(int(round(self.preset.probe_edge_mm / labels.spacing[2])), 1)
        cols = np.r_[np.arange(0, min(edge, nx)), np.arange(max(nx - edge, 0), nx)]
        idx = np.stack([np.full(cols.shape, frame), np.zeros(cols.shape), cols], axis=1).astype(float)
        lps = labels.index_to_lps(idx)
        up = labels.direction @ np.array([0.0, -1.0, 0.0])  # towards the probe (row index decreasing)
        return lps, np.repeat(up[None, :], len(lps), axis=0)

    # ------------------------------------------------------------------ angles
    def _angles(self, entry: np.ndarray, target: np.ndarray, normal: np.ndarray) -> dict[str, np.ndarray]:
        vec = target - entry
        length = np.linalg.norm(vec, axis=-1)
        u = vec / np.where(length > 0, length, 1.0)[..., None]
        out: dict[str, np.ndarray] = {"length": length}
        out["skin"] = _deg(np.arccos(np.clip(-(u * normal).sum(-1), -1, 1)))
        out["gantry"] = _deg(np.arcsin(np.clip(np.abs(u[..., 2]), 0, 1)))
        out["cranial"] = _deg(np.arcsin(np.clip(u[..., 2], -1, 1)))
        out["sagittal"] = _deg(np.arcsin(np.clip(np.abs(u[..., 0]), 0, 1)))
        if self.preset.in_plane:
            labels = self.geometry.labels
            d_idx = (u @ labels.direction) * 1.0  # components along the x, y, z index axes (mm units)
            depth = d_idx[..., 1]
            lateral = np.abs(d_idx[..., 0])
            out["in_plane"] = _deg(np.arctan2(depth, np.maximum(lateral, 1e-9)))
        return out

    def _visibility(self, in_plane_deg: float) -> float:
        """Needle visibility on ultrasound: 1 up to the first angle, 0 from the second (linear)."""
        lo, hi = self.preset.visibility_angles_deg
        return float(np.clip((hi - in_plane_deg) / max(hi - lo, 1e-9), 0.0, 1.0))

    # ------------------------------------------------------------------ batch sampling
    def _sample_min_mean(self, a_idx: np.ndarray, b_idx: np.ndarray, lengths: np.ndarray, step: float,
                         min_field: np.ndarray, risk_field: np.ndarray | None = None,
                         chunk_samples: int = 2_000_000) -> tuple[np.ndarray, np.ndarray | None]:
        """Per path (continuous index end points): the minimum of ``min_field`` along the
        path sampled every <= ``step`` mm and, when ``risk_field`` is given, the mean of
        the risk function of that field (the length-normalised risk integral)."""
        n_paths = a_idx.shape[0]
        mins = np.empty(n_paths, dtype=np.float32)
        means = np.empty(n_paths, dtype=np.float32) if risk_field is not None else None
        counts = np.ceil(lengths / step).astype(np.int64) + 1
        cum = np.cumsum(counts)
        start = 0
        while start < n_paths:
            base = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base + chunk_samples, side="right"))
            stop = min(max(stop, start + 1), n_paths)
            n = counts[start:stop]
            offsets = np.concatenate([[0], np.cumsum(n)[:-1]])
            path = np.repeat(np.arange(stop - start), n)
            t = ((np.arange(int(n.sum())) - offsets[path]) / (n[path] - 1)).astype(np.float32)
            a = a_idx[start:stop].astype(np.float32)
            d = (b_idx[start:stop] - a_idx[start:stop]).astype(np.float32)
            pts = a[path] + d[path] * t[:, None]
            mins[start:stop] = np.minimum.reduceat(sample_trilinear(min_field, pts), offsets)
            if means is not None:
                f = np.clip(1.0 - sample_trilinear(risk_field, pts) / np.float32(self._risk_scale), 0.0, 1.0)
                means[start:stop] = np.add.reduceat(f, offsets) / n
            start = stop
        return mins, means

    def search(self, side: str = "both", n_targets: int = 24, max_entries: int | None = None,
               coarse_step_mm: float = 4.0) -> CandidateSet:
        """Evaluate every (entry, target) pair of a side under the preset's hard constraints.

        Cheap constraints (length, angles) are applied to all pairs first; the survivors are
        sampled at ``coarse_step_mm`` to discard paths with a sample inside a margin (a
        sample on the path is a true violation), and the rest are sampled every
        ``sample_step_mm`` for the exact minimum slack and the risk integral.
        """
        t0 = time.perf_counter()
        p = self.preset
        targets = self.target_points(side, n_targets)
        entries, normals = self.entry_points(side)
        if max_entries is not None and entries.shape[0] > max_entries:
            keep = np.linspace(0, entries.shape[0] - 1, max_entries).astype(int)
            entries, normals = entries[keep], normals[keep]
        # reach: entries that reach at least one target with the longest needle
        dist = np.linalg.norm(entries[:, None, :] - targets[None, :, :], axis=2)
        reach = dist.min(axis=1) <= p.max_path_mm
        if not reach.any():
            raise PlanError(
                f"the target {p.target!r} is out of reach: the nearest allowed skin entry ({side} side, "
                f"{p.patient_position}) is {dist.min():.0f} mm away, the longest needle "
                f"({max(p.needle_lengths_mm):g} mm less {p.needle_reserve_mm:g} mm outside the skin) reaches "
                f"{p.max_path_mm:g} mm; choose a longer needle or another approach")
        entries, normals = entries[reach], normals[reach]
        n_e, n_t = entries.shape[0], targets.shape[0]
        e = np.repeat(entries, n_t, axis=0)
        nrm = np.repeat(normals, n_t, axis=0)
        tg = np.tile(targets, (n_e, 1))
        ang = self._angles(e, tg, nrm)
        length = ang["length"]
        reason = np.zeros(length.shape[0], dtype=np.int8)
        if p.max_in_plane_angle_deg is not None and "in_plane" in ang:
            reason[(ang["in_plane"] > p.max_in_plane_angle_deg) | (ang["in_plane"] < 0)] = IN_PLANE
        if p.max_skin_angle_deg is not None and not p.in_plane:
            reason[(reason == OK) & (ang["skin"] > p.max_skin_angle_deg)] = SKIN_ANGLE
        if p.max_gantry_angle_deg is not None and not p.in_plane:
            reason[(reason == OK) & (ang["gantry"] > p.max_gantry_angle_deg)] = GANTRY
        if p.sagittal_angle_deg is not None and not p.in_plane:
            lo, hi = p.sagittal_angle_deg
            reason[(reason == OK) & ((ang["sagittal"] < lo) | (ang["sagittal"] > hi))] = SAGITTAL
        reason[(reason == OK) & (length > p.max_path_mm)] = TOO_LONG
        angle = ang["in_plane"] if p.in_plane else ang["skin"]
        risk = np.full(length.shape, np.nan, dtype=np.float32)
        slack = np.full(length.shape, np.nan, dtype=np.float32)
        n_samples = 0
        todo = np.nonzero(reason == OK)[0]
        if todo.size:
            a_idx = self.to_index(e[todo]).astype(np.float32)
            b_idx = self.to_index(tg[todo]).astype(np.float32)
            coarse = max(coarse_step_mm, p.sample_step_mm)
            cmin, _ = self._sample_min_mean(a_idx, b_idx, length[todo], coarse, self.slack)
            n_samples += int((np.ceil(length[todo] / coarse) + 1).sum())
            bad = cmin < 0
            reason[todo[bad]] = MARGIN
            slack[todo[bad]] = cmin[bad]
            good = ~bad
            fine = todo[good]
            if fine.size:
                fmin, fmean = self._sample_min_mean(a_idx[good], b_idx[good], length[fine], p.sample_step_mm,
                                                    self.slack, self.risk_slack)
                n_samples += int((np.ceil(length[fine] / p.sample_step_mm) + 1).sum())
                slack[fine] = fmin
                risk[fine] = fmean  # type: ignore[assignment]
                reason[fine[fmin < 0]] = MARGIN
        return CandidateSet(side=side, entry_lps=e, target_lps=tg, entry_normal=nrm, length_mm=length,
                            angle_deg=angle, reason=reason, risk=risk, min_slack_mm=slack, n_entries=n_e,
                            n_targets=n_t, n_sampled=int(todo.size), n_samples=n_samples,
                            elapsed_s=time.perf_counter() - t0)

    # ------------------------------------------------------------------ ranking
    def _below_celiac(self, tips_lps: np.ndarray) -> np.ndarray:
        """1.0 for tips caudal to the celiac trunk origin (poorer spread, see planner.spread)."""
        if self._celiac_z is None:
            return np.zeros(len(tips_lps))
        return (np.asarray(tips_lps)[:, 2] < self._celiac_z).astype(float)

    def score(self, cands: CandidateSet, rows: np.ndarray) -> np.ndarray:
        """Weighted scalar used to order paths within a Pareto front (lower is better).

        The optional ``spread`` weight penalises tips below the celiac origin: a tip above it
        gave four-quadrant spread in 58% vs 14% (Anesthesiology 1997;87:1301).
        """
        w = self.preset.weights
        return (w.get("risk", 1.0) * cands.risk[rows]
                + w.get("length", 0.3) * cands.length_mm[rows] / self.preset.max_path_mm
                + w.get("angle", 0.3) * cands.angle_deg[rows] / 90.0
                + w.get("spread", 0.0) * self._below_celiac(cands.target_lps[rows]))

    def rank(self, cands: CandidateSet, k: int = 5, pool: int = 1000, max_fronts: int = 8) -> np.ndarray:
        """Row indices of a diverse top-``k``: Pareto fronts over (risk, length, angle), each
        front ordered by :meth:`score`, entries at least ``min_entry_separation_mm`` apart.

        Only the ``pool`` best-scoring feasible paths enter the non-dominated sort; paths
        beyond ``max_fronts`` fronts are ordered by score alone.
        """
        rows = np.nonzero(cands.feasible)[0]
        if rows.size == 0:
            return rows
        score = self.score(cands, rows)
        if rows.size > pool:
            keep = np.argsort(score, kind="stable")[:pool]
            rows, score = rows[keep], score[keep]
        obj = np.stack([cands.risk[rows], cands.length_mm[rows], cands.angle_deg[rows]], axis=1)
        front = pareto_fronts(obj, max_fronts=max_fronts)
        order = np.lexsort((score, front))
        chosen: list[int] = []
        sep = self.preset.min_entry_separation_mm
        for i in order:
            row = int(rows[i])
            entry = cands.entry_lps[row]
            if all(np.linalg.norm(entry - cands.entry_lps[c]) >= sep for c in chosen):
                chosen.append(row)
                if len(chosen) == k:
                    break
        return np.asarray(chosen, dtype=np.int64)

    def closest_infeasible(self, cands: CandidateSet, k: int = 3) -> np.ndarray:
        """Rows of the least-bad sampled infeasible paths (largest minimum slack), for reporting."""
        rows = np.nonzero(np.isfinite(cands.min_slack_mm))[0]
        if rows.size == 0:
            rows = np.argsort(cands.length_mm)[:k]
            return rows
        return rows[np.argsort(-cands.min_slack_mm[rows])[:k]]

    # ------------------------------------------------------------------ one path
    def _path_points(self, entry_idx: np.ndarray, target_idx: np.ndarray, length: float) -> np.ndarray:
        n = int(math.ceil(length / self.preset.sample_step_mm)) + 1
        t = np.linspace(0.0, 1.0, max(n, 2), dtype=np.float32)[:, None]
        a = entry_idx.astype(np.float32)
        return a[None, :] + t * (target_idx.astype(np.float32) - a)[None, :]

    def clearances(self, points_zyx: np.ndarray) -> dict[str, float]:
        """Minimum signed distance (mm) of each organ at risk over continuous-index points.

        A structure's map covers its bounding box grown by the cap, so points outside that
        crop are at least the cap away: only the points inside each crop are sampled.
        """
        pts = np.asarray(points_zyx, dtype=np.float32)
        inside = ((pts[None, :, :] >= self._crop_lo[:, None, :])
                  & (pts[None, :, :] <= self._crop_hi[:, None, :] - 1.0)).all(axis=2)
        out: dict[str, float] = {}
        for k, (name, sd) in enumerate(zip(self.oars, self._oar_maps)):
            sel = inside[k]
            if sel.any():
                local = pts[sel] - self._offsets[name]
                out[name] = float(sample_trilinear(sd.array, local, outside=sd.cap_mm).min())
            else:
                out[name] = sd.cap_mm
        return out

    def evaluate(self, entry_lps: Sequence[float], target_lps: Sequence[float], robustness: bool = True
                 ) -> PathMetrics:
        """Every metric of the straight path from ``entry_lps`` to ``target_lps`` (LPS mm)."""
        p = self.preset
        entry = np.asarray(entry_lps, dtype=float).reshape(3)
        target = np.asarray(target_lps, dtype=float).reshape(3)
        if self.skin is not None:
            skin_offset, normal = self.skin.nearest(entry)
        else:
            probe, normals = self._probe_entries()
            j = int(np.argmin(np.linalg.norm(probe - entry, axis=1)))
            skin_offset, normal = float(np.linalg.norm(probe[j] - entry)), normals[j]
            skin_offset = float(abs((entry - probe[j]) @ normal))
        ang = self._angles(entry, target, normal)
        length = float(ang["length"])
        e_idx, t_idx = self.to_index(entry), self.to_index(target)
        pts = self._path_points(e_idx, t_idx, length)
        clearance = self.clearances(pts)
        crossed = [name for name, c in clearance.items()
                   if c < (-self.contact_tolerance_mm if structure(name).tissue in _OBSTACLE_TISSUES else 0.0)]
        min_slack = float(sample_trilinear(self.slack, pts).min())
        risk_vals = sample_trilinear(self.risk_slack, pts)
        risk = float(np.clip(1.0 - risk_vals / self._risk_scale, 0, 1).mean())
        reasons: list[str] = []
        needle = p.needle_for(length)
        if needle is None:
            reasons.append(f"path {length:.0f} mm is longer than the longest needle reaches ({p.max_path_mm:g} mm)")
        if not p.in_plane:
            if p.max_gantry_angle_deg is not None and ang["gantry"] > p.max_gantry_angle_deg:
                reasons.append(f"gantry angle {float(ang['gantry']):.0f} deg > {p.max_gantry_angle_deg:g} deg")
            if p.max_skin_angle_deg is not None and ang["skin"] > p.max_skin_angle_deg:
                reasons.append(f"skin angle {float(ang['skin']):.0f} deg > {p.max_skin_angle_deg:g} deg")
            if p.sagittal_angle_deg is not None and not (
                    p.sagittal_angle_deg[0] <= float(ang["sagittal"]) <= p.sagittal_angle_deg[1]):
                reasons.append(f"angle to the sagittal plane {float(ang['sagittal']):.0f} deg outside "
                               f"{p.sagittal_angle_deg[0]:g}-{p.sagittal_angle_deg[1]:g} deg")
            want = _unit(np.asarray(p.entry_direction_lps, dtype=float))
            if normal @ want < math.cos(math.radians(p.entry_cone_deg)):
                reasons.append(f"entry is not on the skin a {p.patient_position} patient offers")
            off = abs(float(entry[0]) - self.midline_x)
            if p.entry_from_midline_mm is not None and not p.entry_from_midline_mm[0] <= off <= p.entry_from_midline_mm[1]:
                reasons.append(f"entry {off:.0f} mm from the midline, outside the preset's "
                               f"{p.entry_from_midline_mm[0]:g}-{p.entry_from_midline_mm[1]:g} mm zone")
        else:
            ipa = float(ang["in_plane"])
            if p.max_in_plane_angle_deg is not None and (ipa > p.max_in_plane_angle_deg or ipa < 0):
                reasons.append(f"in-plane angle {ipa:.0f} deg outside 0-{p.max_in_plane_angle_deg:g} deg")
        if skin_offset > 5.0:
            reasons.append(f"entry is {skin_offset:.0f} mm from the skin")
        for name in self.forbidden:
            c, m = clearance[name], self.margins[name]
            if c >= m:
                continue
            if m < 0:
                reasons.append(f"enters {name} by {-c:.1f} mm (more than touching it)")
            elif c < 0:
                reasons.append(f"crosses {name}")
            else:
                reasons.append(f"{name} clearance {c:.1f} mm < margin {m:g} mm")
        if min_slack < 0 and not any(r.startswith(("crosses", "within", "enters")) or "clearance" in r for r in reasons):
            worst = min(self.forbidden, key=lambda n: clearance[n] - self.margins[n])
            reasons.append(f"within the margin of {worst} between samples (interpolated slack {min_slack:.1f} mm)")
        tip_d = float(self.target_distance.sample(t_idx[None, :])[0])
        tip_in = tip_d <= 0.0
        if not tip_in:
            reasons.append(f"tip is {tip_d:.1f} mm outside the target region {p.target}")
        bone = any(structure(n).is_bone and clearance[n] < -self.contact_tolerance_mm for n in self.oars)
        organs = self.soft_tissue or self.forbidden
        nearest = min(organs, key=lambda n: clearance[n] - self.margins[n]) if organs else None
        ipa_v = float(ang["in_plane"]) if p.in_plane else None
        metrics = dict(
            entry_lps_mm=tuple(float(v) for v in entry), target_lps_mm=tuple(float(v) for v in target),
            length_mm=length, needle_length_mm=needle, feasible=not reasons, reasons=tuple(reasons),
            min_clearance_mm=clearance, margins_mm=dict(self.margins), structures_crossed=tuple(crossed),
            bone_crossed=bone, risk=risk, min_slack_mm=min_slack,
            skin_angle_deg=None if p.in_plane else float(ang["skin"]),
            gantry_angle_deg=None if p.in_plane else float(ang["gantry"]),
            cranial_angle_deg=None if p.in_plane else float(ang["cranial"]),
            sagittal_angle_deg=float(ang["sagittal"]), in_plane_angle_deg=ipa_v,
            needle_visibility=None if ipa_v is None else self._visibility(ipa_v),
            side=self.side_of(entry) if not p.in_plane else "in-plane",
            entry_from_midline_mm=abs(float(entry[0]) - self.midline_x), entry_skin_offset_mm=skin_offset,
            tip_in_target=tip_in, nearest_structure=nearest,
        )
        if robustness:
            metrics.update(self.robustness(entry, target))
        return PathMetrics(**metrics)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ robustness
    def _perturbed_contact(self, entry: np.ndarray, target: np.ndarray, entry_shift: np.ndarray,
                           tip_shift: np.ndarray) -> np.ndarray:
        """Per perturbed path ``entry + entry_shift[k] -> target + tip_shift[k]``: True where it
        touches a forbidden soft-tissue organ.

        Every path is sampled at the same parameters ``t`` (<= ``sample_step_mm`` apart on the
        longest). Only the ``t`` where the planned path is closer to an organ than the largest
        possible displacement there (times sqrt(3), the Lipschitz bound of a trilinear
        interpolant of a distance map) are sampled: elsewhere no perturbed path can touch.
        """
        tips = target[None, :] + tip_shift
        entries = entry[None, :] + entry_shift
        n = int(math.ceil(float(np.linalg.norm(tips - entries, axis=1).max()) / self.preset.sample_step_mm)) + 1
        t = np.linspace(0.0, 1.0, max(n, 2))
        e_idx, t_idx = self.to_index(entry), self.to_index(target)
        planned = sample_trilinear(self.contact, e_idx[None, :] + t[:, None] * (t_idx - e_idx)[None, :])
        reach = ((1.0 - t) * float(np.linalg.norm(entry_shift, axis=1).max())
                 + t * float(np.linalg.norm(tip_shift, axis=1).max()))
        keep = planned <= math.sqrt(3.0) * reach + 1e-3
        if not keep.any():
            return np.zeros(tips.shape[0], dtype=bool)
        tk = t[keep].astype(np.float32)
        a = self.to_index(entries).astype(np.float32)
        b = self.to_index(tips).astype(np.float32)
        pts = a[:, None, :] + tk[None, :, None] * (b - a)[:, None, :]
        vals = sample_trilinear(self.contact, pts.reshape(-1, 3)).reshape(pts.shape[:2])
        return vals.min(axis=1) < 0

    def robustness(self, entry_lps: Sequence[float], target_lps: Sequence[float]) -> dict[str, float]:
        """Probability of touching a forbidden organ at risk under :class:`PlacementError`.

        ``p_oar_contact`` uses lateral + depth error together (Monte-Carlo, fixed random
        numbers); ``p_oar_contact_lateral`` the lateral (and entry) error alone;
        ``p_oar_contact_depth`` the depth error alone, analytically: the tip overshoots into
        the first structure ahead of it with probability ``1 - Phi(distance ahead / sd)``.
        """
        em = self.error_model
        entry = np.asarray(entry_lps, dtype=float)
        target = np.asarray(target_lps, dtype=float)
        vec = target - entry
        length = float(np.linalg.norm(vec))
        u = vec / max(length, 1e-9)
        if self.is_2d:
            labels = self.geometry.labels
            normal_plane = labels.direction @ np.array([0.0, 0.0, 1.0])
            e1 = _unit(np.cross(normal_plane, u))
            e2 = np.zeros(3)
        else:
            helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
            e1 = _unit(np.cross(u, helper))
            e2 = np.cross(u, e1)
        g = self._noise
        entry_shift = em.entry_sd_mm * (g[:, [0]] * e1 + g[:, [1]] * e2)
        lateral = em.tip_lateral_sd_mm * (g[:, [2]] * e1 + g[:, [3]] * e2)
        depth = em.tip_depth_sd_mm * g[:, [4]] * u
        n = entry_shift.shape[0]
        touch = self._perturbed_contact(entry, target, np.concatenate([entry_shift, entry_shift]),
                                        np.concatenate([lateral + depth, lateral]))
        p_all, p_lat = float(touch[:n].mean()), float(touch[n:].mean())
        # depth alone: distance along the needle from the tip to the first contact ahead
        reach = 4.0 * em.tip_depth_sd_mm
        steps = np.arange(0.0, reach + 1e-9, min(self.preset.sample_step_mm, 0.5))
        ahead = self.to_index(target[None, :] + steps[:, None] * u[None, :])
        vals = sample_trilinear(self.contact, ahead)
        hit = np.nonzero(vals < 0)[0]
        if vals[0] < 0:
            p_dep = 1.0
        elif hit.size:
            p_dep = float(1.0 - ndtr(steps[hit[0]] / max(em.tip_depth_sd_mm, 1e-9)))
        else:
            p_dep = float(1.0 - ndtr(reach / max(em.tip_depth_sd_mm, 1e-9)))
        lat_err = np.linalg.norm(lateral, axis=1)
        tip_total = lateral + depth - entry_shift
        ang_err = np.degrees(np.arctan2(np.linalg.norm(tip_total - (tip_total @ u)[:, None] * u, axis=1),
                                        max(length, 1e-9)))
        return {"p_oar_contact": p_all, "p_oar_contact_lateral": p_lat, "p_oar_contact_depth": p_dep,
                "lateral_error_mean_mm": float(lat_err.mean()),
                "depth_error_mean_mm": float(np.abs(g[:, 4]).mean() * em.tip_depth_sd_mm),
                "angular_error_mean_deg": float(ang_err.mean())}

    # ------------------------------------------------------------------ plans
    def best_paths(self, side: str = "both", k: int = 5, n_targets: int = 24,
                   max_entries: int | None = None) -> tuple[list[PathMetrics], CandidateSet]:
        """Search a side and fully evaluate its diverse top-``k`` (feasible first).

        When nothing is feasible, the least-bad candidates are returned (``feasible`` False,
        with reasons) so that the caller can explain why.
        """
        cands = self.search(side, n_targets=n_targets, max_entries=max_entries)
        rows = self.rank(cands, k)
        if rows.size == 0:
            rows = self.closest_infeasible(cands, k=min(k, 3))
        paths = [self.evaluate(cands.entry_lps[r], cands.target_lps[r]) for r in rows]
        return paths, cands

    def best_pair(self, left: Sequence[PathMetrics], right: Sequence[PathMetrics]
                  ) -> tuple[int, int] | None:
        """Indices of the best non-clashing feasible (left, right) pair, by summed score."""
        best: tuple[float, int, int] | None = None
        for i, a in enumerate(left):
            for j, b in enumerate(right):
                if not (a.feasible and b.feasible):
                    continue
                gap = segment_distance(np.array(a.entry_lps_mm), np.array(a.target_lps_mm),
                                       np.array(b.entry_lps_mm), np.array(b.target_lps_mm))
                if gap < self.preset.needle_clash_mm:
                    continue
                s = self.path_score(a) + self.path_score(b)
                if best is None or s < best[0]:
                    best = (s, i, j)
        return None if best is None else (best[1], best[2])

    def path_score(self, m: PathMetrics) -> float:
        w = self.preset.weights
        angle = m.in_plane_angle_deg if self.preset.in_plane else m.skin_angle_deg
        return (w.get("risk", 1.0) * m.risk + w.get("length", 0.3) * m.length_mm / self.preset.max_path_mm
                + w.get("angle", 0.3) * float(angle or 0.0) / 90.0
                + w.get("spread", 0.0) * float(self._below_celiac(np.array([m.target_lps_mm]))[0]))


def needles_clash(a: PathMetrics, b: PathMetrics, clash_mm: float) -> bool:
    """True when two planned needles come closer than ``clash_mm`` anywhere."""
    return segment_distance(np.array(a.entry_lps_mm), np.array(a.target_lps_mm),
                            np.array(b.entry_lps_mm), np.array(b.target_lps_mm)) < clash_mm


def sides_for(preset: Preset) -> tuple[str, ...]:
    """The sides a preset plans: both sides for bilateral, its own side otherwise."""
    if preset.in_plane:
        return ("both",)
    if preset.bilateral:
        return ("left", "right")
    return (preset.side,)


__all__ = (
    "PlacementError", "PathMetrics", "CandidateSet", "SkinSurface", "PathPlanner", "skin_surface",
    "body_mask", "segment_distance", "pareto_fronts", "farthest_points", "needles_clash", "sides_for",
)

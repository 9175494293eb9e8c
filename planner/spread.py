"""Estimated injectate spread from the needle-tip position (feeds the analgesia estimate).

Evidence: with the anterior approach, a needle tip *above* (cranial to) the celiac artery
origin gave four-quadrant spread in 58% of patients versus 14% below it (Anesthesiology
1997;87:1301); lasting relief at 30 days followed the number of quadrants reached
(9/9 with 4, 10/21 with 3, 0/75 with 2 or fewer; De Cicco 2001).

The rule (an explicit, documented assumption, the same for every approach):

* Quadrants are the four periaortic compartments at the celiac level: left/right of the
  aortic centre line x cranial/caudal of the celiac trunk origin.
* A tip counts only when it is *periaortic*: within ``PERIAORTIC_MM`` (15 mm) of the
  aortic wall. A tip farther away (and not retrocrural, below) reaches at most its own quadrant.
* A periaortic tip covers its own side; it also covers the other side when it is
  pre-aortic (anterior to the aortic centre and within ``PREAORTIC_MM`` of the centre line
  in x), since injectate there crosses in front of the aorta.
* A periaortic tip at or above the celiac origin covers both the cranial and caudal
  compartments of its side(s); a tip below it covers only the caudal ones.
* A *retrocrural* tip (within ``RETROCRURAL_MM`` of the retrocrural space, the
  ``splanchnic_nerve_zone`` of ``planner.targets``) covers the cranial and caudal
  compartments of its side at any level: injectate placed behind the crus spreads
  cranio-caudally along the retrocrural compartment towards the splanchnic
  nerves. This is what makes the classic posterior retrocrural technique work as well as the transcrural and
  splanchnic ones (randomised, n=61: Ischia et al., Anesthesiology 1992;76:534).
* ``p_four_quadrants`` is 0.58 when some periaortic tip lies above the celiac origin,
  else 0.14 (the published figures, applied to all approaches).

Celiac-axis encasement by tumour is reported separately (:func:`celiac_axis_encased`, from
the tumour's contact around the trunk, :func:`celiac_contact_fraction`) and is *not* folded
into the spread, so the analgesia model does not count it twice.
Without a celiac trunk label the reference level is the cranial end of the target region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from planner.distance import CaseGeometry

PERIAORTIC_MM = 15.0
PREAORTIC_MM = 10.0
#: a tip this close to the retrocrural space (splanchnic nerve zone) counts as retrocrural
RETROCRURAL_MM = 3.0
P4_ABOVE, P4_BELOW = 0.58, 0.14
ENCASED_CONTACT_FRACTION = 0.125
#: the celiac trunk proper: this far from its aortic origin (the label also holds its branches)
TRUNK_LENGTH_MM = 20.0
RULE = ("quadrants = periaortic compartments (left/right of the aorta x cranial/caudal of the celiac "
        f"origin); a tip within {PERIAORTIC_MM:g} mm of the aortic wall covers its side (both sides if "
        f"pre-aortic within {PREAORTIC_MM:g} mm of the aortic centre line), cranial+caudal if at or above the "
        "celiac origin else caudal only (a retrocrural tip, in the splanchnic nerve zone, spreads cranio-"
        "caudally: cranial+caudal of its side); a farther tip covers its own compartment only; p(4 quadrants) "
        f"{P4_ABOVE} if a periaortic tip is above the celiac origin else {P4_BELOW} (Anesthesiology 1997;87:1301)")


@dataclass(frozen=True)
class Spread:
    """Estimated injectate spread of a set of needle tips."""

    quadrants: int
    rule: str
    p_four_quadrants: float | None
    tip_above_celiac: bool | None
    covered: tuple[str, ...]
    reference: str
    reference_z_mm: float | None

    def to_dict(self) -> dict[str, object]:
        return {"quadrants": self.quadrants, "rule": self.rule, "p_four_quadrants": self.p_four_quadrants,
                "tip_above_celiac": self.tip_above_celiac, "covered": list(self.covered),
                "reference": self.reference,
                "reference_z_mm": None if self.reference_z_mm is None else round(self.reference_z_mm, 2)}


def celiac_origin_lps(geometry: CaseGeometry) -> np.ndarray | None:
    """LPS centre of the celiac trunk voxels touching the aorta (its origin), or ``None``."""
    if not (geometry.has("celiac_trunk") and geometry.has("aorta")):
        return None
    trunk = geometry.mask("celiac_trunk")
    near = ndi.binary_dilation(geometry.mask("aorta"), structure=np.ones((3, 3, 3), bool), iterations=1)
    touching = trunk & near
    idx = np.argwhere(touching if touching.any() else trunk)
    return geometry.labels.index_to_lps(idx.mean(axis=0))


def estimate_spread(geometry: CaseGeometry, tips_lps: Sequence[Sequence[float]], target: str | None = None
                    ) -> Spread:
    """Expected quadrant coverage of the tips by the rule in the module docstring."""
    tips = [np.asarray(t, dtype=float) for t in tips_lps]
    if not tips or not geometry.has("aorta"):
        return Spread(0, "not applicable: no needle tip or no aorta in the label map", None, None, (), "none", None)
    origin = celiac_origin_lps(geometry)
    reference = "celiac trunk origin"
    ref_z: float | None = None if origin is None else float(origin[2])
    if ref_z is None and target is not None and geometry.has(target):
        idx = np.argwhere(geometry.mask(target))
        ref_z = float(geometry.labels.index_to_lps(idx).max(axis=0)[2])
        reference = f"cranial end of {target}"
    aorta = geometry.distance("aorta")
    amask = geometry.mask("aorta")
    retrocrural_space = geometry.distance("splanchnic_nerve_zone") if geometry.has("splanchnic_nerve_zone") else None
    covered: set[str] = set()
    above_any = False
    for tip in tips:
        idx = geometry.labels.lps_to_index(tip)
        z = int(np.clip(round(idx[0]), 0, amask.shape[0] - 1))
        sl = np.argwhere(amask[z])
        if sl.size == 0:
            sl3 = np.argwhere(amask)
            centre = geometry.labels.index_to_lps(sl3.mean(axis=0))
        else:
            centre = geometry.labels.index_to_lps(np.array([z, *sl.mean(axis=0)]))
        side = "left" if tip[0] >= centre[0] else "right"
        above = ref_z is not None and tip[2] >= ref_z
        wall = float(aorta.sample(idx[None, :])[0])
        retrocrural = (retrocrural_space is not None
                       and float(retrocrural_space.sample(idx[None, :])[0]) <= RETROCRURAL_MM)
        if retrocrural:  # spreads along the retrocrural compartment of its side
            covered.update((f"{side}-cranial", f"{side}-caudal"))
            continue
        if wall > PERIAORTIC_MM:
            covered.add(f"{side}-{'cranial' if above else 'caudal'}")
            continue
        above_any |= above
        sides = {side}
        if tip[1] < centre[1] and abs(tip[0] - centre[0]) <= PREAORTIC_MM:
            sides = {"left", "right"}
        rows = ("cranial", "caudal") if above else ("caudal",)
        covered.update(f"{s}-{r}" for s in sides for r in rows)
    return Spread(quadrants=len(covered), rule=RULE, p_four_quadrants=P4_ABOVE if above_any else P4_BELOW,
                  tip_above_celiac=None if ref_z is None else bool(above_any), covered=tuple(sorted(covered)),
                  reference=reference, reference_z_mm=ref_z)


def celiac_contact_fraction(geometry: CaseGeometry) -> float | None:
    """Fraction of the celiac trunk's circumference in contact with tumour (0..1).

    The trunk's axis is the principal direction of its voxels. In each voxel-thick section
    along it, the tumour voxels within ``trunk radius + 2 voxels`` of the axis cover the
    circle except for the largest angular gap between them; the fraction is the median
    over the sections of the trunk (robust to the main mass touching one side only).
    ``None`` without both a tumour and a celiac trunk label.
    """
    if not (geometry.has("tumour") and geometry.has("celiac_trunk")):
        return None
    labels = geometry.labels
    trunk = labels.index_to_lps(np.argwhere(geometry.mask("celiac_trunk")).astype(float))
    origin = celiac_origin_lps(geometry)
    if origin is not None:  # the trunk proper: the first TRUNK_LENGTH_MM from the aorta, not its branches
        trunk = trunk[np.linalg.norm(trunk - origin, axis=1) <= TRUNK_LENGTH_MM] if (
            np.linalg.norm(trunk - origin, axis=1) <= TRUNK_LENGTH_MM).any() else trunk
    centre = trunk.mean(axis=0)
    if origin is not None and np.linalg.norm(centre - origin) > 1e-6:
        axis = (centre - origin) / np.linalg.norm(centre - origin)
    elif trunk.shape[0] >= 2:
        axis = np.linalg.svd(trunk - centre, full_matrices=False)[2][0]
    else:
        axis = np.array([0.0, -1.0, 0.0])
    t_trunk = (trunk - centre) @ axis
    perp = (trunk - centre) - np.outer(t_trunk, axis)
    voxel = max(labels.spacing)
    radius = float(np.median(np.linalg.norm(perp, axis=1))) + 0.5 * voxel
    tumour = labels.index_to_lps(np.argwhere(geometry.mask("tumour")).astype(float))
    rel = tumour - centre
    t = rel @ axis
    u = rel - np.outer(t, axis)
    near = ((t >= t_trunk.min() - 0.5 * voxel) & (t <= t_trunk.max() + 0.5 * voxel)
            & (np.linalg.norm(u, axis=1) <= radius + 2.0 * voxel))
    if not near.any():
        return 0.0
    e1 = np.cross(axis, [0.0, 0.0, 1.0] if abs(axis[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    phi = np.arctan2(u[near] @ e2, u[near] @ e1)
    section = np.floor((t[near] - t_trunk.min()) / voxel + 0.5).astype(int)
    n_sections = int(np.floor((t_trunk.max() - t_trunk.min()) / voxel + 0.5)) + 1
    cover = np.zeros(max(n_sections, 1))
    for k in range(cover.size):
        angles = np.sort(phi[section == k])
        if angles.size < 2:
            continue
        gaps = np.diff(np.r_[angles, angles[0] + 2 * np.pi])
        cover[k] = 1.0 - float(gaps.max()) / (2 * np.pi)
    return float(np.median(cover))


def celiac_axis_encased(geometry: CaseGeometry) -> bool | None:
    """Tumour involves the celiac axis: it is in contact with at least
    ``ENCASED_CONTACT_FRACTION`` (45 degrees) of the trunk's circumference, so that a single
    touching voxel does not count. The measured fraction is stored in plans as well, for a
    stricter reading (the radiological "encasement" is > 180 degrees, i.e. > 0.5).

    ``None`` when the label map has no tumour (or no celiac trunk): not assessable.
    """
    fraction = celiac_contact_fraction(geometry)
    return None if fraction is None else bool(fraction >= ENCASED_CONTACT_FRACTION)

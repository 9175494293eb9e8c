"""Estimated injectate spread from the needle-tip position (feeds the analgesia estimate).

Evidence: with the anterior approach, a needle tip *above* (cranial to) the celiac artery
origin gave four-quadrant spread in 58% of patients versus 14% below it (Anesthesiology
1997;87:1301); lasting relief at 30 days followed the number of quadrants reached
(9/9 with 4, 10/21 with 3, 0/75 with 2 or fewer; De Cicco 2001).

The rule (an explicit, documented assumption, the same for every approach):

* Quadrants are the four periaortic compartments at the celiac level: left/right of the
  aortic centre line x cranial/caudal of the celiac trunk origin.
* A tip counts only when it is *periaortic*: within ``PERIAORTIC_MM`` (15 mm) of the
  aortic wall. A tip farther away reaches at most its own quadrant.
* A periaortic tip covers its own side; it also covers the other side when it is
  pre-aortic (anterior to the aortic centre and within ``PREAORTIC_MM`` of the centre line
  in x), since injectate there crosses in front of the aorta.
* A periaortic tip at or above the celiac origin covers both the cranial and caudal
  compartments of its side(s); a tip below it covers only the caudal ones.
* ``p_four_quadrants`` is 0.58 when some periaortic tip lies above the celiac origin,
  else 0.14 (the published figures, applied to all approaches).

Celiac-axis encasement by tumour is reported separately (:func:`celiac_axis_encased`) and
is *not* folded into the spread, so the analgesia model does not count it twice.
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
P4_ABOVE, P4_BELOW = 0.58, 0.14
ENCASED_CONTACT_FRACTION = 0.4
RULE = ("quadrants = periaortic compartments (left/right of the aorta x cranial/caudal of the celiac "
        f"origin); a tip within {PERIAORTIC_MM:g} mm of the aortic wall covers its side (both sides if "
        f"pre-aortic within {PREAORTIC_MM:g} mm of the aortic centre line), cranial+caudal if at or above the "
        "celiac origin else caudal only; a farther tip covers its own compartment only; p(4 quadrants) "
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
    """Fraction of the celiac trunk's surface voxels touching tumour; ``None`` without both labels."""
    if not (geometry.has("tumour") and geometry.has("celiac_trunk")):
        return None
    trunk = geometry.mask("celiac_trunk")
    surface = trunk & ~ndi.binary_erosion(trunk, structure=ndi.generate_binary_structure(3, 1))
    near_tumour = ndi.binary_dilation(geometry.mask("tumour"), structure=np.ones((3, 3, 3), bool))
    return float((surface & near_tumour).sum() / max(int(surface.sum()), 1))


def celiac_axis_encased(geometry: CaseGeometry) -> bool | None:
    """Tumour encases the celiac axis: it touches at least ``ENCASED_CONTACT_FRACTION`` of the
    trunk's surface (a voxel stand-in for > 180 degrees of circumferential contact).

    ``None`` when the label map has no tumour (or no celiac trunk): not assessable.
    """
    fraction = celiac_contact_fraction(geometry)
    return None if fraction is None else bool(fraction >= ENCASED_CONTACT_FRACTION)

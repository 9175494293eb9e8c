"""Signed distance maps against shapes whose distances are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.distance import CaseGeometry, check_same_grid, sample_trilinear, signed_distance_mm
from planner.errors import PlanError
from planner.volume import Volume
from tests._planning_shapes import grid


def _sphere_case(spacing, centre=(2.3, -4.1, 1.7), radius=10.4, shape=(41, 71, 61)):
    origin = (-spacing[2] * (shape[2] // 2), -spacing[1] * (shape[1] // 2), -spacing[0] * (shape[0] // 2))
    x, y, z = grid(shape, spacing, origin)
    r = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    lab = np.zeros(shape, dtype=np.int16)
    lab[r <= radius] = label_of("kidney_left")
    vol = Volume(array=lab, spacing=spacing, origin=origin)
    return vol, np.asarray(centre), radius


@pytest.mark.parametrize("spacing", [(0.9, 0.6, 0.75), (1.0, 0.7, 0.5)])
def test_sphere_clearance_exact_within_half_mm_on_anisotropic_grid(spacing):
    vol, centre, radius = _sphere_case(spacing)
    sd = signed_distance_mm(vol.array > 0, spacing)
    rng = np.random.default_rng(3)
    idx = rng.random((5000, 3)) * (np.asarray(vol.shape) - 1)
    lps = vol.index_to_lps(idx)
    exact = np.linalg.norm(lps - centre, axis=1) - radius
    got = sample_trilinear(sd, idx)
    sel = (exact > 0.5) & (exact < 15)  # clearances (outside); the grid is 12+ mm around the sphere
    assert sel.sum() > 1000
    assert np.abs(got[sel] - exact[sel]).max() <= 0.5
    inside = exact < -1.0
    assert (got[inside] < 0).all()


def test_cylinder_along_z_on_coarse_slices():
    """An infinite cylinder along z: the coarse slice spacing must not matter at all."""
    spacing = (3.0, 0.7, 0.8)
    shape = (21, 81, 71)
    origin = (-28.0, -28.0, -30.0)
    x, y, _ = grid(shape, spacing, origin)
    r = np.hypot(x - 1.3, y + 2.2)
    mask = r <= 8.3
    sd = signed_distance_mm(mask, spacing)
    sel = (r - 8.3 > 0.5) & (r - 8.3 < 15)
    assert np.abs(sd[sel] - (r[sel] - 8.3)).max() <= 0.5


def test_empty_and_full_masks():
    assert np.isposinf(signed_distance_mm(np.zeros((3, 4, 5), bool), (1, 1, 1))).all()
    assert np.isneginf(signed_distance_mm(np.ones((3, 4, 5), bool), (1, 1, 1))).all()


def test_case_geometry_caches_crops_and_caps_far_values():
    vol, centre, radius = _sphere_case((1.0, 0.8, 0.8), shape=(60, 120, 110))
    geo = CaseGeometry(labels=vol, max_distance_mm=12.0)
    d = geo.distance("kidney_left")
    assert geo.distance("kidney_left") is d  # cached
    assert d.array.size < vol.array.size  # stored on a crop
    far = vol.lps_to_index(centre + np.array([0.0, 0.0, 28.0]))
    near = vol.lps_to_index(centre + np.array([radius + 5.0, 0.0, 0.0]))
    values = d.sample(np.stack([far, near]))
    assert values[0] == pytest.approx(12.0)
    assert values[1] == pytest.approx(5.0, abs=0.5)
    slack = geo.combined({"kidney_left": 3.0})
    assert sample_trilinear(slack, near[None, :])[0] == pytest.approx(2.0, abs=0.5)
    assert geo.combined({"kidney_left": 3.0}) is slack
    assert geo.present() == {"kidney_left": int((vol.array > 0).sum())}


def test_missing_structure_and_grid_mismatch_are_plan_errors():
    vol, _, _ = _sphere_case((1.0, 1.0, 1.0), shape=(30, 30, 30))
    geo = CaseGeometry(labels=vol)
    with pytest.raises(PlanError, match="aorta"):
        geo.distance("aorta")
    other = Volume(array=vol.array, spacing=(2.0, 1.0, 1.0), origin=vol.origin)
    with pytest.raises(PlanError, match="different grid"):
        check_same_grid(vol, other)
    with pytest.raises(PlanError, match="different grid"):
        CaseGeometry(labels=other, image=vol.with_array(np.zeros(vol.shape, np.float32)))

"""Trajectory search, constraints, ranking and robustness on analytic label maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.distance import CaseGeometry
from planner.errors import PlanError
from planner.presets import get_preset, load_presets, preset_names
from planner.trajectory import (PathPlanner, farthest_points, pareto_fronts, segment_distance, sides_for,
                                skin_surface)
from planner.volume import Volume
from tests._planning_shapes import AORTA_CENTRE, AORTA_RADIUS, grid, torso, volumes


@pytest.fixture(scope="module")
def case():
    image, labels = torso()
    return image, labels, CaseGeometry(labels=labels, image=image)


@pytest.fixture(scope="module")
def retro(case):
    return PathPlanner(case[2], "celiac_posterior_retrocrural_test")


@pytest.fixture(scope="module", autouse=True)
def _torso_presets(monkeypatch_module):
    """The torso has only a celiac target: run the retrocrural rules against it."""
    import planner.presets as presets

    bundled = dict(presets._bundled())
    base = bundled["celiac_posterior_retrocrural"]
    bundled["celiac_posterior_retrocrural_test"] = dataclasses.replace(
        base, name="celiac_posterior_retrocrural_test", target="celiac_plexus_region", entry_from_midline_mm=None)
    bundled["celiac_transcrural_test"] = dataclasses.replace(
        bundled["celiac_transcrural"], name="celiac_transcrural_test", entry_from_midline_mm=None)
    monkeypatch_module.setattr(presets, "_bundled", lambda: bundled)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ----------------------------------------------------------------------------- exact clearances
def _obstacle_case():
    """Sphere (kidney_left) and z-cylinder (aorta) in a box body, on an anisotropic grid."""
    spacing = (1.0, 0.6, 0.8)
    shape = (61, 121, 101)
    origin = (-40.0, -36.0, -30.0)
    x, y, z = grid(shape, spacing, origin)
    lab = np.zeros(shape, dtype=np.int16)
    lab[(np.abs(x) < 38.0) & (np.abs(y) < 34.0)] = label_of("body")
    sphere_c, sphere_r = np.array([12.3, -6.1, 1.4]), 9.2
    cyl_c, cyl_r = np.array([-14.6, 8.3]), 6.4
    lab[np.sqrt((x - sphere_c[0]) ** 2 + (y - sphere_c[1]) ** 2 + (z - sphere_c[2]) ** 2) <= sphere_r] = label_of("kidney_left")
    lab[np.hypot(x - cyl_c[0], y - cyl_c[1]) <= cyl_r] = label_of("aorta")
    lab[np.sqrt(x ** 2 + (y - 25.0) ** 2 + z ** 2) <= 4.0] = label_of("celiac_plexus_region")
    image, labels = volumes(lab, spacing, origin)
    return image, labels, (sphere_c, sphere_r), (cyl_c, cyl_r)


def _point_segment_distance(p, a, b):
    ab = b - a
    t = np.clip((p - a) @ ab / (ab @ ab), 0, 1)
    return float(np.linalg.norm(a + t * ab - p))


def _line_axis_distance_2d(a, b, c):
    """Distance in the axial plane from the z-axis line through c to segment a-b (exact)."""
    ts = np.linspace(0, 1, 20001)
    pts = a[None, :2] + ts[:, None] * (b - a)[None, :2]
    return float(np.min(np.linalg.norm(pts - c[None, :], axis=1)))


def test_clearances_equal_exact_values_on_anisotropic_grid():
    image, labels, (sc, sr), (cc, cr) = _obstacle_case()
    planner = PathPlanner(CaseGeometry(labels=labels, image=image), "celiac_anterior")
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        a = rng.uniform([-28, -34, -20], [28, -30, 20])
        b = rng.uniform([-20, 15, -15], [20, 30, 15])
        m = planner.evaluate(a, b, robustness=False)
        exact_sphere = _point_segment_distance(sc, a, b) - sr
        exact_cyl = _line_axis_distance_2d(a, b, cc) - cr
        if 0.5 < exact_sphere < 20:
            assert m.min_clearance_mm["kidney_left"] == pytest.approx(exact_sphere, abs=0.5)
            checked += 1
        if 0.5 < exact_cyl < 20:
            assert m.min_clearance_mm["aorta"] == pytest.approx(exact_cyl, abs=0.5)
            checked += 1
    assert checked >= 30


def test_path_through_forbidden_structure_is_rejected():
    image, labels, (sc, _), _ = _obstacle_case()
    planner = PathPlanner(CaseGeometry(labels=labels, image=image), "celiac_anterior")
    through = planner.evaluate(np.array([sc[0], -35.0, sc[2]]), np.array([0.0, 25.0, 0.0]), robustness=False)
    assert not through.feasible
    assert "kidney_left" in through.structures_crossed
    assert any("crosses kidney_left" in r for r in through.reasons)
    assert through.min_clearance_mm["kidney_left"] < 0


# ----------------------------------------------------------------------------- presets
def test_presets_are_data_and_validated(tmp_path):
    names = preset_names()
    for required in ("celiac_posterior_retrocrural", "celiac_transcrural", "celiac_transaortic",
                     "celiac_anterior", "superior_hypogastric_posterior", "splanchnic",
                     "supraclavicular_us_inplane"):
        assert required in names
    assert get_preset("celiac_posterior_retrocrural").bilateral
    assert get_preset("celiac_transaortic").crossable == ("aorta", "diaphragm_crura")
    assert get_preset("celiac_posterior_retrocrural").crossable == ()
    assert get_preset("celiac_transcrural").needle_lengths_mm == (100.0, 150.0, 200.0)
    assert get_preset("celiac_anterior").patient_position == "supine"
    with pytest.raises(PlanError, match="unknown procedure preset 'nope'"):
        get_preset("nope")
    bad = tmp_path / "presets.json"
    bad.write_text('{"version": 1, "defaults": {}, "presets": {"x": {"procedure": "p"}}}')
    with pytest.raises(PlanError, match="malformed"):
        load_presets(bad)
    bad.write_text('{"version": 9, "presets": {}}')
    with pytest.raises(PlanError, match="version"):
        load_presets(bad)


def _crus_slab_case():
    """A body box whose target lies anterior to a crus slab spanning the whole back."""
    spacing = (2.0, 1.0, 1.5)
    shape = (31, 131, 81)
    origin = (-60.0, -65.0, -30.0)
    x, y, z = grid(shape, spacing, origin)
    lab = np.zeros(shape, dtype=np.int16)
    lab[(np.abs(x) < 55.0) & (np.abs(y) < 60.0)] = label_of("body")
    lab[(np.abs(x) < 55.0) & (y >= 10.0) & (y <= 20.0)] = label_of("diaphragm_crura")
    lab[np.sqrt(x ** 2 + (y + 10.0) ** 2 + z ** 2) <= 5.0] = label_of("celiac_plexus_region")
    return volumes(lab, spacing, origin)


def test_crus_crossable_only_in_transcrural_preset():
    """A path through the crus: rejected by the retrocrural rules, allowed by transcrural."""
    image, labels = _crus_slab_case()
    geometry = CaseGeometry(labels=labels, image=image)
    retro = PathPlanner(geometry, "celiac_posterior_retrocrural_test")
    trans = PathPlanner(geometry, "celiac_transcrural_test")
    entry, target = np.array([20.0, 59.5, 0.0]), np.array([0.0, -10.0, 0.0])
    m_t = trans.evaluate(entry, target, robustness=False)
    m_r = retro.evaluate(entry, target, robustness=False)
    assert "diaphragm_crura" in m_t.structures_crossed
    assert m_t.feasible, m_t.reasons
    assert not m_r.feasible
    assert any("crosses diaphragm_crura" in r for r in m_r.reasons)
    # the full search agrees: every posterior path crosses the slab
    assert trans.search("left", n_targets=8).feasible.any()
    assert not retro.search("left", n_targets=8).feasible.any()


# ----------------------------------------------------------------------------- search
def test_search_prone_posterior_entries_and_consistency_with_evaluate(case, retro):
    _, labels, _ = case
    cands = retro.search("left", n_targets=16)
    assert cands.n_paths == cands.n_entries * cands.n_targets
    assert (cands.entry_lps[:, 1] > 0).all()  # prone: posterior skin only (+y in LPS)
    assert (cands.entry_lps[:, 0] > retro.midline_x).all()  # left side
    assert cands.feasible.any()
    counts = cands.reason_counts()
    assert sum(counts.values()) == cands.n_paths
    rows = retro.rank(cands, k=5)
    assert 1 <= rows.size <= 5
    entries = cands.entry_lps[rows]
    gaps = np.linalg.norm(entries[:, None] - entries[None, :], axis=2)
    assert (gaps[np.triu_indices(len(rows), 1)] >= 10.0).all()  # diverse top-k
    for row in rows:
        m = retro.evaluate(cands.entry_lps[row], cands.target_lps[row])
        assert m.feasible, m.reasons
        assert m.length_mm == pytest.approx(cands.length_mm[row])
        assert m.min_slack_mm == pytest.approx(float(cands.min_slack_mm[row]), abs=0.05)
        assert m.tip_in_target
        assert m.gantry_angle_deg <= 25.0
        assert 0.0 <= m.p_oar_contact <= 1.0
        for name, margin in m.margins_mm.items():
            assert m.min_clearance_mm[name] >= margin - 0.05


def test_angles_are_geometric(case, retro):
    entry = np.array([60.0, 105.0, 30.0])
    target = np.array([30.0, 5.0, 0.0])
    m = retro.evaluate(entry, target, robustness=False)
    u = (target - entry) / np.linalg.norm(target - entry)
    assert m.gantry_angle_deg == pytest.approx(np.degrees(np.arcsin(abs(u[2]))), abs=1e-6)
    assert m.cranial_angle_deg < 0  # heading caudally
    assert m.sagittal_angle_deg == pytest.approx(np.degrees(np.arcsin(abs(u[0]))), abs=1e-6)
    assert m.length_mm == pytest.approx(np.linalg.norm(target - entry))
    assert m.side == "left"
    assert m.entry_from_midline_mm == pytest.approx(60.0 - retro.midline_x)


def test_sagittal_angle_range_is_a_hard_constraint(case):
    """A preset's ``sagittal_angle_deg`` range rejects steeper and flatter paths, in the
    search and in ``evaluate`` alike (the retrocrural technique's 26-36 deg, with slack)."""
    _, _, geometry = case
    base = get_preset("celiac_posterior_retrocrural_test")
    assert base.sagittal_angle_deg is not None  # inherited from the bundled preset
    free = PathPlanner(geometry, dataclasses.replace(base, sagittal_angle_deg=None))
    narrow = PathPlanner(geometry, dataclasses.replace(base, sagittal_angle_deg=(25.0, 35.0)))
    c_free, c_narrow = free.search("left", n_targets=8), narrow.search("left", n_targets=8)
    assert c_narrow.feasible.sum() < c_free.feasible.sum()
    feasible = c_narrow.feasible
    sag = np.degrees(np.arcsin(np.abs(c_narrow.target_lps[:, 0] - c_narrow.entry_lps[:, 0]) / c_narrow.length_mm))
    assert feasible.any() and ((sag[feasible] >= 25.0 - 1e-4) & (sag[feasible] <= 35.0 + 1e-4)).all()
    assert c_narrow.reason_counts()["angle to the sagittal plane outside the preset range"] > 0
    row = int(np.argmin(np.where(c_free.feasible, sag, np.inf)))  # a feasible path below 25 deg
    assert sag[row] < 25.0
    m = narrow.evaluate(c_free.entry_lps[row], c_free.target_lps[row], robustness=False)
    assert not m.feasible and any("sagittal plane" in r for r in m.reasons)
    with pytest.raises(PlanError, match="sagittal_angle_deg"):
        from planner.presets import _validate

        _validate("bad", {**base.to_dict(), "modality": "CT", "entry_direction_lps": [0, 1, 0],
                          "entry_cone_deg": 50, "weights": {}, "min_entry_separation_mm": 10,
                          "sample_step_mm": 1.0, "sagittal_angle_deg": [40, 20]})


def test_skin_normals_point_outwards(case):
    _, _, geometry = case
    skin = skin_surface(geometry)
    radial = skin.lps[:, :2] / np.linalg.norm(skin.lps[:, :2], axis=1, keepdims=True)
    assert np.median((skin.normals[:, :2] * radial).sum(axis=1)) > 0.9


def test_placement_error_raises_contact_probability_near_an_organ(case, retro):
    entry = np.array([42.5, 105.0, 0.0])
    far = retro.evaluate(entry, np.array([45.0, 5.0, 0.0]))
    # the same direction, tip stopping 2 mm short of the aortic wall (depth overshoot risk)
    wall_x = AORTA_CENTRE[0] + AORTA_RADIUS
    near = retro.evaluate(np.array([wall_x + 2.0, 105.0, 0.0]), np.array([wall_x + 2.0, 5.0 - 0.0, 0.0]))
    assert far.p_oar_contact <= near.p_oar_contact
    assert near.p_oar_contact_lateral > 0.1  # the shaft runs 2 mm beside the aorta
    assert 0.0 <= far.p_oar_contact_depth <= 1.0
    assert near.lateral_error_mean_mm == pytest.approx(3.06, abs=0.4)  # Rayleigh mean of sd 2.44
    assert near.depth_error_mean_mm == pytest.approx(1.95, abs=0.35)
    # deterministic: the same path gives the same probabilities (fixed random numbers)
    again = retro.evaluate(np.array([wall_x + 2.0, 105.0, 0.0]), np.array([wall_x + 2.0, 5.0, 0.0]))
    assert again.p_oar_contact == near.p_oar_contact


def test_depth_error_probability_is_analytic():
    """A tip 2.44 mm (one sd) in front of a wall: P(overshoot) = 1 - Phi(1) = 0.159."""
    spacing = (1.0, 0.5, 0.5)
    shape = (21, 161, 81)
    origin = (-20.0, -40.0, -10.0)
    x, y, z = grid(shape, spacing, origin)
    lab = np.zeros(shape, dtype=np.int16)
    lab[(np.abs(x) < 9.0) & (y > -38.0)] = label_of("body")
    lab[y >= 30.0] = label_of("aorta")  # a wall at y = 30 - 0.25 (halfway boundary)
    lab[(np.abs(x) < 3) & (np.abs(y - 20) < 3) & (np.abs(z) < 3)] = label_of("celiac_plexus_region")
    image, labels = volumes(lab, spacing, origin)
    planner = PathPlanner(CaseGeometry(labels=labels, image=image), "celiac_anterior")
    wall = 29.75
    m = planner.evaluate(np.array([0.0, -35.0, 0.0]), np.array([0.0, wall - 2.44, 0.0]))
    assert m.p_oar_contact_depth == pytest.approx(0.1587, abs=0.03)


# ----------------------------------------------------------------------------- helpers
def test_segment_distance_cases():
    o = np.zeros(3)
    assert segment_distance(o, np.array([10.0, 0, 0]), np.array([5.0, 3, 0]), np.array([5.0, 3, 10])) == pytest.approx(3.0)
    assert segment_distance(o, np.array([1.0, 0, 0]), np.array([3.0, 0, 0]), np.array([4.0, 0, 0])) == pytest.approx(2.0)
    assert segment_distance(o, np.array([0, 0, 1.0]), np.array([1.0, 1, 0]), np.array([1.0, 1, 0])) == pytest.approx(np.sqrt(2))


def test_pareto_fronts_and_farthest_points():
    obj = np.array([[1, 1, 1], [2, 2, 2], [0, 3, 1], [1, 1, 1], [3, 0, 0]], dtype=float)
    assert pareto_fronts(obj).tolist() == [0, 1, 0, 0, 0]
    pts = np.array([[0, 0, 0], [0.1, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=float)
    chosen = set(farthest_points(pts, 3, seed=0).tolist())
    assert {2, 3} <= chosen


def test_sides_for_presets():
    assert sides_for(get_preset("celiac_posterior_retrocrural")) == ("left", "right")
    assert sides_for(get_preset("celiac_transaortic")) == ("left",)
    assert sides_for(get_preset("supraclavicular_us_inplane")) == ("both",)


# ----------------------------------------------------------------------------- errors
def test_empty_target_and_out_of_reach_are_plan_errors(case):
    image, labels, _ = case
    _, no_target = torso(with_target=False)
    with pytest.raises(PlanError, match="empty"):
        PathPlanner(CaseGeometry(labels=no_target, image=image), "celiac_posterior_retrocrural_test")
    short = dataclasses.replace(get_preset("celiac_posterior_retrocrural_test"), needle_lengths_mm=(40.0,))
    planner = PathPlanner(CaseGeometry(labels=labels, image=image), short)
    with pytest.raises(PlanError, match="out of reach"):
        planner.search("left")


# ----------------------------------------------------------------------------- ultrasound 2D
def test_ultrasound_in_plane_entries_at_probe_edges_and_visibility():
    spacing = (1.0, 0.1, 0.1)
    shape = (1, 300, 400)  # 30 mm deep, 40 mm wide
    x, y, _ = grid(shape, spacing, (0.0, 0.0, 0.0))
    lab = np.zeros(shape, dtype=np.int16)
    lab[np.hypot(x - 24.0, y - 14.0) <= 3.0] = label_of("brachial_plexus")
    lab[np.hypot(x - 12.0, y - 7.0) <= 3.5] = label_of("blood_vessel")  # on the line from the x=0 edge
    us = Volume(array=np.zeros(shape, np.float32), spacing=spacing, origin=(0.0, 0.0, 0.0), modality="US")
    labels = us.with_array(lab)
    planner = PathPlanner(CaseGeometry(labels=labels, image=us), "supraclavicular_us_inplane")
    cands = planner.search("both", n_targets=12)
    assert np.isin(np.round(cands.entry_lps[:, 0], 3), np.round(np.r_[np.arange(0, 30) * 0.1, 39.9 - np.arange(30)[::-1] * 0.1], 3)).all()
    rows = planner.rank(cands, k=3)
    assert rows.size >= 1
    best = planner.evaluate(cands.entry_lps[rows[0]], cands.target_lps[rows[0]])
    assert best.feasible
    assert best.entry_lps_mm[0] > 35.0  # from the lateral edge away from the vessel, not across it
    assert 0 < best.in_plane_angle_deg < 60
    assert best.needle_visibility == pytest.approx(np.clip((60 - best.in_plane_angle_deg) / 30, 0, 1))
    assert best.gantry_angle_deg is None
    across = planner.evaluate(np.array([0.0, 0.0, 0.0]), np.array([24.0, 14.0, 0.0]), robustness=False)
    assert "blood_vessel" in across.structures_crossed and not across.feasible


def test_ultrasound_cine_is_planned_in_the_frame_showing_the_target():
    from planner.plan import build_plan

    spacing = (1.0, 0.1, 0.1)
    x, y, _ = grid((1, 300, 400), spacing, (0.0, 0.0, 0.0))
    frame = np.zeros((300, 400), dtype=np.int16)
    frame[np.hypot(x[0] - 24.0, y[0] - 14.0) <= 3.0] = label_of("brachial_plexus")
    lab = np.zeros((3, 300, 400), dtype=np.int16)
    lab[1] = frame
    lab[2][np.hypot(x[0] - 24.0, y[0] - 14.0) <= 1.0] = label_of("brachial_plexus")
    us = Volume(array=np.zeros(lab.shape, np.float32), spacing=spacing, origin=(0.0, 0.0, 0.0), modality="US")
    labels = us.with_array(lab)
    with pytest.raises(PlanError, match="one image plane"):
        PathPlanner(CaseGeometry(labels=labels, image=us), "supraclavicular_us_inplane")
    plan = build_plan(us, labels, "supraclavicular_us_inplane")
    assert plan.search["frame"] == 1 and plan.feasible
    assert plan.primary[0].entry_lps_mm[2] == pytest.approx(1.0)  # z of frame 1
    assert plan.spread["quadrants"] == 0 and plan.celiac_axis_encased is None

"""Plans: building, JSON round trip, validation on load, the spread rule and ``plexplan plan``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.cli import main
from planner.distance import CaseGeometry
from planner.errors import PlanError
from planner.plan import PLAN_VERSION, Plan, Trajectory, build_plan
from planner.spread import celiac_axis_encased, estimate_spread
from planner.volume import Volume, save_nifti
from tests._planning_shapes import grid, torso, volumes

PROCEDURE = "celiac_transcrural"  # the torso's target is the antecrural celiac plexus region


@pytest.fixture(scope="module")
def torso_case():
    return torso()


@pytest.fixture(scope="module")
def plan(torso_case):
    image, labels = torso_case
    return build_plan(image, labels, PROCEDURE, case="torso", top_k=3)


def test_bilateral_plan_is_feasible_safe_and_does_not_clash(plan):
    assert plan.bilateral and plan.version == PLAN_VERSION
    primary = plan.primary
    assert [t.side for t in primary] == ["left", "right"]
    for t in primary:
        assert t.feasible and not t.reasons
        for name in ("aorta", "kidney_left", "kidney_right", "inferior_vena_cava", "spinal_canal", "lungs"):
            assert t.min_clearance_mm[name] >= 5.0
        assert t.needle_length_mm in (100.0, 150.0, 200.0)
        assert t.length_mm <= t.needle_length_mm - 10.0
        assert 0.0 <= t.p_oar_contact <= 1.0
    from planner.trajectory import segment_distance

    a, b = primary
    assert segment_distance(np.array(a.entry_lps_mm), np.array(a.target_lps_mm),
                            np.array(b.entry_lps_mm), np.array(b.target_lps_mm)) >= 5.0
    assert plan.celiac_axis_encased is None  # the torso has no tumour label
    assert isinstance(plan.spread["quadrants"], int) and "1997;87:1301" in plan.spread["rule"]


def test_plan_json_round_trip_and_required_keys(plan, tmp_path):
    path = plan.save(tmp_path / "out" / "plan.json")
    data = json.loads(path.read_text())
    for key in ("version", "case", "procedure", "approach", "bilateral", "celiac_axis_encased", "spread",
                "trajectories", "software", "models", "disclaimer"):
        assert key in data
    for t in data["trajectories"]:
        for key in ("entry_lps_mm", "target_lps_mm", "length_mm", "feasible", "min_clearance_mm", "risk",
                    "p_oar_contact", "gantry_angle_deg"):
            assert key in t
    assert data["software"]["version"]
    loaded = Plan.load(path)
    assert loaded.to_dict() == plan.to_dict()
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no temporary left behind


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=99), "unknown plan version 99"),
    (lambda d: d.pop("trajectories"), "missing trajectories"),
    (lambda d: d["trajectories"][0].update(entry_lps_mm=[1, 2]), "entry_lps_mm"),
    (lambda d: d["trajectories"][0].update(feasible="yes"), "feasible"),
    (lambda d: d["trajectories"][0].pop("risk"), "lacks risk"),
    (lambda d: d.update(spread={"quadrants": "four"}), "spread"),
    (lambda d: d.update(celiac_axis_encased="maybe"), "celiac_axis_encased"),
])
def test_malformed_plans_are_plan_errors(plan, tmp_path, mutate, message):
    data = plan.to_dict()
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        Plan.load(path)


def test_unreadable_plan_files(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="not a valid JSON plan"):
        Plan.load(bad)
    with pytest.raises(PlanError, match="cannot read"):
        Plan.load(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(PlanError, match="unknown plan version|JSON object"):
        Plan.load(bad)


def test_trajectory_from_dict_keeps_extra_metrics():
    d = {"entry_lps_mm": [1, 2, 3], "target_lps_mm": [4, 5, 6], "length_mm": 5.2, "feasible": False,
         "min_clearance_mm": {"aorta": 2.0}, "risk": 0.5, "p_oar_contact": None, "gantry_angle_deg": 3.0,
         "skin_angle_deg": 12.0, "reasons": ["crosses aorta"]}
    t = Trajectory.from_dict(d)
    assert t.details["skin_angle_deg"] == 12.0 and t.reasons == ("crosses aorta",)
    assert Trajectory.from_dict(t.to_dict()) == t


def test_build_plan_errors(torso_case):
    image, labels = torso_case
    with pytest.raises(PlanError, match="unknown procedure preset"):
        build_plan(image, labels, "celiac_sideways")
    moved = Volume(array=labels.array, spacing=labels.spacing, origin=(0.0, 0.0, 0.0))
    with pytest.raises(PlanError, match="different grid"):
        build_plan(image, moved, PROCEDURE)
    no_aorta = labels.with_array(np.where(labels.array == label_of("celiac_plexus_region"), label_of("body"),
                                          labels.array).astype(np.int16))
    with pytest.raises(PlanError, match="'celiac_plexus_region' is empty"):  # nothing to derive it from
        build_plan(image, no_aorta, PROCEDURE)


# ----------------------------------------------------------------------------- spread
def _celiac_case(tumour: str | None = None, retrocrural: bool = False):
    spacing = (1.5, 1.0, 1.0)
    shape = (61, 81, 81)
    origin = (-40.0, -40.0, -45.0)
    x, y, z = grid(shape, spacing, origin)
    lab = np.full(shape, label_of("body"), dtype=np.int16)
    lab[np.hypot(x, y) <= 10.0] = label_of("aorta")
    trunk = (np.hypot(x, z) <= 3.0) & (y < -9.0) & (y > -30.0)  # leaves the aorta anteriorly at z = 0
    lab[trunk] = label_of("celiac_trunk")
    if retrocrural:  # retrocrural space beside and behind the aorta, below the celiac origin
        lab[(np.abs(x) >= 11.0) & (np.abs(x) <= 18.0) & (y > 4.0) & (y < 14.0) & (z < -5.0) & (z > -25.0)] = \
            label_of("splanchnic_nerve_zone")
    if tumour == "around":
        r = np.hypot(x, z)
        lab[(r > 3.0) & (r <= 9.0) & (y < -14.0) & (y > -28.0)] = label_of("tumour")
    elif tumour == "away":
        lab[np.sqrt((x - 25) ** 2 + (y + 25) ** 2 + (z + 30) ** 2) <= 6.0] = label_of("tumour")
    _, labels = volumes(lab, spacing, origin)
    return CaseGeometry(labels=labels)


def test_spread_rule_tip_above_celiac_reaches_four_quadrants():
    geo = _celiac_case()
    above = estimate_spread(geo, [(16.0, 0.0, 8.0), (-16.0, 0.0, 8.0)])
    below = estimate_spread(geo, [(16.0, 0.0, -12.0), (-16.0, 0.0, -12.0)])
    assert (above.quadrants, above.p_four_quadrants, above.tip_above_celiac) == (4, 0.58, True)
    assert (below.quadrants, below.p_four_quadrants, below.tip_above_celiac) == (2, 0.14, False)
    preaortic = estimate_spread(geo, [(0.0, -16.0, 6.0)])  # one anterior tip crosses in front of the aorta
    assert preaortic.quadrants == 4
    # bilateral tips in the retrocrural space below the celiac origin spread along the
    # retrocrural compartment: both sides, cranial and caudal
    retro = _celiac_case(retrocrural=True)
    retrocrural = estimate_spread(retro, [(14.0, 8.0, -12.0), (-14.0, 8.0, -12.0)])
    assert retrocrural.quadrants == 4 and retrocrural.tip_above_celiac is False
    assert estimate_spread(retro, [(14.0, 8.0, -12.0)]).covered == ("left-caudal", "left-cranial")
    assert estimate_spread(geo, [(14.0, 8.0, -12.0)]).covered == ("left-caudal",)  # no retrocrural space
    far = estimate_spread(geo, [(35.0, 30.0, 6.0)])
    assert far.quadrants == 1 and far.p_four_quadrants == 0.14
    assert estimate_spread(geo, []).quadrants == 0


def test_celiac_axis_encasement_from_tumour_contact():
    assert celiac_axis_encased(_celiac_case()) is None
    assert celiac_axis_encased(_celiac_case("around")) is True
    assert celiac_axis_encased(_celiac_case("away")) is False


# ----------------------------------------------------------------------------- CLI
def test_cli_plan_writes_plan_json(torso_case, tmp_path, capsys):
    image, labels = torso_case
    img = save_nifti(image, tmp_path / "ct.nii.gz")
    lab = save_nifti(labels, tmp_path / "labels.nii.gz")
    out = tmp_path / "run"
    rc = main(["plan", str(img), "--procedure", PROCEDURE, "--out", str(out), "--labels", str(lab), "--top-k", "2"])
    assert rc == 0
    plan = Plan.load(out / "plan.json")
    assert plan.case == "ct" and plan.procedure == PROCEDURE and len(plan.primary) == 2
    assert plan.models["labels"]["file"] == "labels.nii.gz"
    assert "plan written" in capsys.readouterr().out


def test_cli_plan_errors_are_clear(torso_case, tmp_path, capsys, monkeypatch):
    image, _ = torso_case
    img = save_nifti(image, tmp_path / "ct.nii.gz")
    monkeypatch.setenv("PLANNER_MODELS_DIR", str(tmp_path / "no_models"))  # no CT bundle installed
    assert main(["plan", str(img), "--procedure", PROCEDURE, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no usable CT segmentation model" in err and "--labels" in err
    assert main(["plan", str(img), "--procedure", "nope", "--out", str(tmp_path / "o"), "--labels", str(img)]) == 2
    assert "unknown procedure preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "plan.json").exists()


def test_partial_sleeve_contact_fraction():
    """A tumour sleeve over half the trunk's circumference measures about 0.5."""
    from planner.spread import celiac_contact_fraction

    spacing = (1.0, 1.0, 1.0)
    shape = (61, 81, 81)
    origin = (-40.0, -40.0, -30.0)
    x, y, z = grid(shape, spacing, origin)
    lab = np.full(shape, label_of("body"), dtype=np.int16)
    lab[np.hypot(x, y) <= 10.0] = label_of("aorta")
    lab[(np.hypot(x, z) <= 3.0) & (y < -9.0) & (y > -30.0)] = label_of("celiac_trunk")
    r = np.hypot(x, z)
    lab[(r > 3.0) & (r <= 8.0) & (y < -12.0) & (y > -28.0) & (x > 0)] = label_of("tumour")
    _, labels = volumes(lab, spacing, origin)
    assert celiac_contact_fraction(CaseGeometry(labels=labels)) == pytest.approx(0.5, abs=0.1)


# ----------------------------------------------------------------------------- CT phantoms
def _phantom_plan(tmp_path, name: str, procedure: str = "celiac_posterior_retrocrural") -> dict:
    """Plan a bundled sample case's phantom and return plan.json as written to disk."""
    from segmentation.make_samples import CT_PARAMS, CT_SPACING_MM
    from segmentation.phantom_ct import PhantomParams, make_ct_phantom

    phantom = make_ct_phantom(PhantomParams(**CT_PARAMS[name]), spacing_mm=CT_SPACING_MM)
    plan = build_plan(phantom.image, phantom.labels, procedure, case=name)  # targets derived on the way
    path = plan.save(tmp_path / name / "plan.json")
    return json.loads(path.read_text())


SAFE_FROM = ("aorta", "kidney_left", "kidney_right", "inferior_vena_cava", "spinal_canal", "lungs")


def _check_safe(t: dict) -> None:
    """Feasible, and at least 5 mm from every organ of the acceptance list (absent = far away)."""
    assert t["feasible"], t["reasons"]
    clear = t["min_clearance_mm"]
    for name in SAFE_FROM:
        if name in clear:
            assert clear[name] >= 5.0, (name, clear[name])


def _primary(data: dict) -> list[dict]:
    return [t for t in data["trajectories"] if t["role"] == "primary"]


def test_standard_case_entry_check_is_not_set_by_the_preset():
    """The 5-8 cm entry and 8-15 cm length checks below test the planner, not the preset:
    its hard entry zone and needle reach are wider than the published ranges."""
    from planner.presets import get_preset

    p = get_preset("celiac_posterior_retrocrural")
    lo, hi = p.entry_from_midline_mm
    assert lo <= 45.0 and hi >= 95.0
    assert p.max_path_mm > 150.0


@pytest.mark.slow
def test_standard_phantom_bilateral_celiac_plan_as_published(tmp_path):
    data = _phantom_plan(tmp_path, "celiac_standard")
    primary = _primary(data)
    assert sorted(t["side"] for t in primary) == ["left", "right"]
    midline = data["anatomy"]["midline_x_mm"]
    for t in primary:
        _check_safe(t)
        assert 50.0 <= abs(t["entry_lps_mm"][0] - midline) <= 80.0  # 5-8 cm from the midline
        length = float(np.linalg.norm(np.subtract(t["entry_lps_mm"], t["target_lps_mm"])))
        assert 80.0 <= length <= 150.0 and abs(length - t["length_mm"]) < 0.5  # 8-15 cm
        assert t["entry_lps_mm"][1] > t["target_lps_mm"][1]  # prone: from the back (+y is posterior)
    assert data["celiac_axis_encased"] is None  # no tumour in the standard case
    assert data["spread"]["quadrants"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["celiac_tumour_high_bmi", "superior_hypogastric"])
def test_every_ct_sample_has_a_safe_bilateral_celiac_plan(tmp_path, name):
    """Every CT sample case (phantoms from segmentation.make_samples.CT_PARAMS) gets a feasible
    bilateral posterior celiac plan, both needles >= 5 mm from the acceptance organs."""
    data = _phantom_plan(tmp_path, name)
    primary = _primary(data)
    assert sorted(t["side"] for t in primary) == ["left", "right"], data["warnings"]
    for t in primary:
        _check_safe(t)
        assert 80.0 <= t["length_mm"] <= 150.0
    if name == "celiac_tumour_high_bmi":
        assert data["celiac_axis_encased"] is True
        assert data["anatomy"]["celiac_tumour_contact_fraction"] >= 0.4

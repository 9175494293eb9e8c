"""The plugin's pure helpers (no display): layer data, reader, writers, needle geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_plugin import _layers, _needle
from napari_plugin._reader import get_reader
from napari_plugin._writer import write_labels_nifti, write_labels_seg
from planner import anatomy, reslice
from planner.anatomy import label_of
from planner.errors import LabelMapError, PlannerError
from planner.volume import Volume, load_nifti, save_nifti


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture()
def ct() -> Volume:
    rng = np.random.default_rng(3)
    return Volume(array=rng.integers(-200, 300, size=(6, 20, 24)).astype(np.int16), spacing=(3.0, 0.8, 0.7),
                  origin=(-10.0, 20.0, -300.0), modality="CT")


@pytest.fixture()
def labels(ct: Volume) -> Volume:
    array = np.zeros(ct.shape, np.uint8)
    array[1:4, 5:10, 5:12] = label_of("aorta")
    array[2:5, 12:18, 14:20] = label_of("kidney_left")
    return ct.with_array(array)


# ---------------------------------------------------------------------------- layers
def test_image_layer_is_placed_in_mm(ct):
    data, meta, kind = _layers.image_layer_data(ct, "ct")
    assert kind == "image" and data is ct.array
    assert meta["scale"] == ct.spacing and meta["translate"] == ct.origin_zyx
    assert meta["contrast_limits"] == _layers.CT_WINDOW
    assert meta["metadata"]["volume"] is ct


def test_labels_layer_uses_the_vocabulary_colours_and_names(labels):
    data, meta, kind = _layers.labels_layer_data(labels, "ref")
    assert kind == "labels"
    aorta = label_of("aorta")
    assert meta["colormap"][aorta] == anatomy.structure("aorta").color_float
    assert meta["colormap"][0][3] == 0.0
    assert dict(zip(meta["features"]["index"], meta["features"]["name"]))[aorta] == "aorta"
    assert meta["scale"] == labels.spacing and meta["translate"] == labels.origin_zyx


def test_labels_outside_the_vocabulary_are_refused(labels):
    bad = labels.array.copy()
    bad[0, 0, 0] = 7  # not a vocabulary label
    with pytest.raises(LabelMapError, match="not in the vocabulary"):
        _layers.labels_layer_data(labels.with_array(bad), "bad")


def test_volume_from_layer_restores_a_rotated_grid(labels):
    rotated = Volume(array=labels.array, spacing=labels.spacing, origin=labels.origin, direction=_rotation(20))
    data, meta, _ = _layers.labels_layer_data(rotated, "rot")
    back = _layers.volume_from_layer(data, meta)
    assert back.same_grid(rotated)
    # a foreign layer without our metadata falls back to scale/translate
    plain = _layers.volume_from_layer(data, {"scale": (2.0, 1.0, 1.0), "translate": (5.0, 6.0, 7.0)})
    assert plain.spacing == (2.0, 1.0, 1.0) and plain.origin == (7.0, 6.0, 5.0)


# ---------------------------------------------------------------------------- reader
def test_reader_declines_what_it_does_not_take(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "other.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    for path in ("notes.txt", "other.json", "broken.json", "empty", "missing.nii"):
        assert get_reader(str(tmp_path / path)) is None, path
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "other.json")]) is None
    assert get_reader(12345) is None  # type: ignore[arg-type]


def test_reader_opens_nifti_images_and_label_maps(tmp_path, ct, labels):
    save_nifti(ct, tmp_path / "ct.nii.gz")
    save_nifti(labels, tmp_path / "labels.nii.gz")
    image_reader = get_reader(str(tmp_path / "ct.nii.gz"))
    assert image_reader is not None
    [(data, meta, kind)] = image_reader(str(tmp_path / "ct.nii.gz"))
    assert kind == "image" and meta["name"] == "ct"
    np.testing.assert_allclose(meta["scale"], ct.spacing)
    np.testing.assert_allclose(meta["translate"], ct.origin_zyx)
    [(ldata, lmeta, lkind)] = get_reader(str(tmp_path / "labels.nii.gz"))(str(tmp_path / "labels.nii.gz"))
    assert lkind == "labels"
    np.testing.assert_array_equal(ldata, labels.array)


def test_reader_opens_a_dicom_folder_and_file(tmp_path, ct):
    from planner.dicom_write import write_ct_series

    files = write_ct_series(ct, tmp_path / "series")
    reader = get_reader(str(tmp_path / "series"))
    assert reader is not None
    [(data, meta, kind)] = reader(str(tmp_path / "series"))
    assert kind == "image" and data.shape == ct.shape
    np.testing.assert_allclose(meta["scale"], ct.spacing, atol=1e-4)
    np.testing.assert_allclose(meta["translate"], ct.origin_zyx, atol=1e-4)
    np.testing.assert_allclose(data, ct.array)
    assert meta["metadata"]["volume"].source is not None
    assert get_reader(str(files[0])) is not None


def test_reader_of_a_corrupt_dicom_raises_a_planner_error(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    reader = get_reader(str(bad))
    assert reader is not None
    with pytest.raises(PlannerError):
        reader(str(bad))


# ---------------------------------------------------------------------------- writers
def test_labels_nifti_writer_round_trips_geometry(tmp_path, labels):
    rotated = Volume(array=labels.array, spacing=labels.spacing, origin=labels.origin, direction=_rotation(15))
    data, meta, _ = _layers.labels_layer_data(rotated, "rot")
    [written] = write_labels_nifti(str(tmp_path / "out.nii.gz"), data, meta)
    back = load_nifti(written)
    assert back.same_grid(rotated)
    np.testing.assert_array_equal(back.array, labels.array)


def test_labels_seg_writer_needs_and_references_the_dicom_source(tmp_path, ct, labels):
    from planner.dicom_seg import read_seg
    from planner.dicom_write import write_ct_series
    from planner.volume import load

    with pytest.raises(PlannerError, match="NIfTI"):
        write_labels_seg(str(tmp_path / "x.dcm"), *_layers.labels_layer_data(labels, "l")[:2])
    write_ct_series(ct, tmp_path / "series")
    loaded = load(tmp_path / "series")
    data, meta, _ = _layers.labels_layer_data(loaded.with_array(labels.array), "l")
    [written] = write_labels_seg(str(tmp_path / "seg.dcm"), data, meta)
    back = read_seg(written, loaded)
    np.testing.assert_array_equal(back.array, labels.array)
    assert get_reader(written) is None  # a SEG is opened on its image by the widget


# ---------------------------------------------------------------------------- needle geometry
def test_plane_crossing_and_projection():
    p0, p1 = np.array([0.0, 0.0, 0.0]), np.array([10.0, 20.0, -10.0])
    np.testing.assert_allclose(_needle.plane_crossing(p0, p1, 0, 2.5), [2.5, 5.0, -2.5])
    assert _needle.plane_crossing(p0, p1, 0, 11.0) is None
    assert _needle.plane_crossing(p0, p1, 0, -0.1) is None
    np.testing.assert_allclose(_needle.plane_crossing(p0, p1, 0, 10.0), p1)
    flat = np.array([3.0, 1.0, 1.0]), np.array([3.0, 5.0, 9.0])
    np.testing.assert_allclose(_needle.plane_crossing(*flat, 0, 3.0), [3.0, 3.0, 5.0])
    np.testing.assert_allclose(_needle.projection_on_plane(p0, p1, 0, 4.0), [[4, 0, 0], [4, 20, -10]])


def test_needle_world_matches_the_volume_conversion():
    vol = Volume(array=np.zeros((4, 5, 6)), spacing=(2.0, 1.0, 0.5), origin=(1.0, 2.0, 3.0), direction=_rotation(30))
    entry, target = np.array([10.0, 20.0, 5.0]), np.array([0.0, 5.0, 9.0])
    world = _needle.needle_world(vol, entry, target)
    np.testing.assert_allclose(vol.napari_to_lps(world), [entry, target], atol=1e-9)


def test_needle_basis_is_orthonormal_and_follows_the_needle():
    d, u, v = reslice.needle_basis([0, 0, 0], [3.0, 4.0, 0.0])
    np.testing.assert_allclose(d, [0.6, 0.8, 0.0])
    basis = np.stack([d, u, v])
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    with pytest.raises(ValueError):
        reslice.needle_basis([1, 1, 1], [1, 1, 1])


@pytest.mark.parametrize("deg", [0.0, 25.0])
def test_reslices_sample_the_volume_at_their_patient_positions(deg):
    """On a volume whose value is a linear function of LPS position, trilinear reslices are exact."""
    shape, spacing, origin = (30, 40, 40), (2.0, 1.5, 1.5), (-30.0, -30.0, -30.0)
    grid = Volume(array=np.zeros(shape), spacing=spacing, origin=origin, direction=_rotation(deg))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    lps = grid.index_to_lps(idx)
    coef = np.array([0.5, -1.0, 2.0])
    volume = grid.with_array(lps @ coef)
    entry, target = np.array([-5.0, -8.0, -3.0]), np.array([6.0, 9.0, 8.0])
    along = reslice.reslice_along_needle(volume, entry, target, pixel_mm=1.0, half_width_mm=5.0, margin_mm=2.0)
    tip = reslice.reslice_at_tip(volume, entry, target, pixel_mm=1.0, half_width_mm=5.0)
    for rs in (along, tip):
        rows, cols = np.meshgrid(np.arange(rs.image.shape[0]), np.arange(rs.image.shape[1]), indexing="ij")
        expected = rs.pixel_to_lps(np.stack([rows, cols], axis=-1)) @ coef
        np.testing.assert_allclose(rs.image, expected, atol=1e-6)
    np.testing.assert_allclose(along.pixel_to_lps(along.needle_px), [entry, target], atol=1e-9)
    np.testing.assert_allclose(tip.pixel_to_lps(tip.needle_px[0]), target, atol=1e-9)


def test_reslice_carries_labels_with_nearest_sampling(labels, ct):
    idx = np.argwhere(labels.array == label_of("aorta")).mean(axis=0)
    centre = ct.index_to_lps(idx)
    rs = reslice.reslice_along_needle(ct, centre - [0, 0, 8.0], centre, labels=labels, pixel_mm=0.5,
                                      half_width_mm=3.0, margin_mm=1.0)
    assert rs.labels is not None and rs.labels.dtype == np.int32
    row, col = np.round(rs.needle_px[1]).astype(int)
    assert rs.labels[row, col] == label_of("aorta")
    assert set(np.unique(rs.labels)) <= {0, label_of("aorta"), label_of("kidney_left")}


# ---------------------------------------------------------------------------- sample data
@pytest.mark.slow
def test_every_bundled_sample_opens_as_image_and_reference_labels():
    from napari_plugin import _sample_data
    from planner.samples import case_names

    if not case_names():
        pytest.skip("no sample cases bundled in sample_dicom/ yet")
    for name in case_names():
        (data, meta, kind), (ldata, lmeta, lkind) = getattr(_sample_data, name)()
        assert kind == "image" and lkind == "labels"
        assert tuple(np.shape(ldata)) == tuple(np.shape(data)[:3])
        np.testing.assert_allclose(meta["scale"], lmeta["scale"], atol=1e-4)
        np.testing.assert_allclose(meta["translate"], lmeta["translate"], atol=1e-3)
        assert meta["metadata"]["presets"], name


# ---------------------------------------------------------------------------- plans
def _plan(volume: Volume):
    from planner.plan import Plan, Trajectory, grid_of

    good = Trajectory(entry_lps_mm=(60.0, 110.0, 0.0), target_lps_mm=(20.0, 0.0, 5.0), length_mm=117.2,
                      feasible=True, min_clearance_mm={"aorta": 6.0, "kidney_left": 12.5}, risk=0.1,
                      p_oar_contact=0.02, gantry_angle_deg=3.0, side="left", needle_length_mm=150.0,
                      details={"skin_angle_deg": 12.0, "margins_mm": {"aorta": 5.0, "kidney_left": 5.0}})
    bad = Trajectory(entry_lps_mm=(-60.0, 110.0, 0.0), target_lps_mm=(-20.0, 0.0, 5.0), length_mm=118.0,
                     feasible=False, min_clearance_mm={"aorta": 2.0, "kidney_left": 30.0}, risk=0.6,
                     p_oar_contact=0.5, gantry_angle_deg=2.0, side="right", role="infeasible", rank=2,
                     reasons=("aorta clearance 2.0 mm < margin 5 mm",),
                     details={"margins_mm": {"aorta": 5.0, "kidney_left": 5.0}})
    return Plan(case="demo", procedure="celiac_posterior_retrocrural", approach="posterior retrocrural",
                bilateral=False, celiac_axis_encased=None, spread={"quadrants": 2, "rule": "test rule"},
                trajectories=(good, bad), grid=grid_of(volume))


def test_plan_json_reads_as_needles_on_its_grid_and_writes_back(tmp_path):
    from napari_plugin._reader import read_plan
    from napari_plugin._writer import write_plan
    from planner.plan import Plan

    volume = Volume(array=np.zeros((10, 20, 30)), spacing=(2.0, 1.0, 0.8), origin=(-5.0, 3.0, 40.0),
                    direction=_rotation(10))
    plan = _plan(volume)
    path = plan.save(tmp_path / "plan.json")
    reader = get_reader(str(path))
    assert reader is read_plan
    [(data, meta, kind)] = reader(str(path))
    assert kind == "vectors" and data.shape == (2, 2, 3)
    world = np.stack([data[:, 0], data[:, 0] + data[:, 1]], axis=1)
    for t, segment in zip(plan.trajectories, world):
        np.testing.assert_allclose(volume.napari_to_lps(segment), [t.entry_lps_mm, t.target_lps_mm], atol=1e-3)
    assert meta["edge_color"][0] == _needle.hex_color(True)
    [written] = write_plan(str(tmp_path / "again.json"), data, meta)
    assert Plan.load(written).to_dict()["trajectories"] == plan.to_dict()["trajectories"]
    with pytest.raises(PlannerError, match="carries no plan"):
        write_plan(str(tmp_path / "x.json"), data, {"name": "other", "metadata": {}})


def test_table_and_metrics_text_show_the_planner_numbers():
    from napari_plugin._session import metrics_html, trajectory_table

    plan = _plan(Volume(array=np.zeros((2, 2, 2)), spacing=(1, 1, 1), origin=(0, 0, 0)))
    headers, rows, tips = trajectory_table(plan.trajectories)
    assert headers[:4] == ["#", "Side", "OK", "Length mm"] and "Aorta mm" in headers
    assert rows[0][:5] == ["1", "left", "yes", "117.2", "150"] and rows[1][2] == "NO"
    assert rows[0][headers.index("Aorta mm")] == "6.0" and rows[0][headers.index("Skin °")] == "12"
    assert tips[0] == "Within every hard constraint" and "aorta clearance 2.0" in tips[1]
    text = metrics_html(plan.trajectories[1])
    assert "Breaks a hard constraint" in text and "&lt; margin 5 mm" in text  # escaped, not eaten as a tag
    assert "Aorta 2.0/5" in text and "kidney" not in text.lower().split("clearance mm")[1].split("(+")[0]


def test_outcome_takes_plan_inputs_and_is_labelled_synthetic():
    from napari_plugin._figures import draw_relief_curve
    from napari_plugin._session import PlanningSession, outcome_html
    from planner.analgesia import ClinicalInputs, inputs_from_plan, predict

    volume = Volume(array=np.zeros((2, 2, 2)), spacing=(1, 1, 1), origin=(0, 0, 0))
    session = PlanningSession(image=volume, preset="celiac_posterior_retrocrural", plan=_plan(volume))
    estimate = session.outcome({"ecog": 2, "spread_quadrants": 4, "bilateral": True})
    expected = predict(inputs_from_plan(session.plan.to_dict(), ecog=2))
    assert estimate.inputs["spread_quadrants"] == 2 and estimate.inputs["bilateral"] is False  # from the plan
    assert estimate.median_relief_weeks == expected.median_relief_weeks
    assert "spread_quadrants" in session.inputs_from_plan
    text = outcome_html(estimate)
    assert "synthetic" in text and f"{estimate.median_relief_weeks:.1f} weeks" in text
    weeks, curve = session.relief_curve(estimate)
    assert curve[0] == pytest.approx(1.0) and np.all(np.diff(curve) <= 1e-12)
    from matplotlib.figure import Figure

    draw_relief_curve(Figure(), weeks, curve, estimate)
    no_plan = PlanningSession(image=volume).outcome(ClinicalInputs().to_dict())
    assert no_plan.median_relief_weeks == predict(ClinicalInputs()).median_relief_weeks


# ---------------------------------------------------------------------------- real images
@pytest.mark.shared_data
def test_reader_on_a_real_ct_series_and_a_real_dicom_seg():
    from napari_plugin._session import read_label_map
    from planner.volume import load
    from tests.conftest import shared_path

    folder = shared_path("ct_abdomen_crlm1004", "image")
    assert get_reader(str(shared_path("ct_abdomen_crlm1004", "LICENSE_TCIA_CRLM.txt"))) is None
    [(data, meta, kind)] = get_reader(str(folder))(str(folder))
    volume = meta["metadata"]["volume"]
    assert kind == "image" and data.shape == volume.shape and volume.modality == "CT"
    np.testing.assert_allclose(meta["scale"], volume.spacing)
    np.testing.assert_allclose(meta["translate"], volume.origin_zyx)
    assert meta["contrast_limits"] == _layers.CT_WINDOW

    image = load(shared_path("ct_3slice_seg", "ct-3slice"))
    labels = read_label_map(shared_path("ct_3slice_seg", "liver.dcm"), image)
    ldata, lmeta, lkind = _layers.labels_layer_data(labels, "liver")
    assert lkind == "labels" and ldata.shape == image.shape
    assert label_of("liver") in set(np.unique(ldata)) and lmeta["features"]["name"][1] == "liver"


@pytest.mark.slow
def test_session_adjusted_plan_reevaluates_the_moved_path_and_its_spread(tmp_path):
    from napari_plugin._session import PlanningSession
    from planner.plan import Plan
    from planner.samples import case_names, get_case, load_case
    from planner.spread import estimate_spread

    if "celiac_standard" not in case_names():
        pytest.skip("sample case celiac_standard not bundled")
    image, labels = load_case("celiac_standard")
    session = PlanningSession(image=image, preset=get_case("celiac_standard").presets[0], case="celiac_standard")
    session.set_labels(labels, source={"source": "sample reference", "case": "celiac_standard"})
    plan = session.plan_now()
    assert session.adjusted_plan() is plan  # nothing moved yet
    index = next(i for i, t in enumerate(plan.trajectories) if t.role == "primary")
    session.select(index)
    entry, target = session.current_path_lps()
    moved = session.evaluate_lps(entry, target + [0.0, -6.0, 3.0])
    adjusted = session.adjusted_plan()
    t = adjusted.trajectories[index]
    assert t.target_lps_mm == pytest.approx(tuple(target + [0.0, -6.0, 3.0]), abs=1e-3)  # plans round
    assert t.length_mm == pytest.approx(moved.length_mm, abs=0.01) and t.details["adjusted_in_viewer"] is True
    tips = [p.target_lps_mm for p in adjusted.trajectories if p.role == "primary"]
    expected = estimate_spread(session.path_planner().geometry, tips, target=plan.target).to_dict()
    assert adjusted.spread == expected
    assert adjusted.models["labels"]["source"] == "sample reference"
    assert Plan.load(session.save_plan(tmp_path / "plan.json")).to_dict() == adjusted.to_dict()

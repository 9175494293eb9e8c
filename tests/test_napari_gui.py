"""GUI acceptance: the planning widget drives the whole flow on a sample case in a real viewer.

Run under a display: ``xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest tests/test_napari_gui.py``.
(``QT_QPA_PLATFORM=offscreen`` renders black screenshots: use Xvfb.)
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

napari = pytest.importorskip("napari")

CASE = "celiac_standard"
PLAN_TIMEOUT_MS = 180_000


def _sample_or_skip() -> str:
    from planner.samples import case_names

    if CASE not in case_names():
        pytest.skip(f"sample case {CASE} is not bundled in sample_dicom/")
    return CASE


def _pump(qtbot, seconds: float = 0.3) -> None:
    qtbot.wait(int(seconds * 1000))


@pytest.fixture(scope="module")
def sample():
    """The sample case's image, labels and first suggested preset (as a session, for conversions)."""
    from napari_plugin._session import PlanningSession
    from planner.samples import get_case, load_case

    name = _sample_or_skip()
    image, labels = load_case(name)
    session = PlanningSession(image=image, preset=get_case(name).presets[0], case=name)
    session.set_labels(labels)
    return session


def _open_planned(make_napari_viewer, qtbot, sample, show: bool = False):
    """A viewer with the sample opened through the plugin and the widget holding the plan."""
    from napari_plugin._qt.planning import PlanningWidget

    viewer = make_napari_viewer(show=show)
    viewer.window.resize(1400, 900)
    viewer.open_sample("plexus-planner", sample.case)
    widget = PlanningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Needle planning", area="right")
    return viewer, widget


def test_whole_flow_open_labels_plan_drag_export_reload(make_napari_viewer, qtbot, tmp_path, sample):
    from napari_plugin._qt.planning import HANDLES_LAYER
    from planner.plan import Plan

    viewer, widget = _open_planned(make_napari_viewer, qtbot, sample)
    # open: the image and its reference labels are placed in mm, the case's preset is chosen
    image_layer = viewer.layers[f"{CASE} CT"]
    np.testing.assert_allclose(image_layer.scale, sample.image.spacing)
    np.testing.assert_allclose(image_layer.translate, sample.image.origin_zyx)
    assert widget.preset_combo.currentData() == sample.preset
    assert widget.session is not None and widget.session.labels is not None
    # get labels: load the case's reference DICOM SEG, placed on the image grid
    from planner.samples import get_case

    seg_path = get_case(CASE).seg_path
    if seg_path is not None and seg_path.exists():
        layer = widget.load_labels(seg_path)
        assert widget.labels_combo.currentText() == layer.name
        np.testing.assert_array_equal(widget.session.labels.array, sample.labels.array)
        assert layer.colormap.map(np.array([int(sample.labels.array.max())]))[0][3] == 1.0

    # plan (in a worker thread)
    with qtbot.waitSignal(widget.planned, timeout=PLAN_TIMEOUT_MS):
        widget.plan()
    plan = widget.session.plan
    assert widget.table.rowCount() == len(plan.trajectories) > 0
    assert widget.table.columnCount() > 9  # fixed columns plus a clearance column per organ at risk
    # the live evaluator reproduces the plan's numbers for the plan's own path
    first = plan.trajectories[0]
    again = widget.session.path_planner().evaluate(first.entry_lps_mm, first.target_lps_mm)
    assert again.length_mm == pytest.approx(first.length_mm, abs=0.01)
    assert again.risk == pytest.approx(first.risk, abs=1e-3)
    for name, value in first.min_clearance_mm.items():
        assert again.min_clearance_mm[name] == pytest.approx(value, abs=0.02), name

    # selecting a row shows that trajectory
    widget.table.selectRow(1 if len(plan.trajectories) > 1 else 0)
    shown = plan.trajectories[widget.session.selected]
    handles = viewer.layers[HANDLES_LAYER]
    assert viewer.layers.selection.active is handles and handles.mode == "select"  # ready to drag
    np.testing.assert_allclose(widget.session.to_lps(handles.data), [shown.entry_lps_mm, shown.target_lps_mm],
                               atol=1e-6)

    # move the entry point: metrics follow planner.trajectory.evaluate for the new path
    before = widget.session.current
    moved = np.array(handles.data, float)
    moved[0, 2] += 12.0  # 12 mm along x (patient left-right)
    with qtbot.waitSignal(widget.metrics_changed, timeout=5000):
        handles.data = moved
    entry_lps, target_lps = widget.session.to_lps(moved)
    expected = widget.session.path_planner().evaluate(entry_lps, target_lps)
    now = widget.session.current
    assert now.length_mm == pytest.approx(expected.length_mm) and now.risk == pytest.approx(expected.risk)
    assert now.min_clearance_mm == pytest.approx(expected.min_clearance_mm)
    assert now.p_oar_contact == pytest.approx(expected.p_oar_contact)
    assert now.length_mm != pytest.approx(before.length_mm, abs=1e-3)
    assert f"{expected.length_mm:.1f} mm" in widget.metrics_label.text()
    assert widget.session.is_feasible(now) == expected.feasible
    colour = "#00ffff" if expected.feasible else "#ff0000"
    assert widget._feasible == expected.feasible
    assert viewer.layers["needle projection"].edge_color[0][:3] == pytest.approx(
        np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]), abs=1e-6)

    # a tip dragged into the aorta breaks a hard constraint: the needle turns red
    from planner.anatomy import label_of

    aorta = np.argwhere(sample.labels.array == label_of("aorta")).mean(axis=0)
    into_aorta = np.array(handles.data, float)
    into_aorta[1] = sample.image.index_to_napari(aorta)
    with qtbot.waitSignal(widget.metrics_changed, timeout=5000):
        handles.data = into_aorta
    assert not widget.session.current.feasible and widget._feasible is False
    assert any("aorta" in r for r in widget.session.current.reasons)
    assert viewer.layers["needle projection"].edge_color[0][:3] == pytest.approx([1.0, 0.0, 0.0])
    assert "Breaks a hard constraint" in widget.metrics_label.text()
    with qtbot.waitSignal(widget.metrics_changed, timeout=5000):
        handles.data = moved  # back to the adjusted path that is saved below

    # outcome: planner.analgesia with the plan-derived inputs, labelled as synthetic
    estimate = widget.predict_outcome()
    assert estimate is not None and "synthetic" in estimate.label
    assert "synthetic" in widget.outcome_label.text()

    # export and reload the plan
    path = widget.save_plan(tmp_path / "plan.json")
    saved = Plan.load(path)
    moved_t = saved.trajectories[widget.session.selected]
    np.testing.assert_allclose(moved_t.entry_lps_mm, entry_lps, atol=1e-2)
    assert moved_t.length_mm == pytest.approx(expected.length_mm, abs=0.01)
    assert moved_t.details.get("adjusted_in_viewer") is True
    assert saved.models["labels"] == ({"source": "imported", "file": seg_path.name}
                                      if seg_path is not None and seg_path.exists() else
                                      {"source": "sample reference", "case": CASE, "file": "labels.nii.gz"})
    assert any("adjusted by hand" in w for w in saved.warnings)
    # the procedure report of the adjusted plan (planner.report), written in a worker
    with qtbot.waitSignal(widget.reported, timeout=PLAN_TIMEOUT_MS) as report:
        widget.export_report(tmp_path / "report")
    written = report.args[0]
    assert set(written) == {"plan.json", "report.html", "report.pdf"}
    assert written["report.pdf"].read_bytes()[:5] == b"%PDF-"
    assert f"{expected.length_mm:.1f}" in written["report.html"].read_text()
    assert Plan.load(written["plan.json"]).to_dict()["trajectories"] == saved.to_dict()["trajectories"]

    widget.load_plan(path)
    assert widget.table.rowCount() == len(saved.trajectories)
    assert widget.table.item(widget.session.selected or 0, 3).text() == f"{saved.trajectories[0].length_mm:.1f}"
    # the npe2 reader opens the same file as needles on the image
    layers = viewer.open(str(path), plugin="plexus-planner")
    assert layers and layers[-1].metadata["plan"].to_dict()["trajectories"] == saved.to_dict()["trajectories"]


def _canvas_pixel(viewer, world_zyx: np.ndarray, shot_shape: tuple[int, ...]) -> np.ndarray:
    """Screen (row, col) of a world point in the 2D view (napari pan-zoom camera)."""
    dims = list(viewer.dims.displayed)
    centre = np.asarray(viewer.camera.center)[-2:]
    zoom = viewer.camera.zoom
    canvas = np.asarray(viewer.canvas.size, float)  # (height, width) in logical pixels
    scale = np.asarray(shot_shape[:2], float) / canvas
    rc = (np.asarray(world_zyx, float)[dims] - centre) * zoom + canvas / 2
    return rc * scale


def _hits_along(viewer, path_world: np.ndarray, mask: np.ndarray) -> int:
    """Of 9 points along the segment's projection on screen, how many have needle pixels nearby."""
    a, b = (_canvas_pixel(viewer, p, mask.shape) for p in path_world)
    hits = 0
    for t in np.linspace(0.1, 0.9, 9):
        r, c = np.round(a + t * (b - a)).astype(int)
        hits += bool(mask[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4].any())
    return hits


def _needle_mask(shot: np.ndarray, colour: str, contrast: float = 0.45) -> np.ndarray:
    """Pixels of the needle's hue: its full channels exceed its empty ones by ``contrast``."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) > 127
    d = shot[..., :3].astype(float) / 255.0
    return d[..., rgb].min(axis=-1) - d[..., ~rgb].max(axis=-1) > contrast


def test_needle_is_drawn_in_2d_and_3d(make_napari_viewer, qtbot, sample):
    from napari_plugin import _needle
    from napari_plugin._qt.planning import NEEDLE_LAYER, PROJECTION_LAYER

    viewer, widget = _open_planned(make_napari_viewer, qtbot, sample, show=True)
    # a path of known geometry through the case: any path is drawn, feasible or not
    image = sample.image
    centre = image.index_to_lps((np.asarray(image.shape) - 1) / 2)
    entry, target = centre + [40.0, 90.0, 10.0], centre + [10.0, 0.0, 0.0]
    trajectory = widget.set_path_world(image.lps_to_napari(entry), image.lps_to_napari(target))
    colour = _needle.hex_color(widget.session.is_feasible(trajectory))
    viewer.reset_view()
    _pump(qtbot, 0.5)

    # 2D: needle-coloured pixels along the projection of the needle on the slice
    shot = viewer.screenshot(canvas_only=True, flash=False)
    mask = _needle_mask(shot, colour)
    assert _hits_along(viewer, widget._path, mask) >= 8
    # dragged like a mouse does (Points data changed in place, then the data event): redrawn there
    from napari_plugin._qt.planning import HANDLES_LAYER

    handles = viewer.layers[HANDLES_LAYER]
    handles.data[0, 1:] += (-15.0, 20.0)
    handles.events.data(value=handles.data, action="changed", data_indices=(0,), vertex_indices=((),))
    _pump(qtbot, 0.5)
    np.testing.assert_allclose(widget._path, handles.data)
    colour = _needle.hex_color(widget.session.is_feasible(widget.session.current))
    mask = _needle_mask(viewer.screenshot(canvas_only=True, flash=False), colour)
    assert _hits_along(viewer, widget._path, mask) >= 8
    viewer.layers[PROJECTION_LAYER].visible = False
    _pump(qtbot)
    assert _needle_mask(viewer.screenshot(canvas_only=True, flash=False), colour).sum() < mask.sum() / 4
    viewer.layers[PROJECTION_LAYER].visible = True

    # 3D: the needle itself, a thin straight streak of its colour (over the CT; the label
    # volume is hidden only to keep software rendering under Xvfb fast)
    viewer.layers[f"{CASE} reference labels"].visible = False
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0.0, -50.0, 110.0)
    _pump(qtbot, 0.5)
    shot3 = viewer.screenshot(canvas_only=True, flash=False)
    mask3 = _needle_mask(shot3, colour)
    rows, cols = np.nonzero(mask3)
    assert rows.size > 30, f"only {rows.size} needle-coloured pixels in 3D"
    pts = np.stack([rows, cols], axis=1).astype(float)
    eig = np.linalg.eigvalsh(np.cov((pts - pts.mean(axis=0)).T))
    assert eig[0] < 0.05 * eig[1], "needle pixels in 3D do not form a straight streak"
    viewer.layers[NEEDLE_LAYER].visible = False
    _pump(qtbot)
    assert _needle_mask(viewer.screenshot(canvas_only=True, flash=False), colour).sum() < rows.size / 4


def test_cancel_stops_a_running_plan(make_napari_viewer, qtbot, sample):
    viewer, widget = _open_planned(make_napari_viewer, qtbot, sample)
    widget.plan()
    worker = widget._worker
    assert worker is not None and widget.cancel_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=PLAN_TIMEOUT_MS):
        widget.cancel()
    _pump(qtbot)
    assert widget.status.text() == "Cancelled." and widget.table.rowCount() == 0
    assert widget.plan_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_segment_an_ultrasound_cine_with_the_shipped_bundle(make_napari_viewer, qtbot):
    from napari_plugin._qt.planning import PlanningWidget
    from napari_plugin._session import available_bundles
    from planner.anatomy import label_of
    from planner.samples import case_names

    bundles = [path for _, path, modality in available_bundles() if modality == "US"]
    if not bundles or "supraclavicular_us" not in case_names():
        pytest.skip("no ultrasound bundle in models/ or no ultrasound sample case")
    import dataclasses

    from napari_plugin._layers import image_layer_data
    from planner.samples import load_case

    viewer = make_napari_viewer()
    cine, _ = load_case("supraclavicular_us")
    # the first 4 frames of the sample cine keep CPU inference short
    short = dataclasses.replace(cine, array=cine.array[:4],
                                display_rgb=None if cine.display_rgb is None else cine.display_rgb[:4])
    data, meta, _ = image_layer_data(short, "cine")
    viewer.add_image(data, **meta)
    widget = PlanningWidget(viewer)
    assert widget.preset_combo.currentData() == "supraclavicular_us_inplane"
    assert widget.bundle_combo.currentData() is not None and widget.segment_button.isEnabled()
    steps = []
    widget.progress.valueChanged.connect(steps.append)
    with qtbot.waitSignal(widget.segmented, timeout=PLAN_TIMEOUT_MS):
        widget.segment(bundles[0])
    layer = viewer.layers["segmentation"]
    image = widget.session.image
    assert layer.data.shape == image.shape
    np.testing.assert_allclose(layer.scale, image.spacing)
    assert set(np.unique(layer.data)) <= {0, label_of("brachial_plexus"), label_of("blood_vessel")}
    assert widget.labels_combo.currentText() == "segmentation" and widget.session.labels is not None
    assert len(set(steps)) >= 3  # progress moved in steps, not only at the end


def test_ultrasound_in_plane_plan_is_evaluated_in_the_planned_frame(make_napari_viewer, qtbot):
    from napari_plugin._qt.planning import PlanningWidget
    from planner.samples import case_names

    if "supraclavicular_us" not in case_names():
        pytest.skip("no ultrasound sample case")
    viewer = make_napari_viewer()
    viewer.open_sample("plexus-planner", "supraclavicular_us")
    widget = PlanningWidget(viewer)
    with qtbot.waitSignal(widget.planned, timeout=PLAN_TIMEOUT_MS):
        widget.plan()
    plan = widget.session.plan
    first = plan.trajectories[0]
    again = widget.session.path_planner().evaluate(first.entry_lps_mm, first.target_lps_mm)
    assert again.length_mm == pytest.approx(first.length_mm, abs=0.01)
    assert again.feasible == first.feasible and again.risk == pytest.approx(first.risk, abs=1e-3)
    # the needle lies in the planned frame of the cine, and the handles are small on a 38 mm image
    frame = plan.search["frame"]
    world = widget.session.trajectory_world(first)
    np.testing.assert_allclose(widget.session.image.napari_to_index(world)[:, 0], frame, atol=1e-6)
    assert viewer.layers["needle entry / target"].size[0] < 2.0


def test_layers_from_another_reader_are_planned_in_mm(make_napari_viewer, qtbot, sample):
    """A plain napari Image/Labels pair (no plugin metadata) is placed by its scale/translate."""
    from napari_plugin._qt.planning import PlanningWidget

    viewer = make_napari_viewer()
    image, labels = sample.image, sample.labels
    viewer.add_image(image.array, scale=image.spacing, translate=image.origin_zyx, name="plain CT")
    viewer.add_labels(labels.array, scale=labels.spacing, translate=labels.origin_zyx, name="plain labels")
    widget = PlanningWidget(viewer)
    session = widget.session
    assert session is not None and session.labels is not None and session.image.same_grid(image)
    centre = image.index_to_lps((np.asarray(image.shape) - 1) / 2)
    entry, target = centre + [40.0, 90.0, 10.0], centre + [10.0, 0.0, 0.0]
    metrics = widget.set_path_world(image.lps_to_napari(entry), image.lps_to_napari(target))
    assert widget.session is session  # the needle layers it added did not restart the session
    np.testing.assert_allclose(metrics.entry_lps_mm, entry, atol=1e-6)
    np.testing.assert_allclose(metrics.target_lps_mm, target, atol=1e-6)


def test_segment_a_ct_with_the_shipped_bundle(make_napari_viewer, qtbot, sample):
    """Segment in a worker (torch loads only now); the result is a vocabulary Labels layer."""
    from napari_plugin._qt.planning import PlanningWidget
    from napari_plugin._session import available_bundles
    from planner import anatomy

    bundles = [path for _, path, modality in available_bundles() if modality == "CT"]
    if not bundles:
        pytest.skip("no CT bundle in models/")
    viewer, widget = _open_planned(make_napari_viewer, qtbot, sample)
    assert isinstance(widget, PlanningWidget)
    assert widget.bundle_combo.currentData() == str(bundles[0]) and widget.segment_button.isEnabled()
    with qtbot.waitSignal(widget.segmented, timeout=PLAN_TIMEOUT_MS):
        widget.segment_button.click()
    layer = viewer.layers["segmentation"]
    assert layer.data.shape == sample.image.shape
    np.testing.assert_allclose(layer.scale, sample.image.spacing)
    np.testing.assert_allclose(layer.translate, sample.image.origin_zyx)
    values = {int(v) for v in np.unique(layer.data)} - {0}
    assert values and values <= {s.label for s in anatomy.STRUCTURES}
    name = anatomy.structure(min(values)).name
    assert name in list(layer.features["name"])
    assert widget.labels_combo.currentText() == "segmentation"
    np.testing.assert_array_equal(widget.session.labels.array, layer.data)
    assert widget.session.labels_source["source"] == "model"  # recorded in the plan's models
    assert widget.session.labels_source["name"] == bundles[0].name


def test_a_plan_that_cannot_be_made_is_a_one_line_error(make_napari_viewer, qtbot, sample):
    viewer, widget = _open_planned(make_napari_viewer, qtbot, sample)
    widget.preset_combo.setCurrentIndex(widget.preset_combo.findData("supraclavicular_us_inplane"))
    with qtbot.waitSignal(widget.failed, timeout=PLAN_TIMEOUT_MS) as failure:
        widget.plan()
    message = failure.args[0]
    assert "brachial_plexus" in message and "Traceback" not in message
    assert widget.status.text() == message and widget.plan_button.isEnabled()
    assert widget.table.rowCount() == 0

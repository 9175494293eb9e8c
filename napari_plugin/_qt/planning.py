"""The planning dock widget: preset, segment, plan, ranked paths, live needle, outcome, export.

Each callback is a few lines that call :class:`napari_plugin._session.PlanningSession`
(which calls ``planner``); the layers it draws come from :mod:`napari_plugin._needle`.
Long work (segmentation, the ranked search) runs in a napari ``thread_worker`` with a
progress bar and a Cancel button; torch and MONAI are imported only inside the
segmentation worker.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_plugin import _needle
from napari_plugin._layers import (
    LABELS_SOURCE_KEY,
    PLAN_KEY,
    ROLE_KEY,
    VOLUME_KEY,
    labels_layer_data,
    volume_from_layer,
)
from napari_plugin._session import PlanningSession, available_bundles, available_presets
from planner.errors import PlannerError

if TYPE_CHECKING:  # pragma: no cover
    import napari

NEEDLE_LAYER = "needle"
HANDLES_LAYER = "needle entry / target"
CROSSING_LAYER = "needle on slice"
PROJECTION_LAYER = "needle projection"
SKIN_RISK_LAYER = "skin entry risk"
PLANNED_LAYER = "planned paths"
DISCLAIMER = "Research and education software, not a medical device."


class PlanningWidget(QWidget):
    """Dock widget driving one planning session on the viewer's image."""

    segmented = Signal()
    planned = Signal()
    reported = Signal(object)
    metrics_changed = Signal()
    failed = Signal(str)

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session: PlanningSession | None = None
        self._worker: Any = None
        self._updating = False
        self._path: np.ndarray | None = None
        self._feasible: bool | None = None
        self._needle_stale = True
        self._preparing: Any = None
        self._reslice_timer = QTimer(self)
        self._reslice_timer.setSingleShot(True)
        self._reslice_timer.setInterval(150)
        self._reslice_timer.timeout.connect(self._update_reslices)
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.point.connect(self._update_slice_overlay)
        self.viewer.dims.events.ndisplay.connect(self._sync_display)
        self._refresh_layer_choices()

    # ================================================================ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        body = QWidget()
        scroll.setWidget(body)
        outer.addWidget(scroll)
        self.setMinimumWidth(430)
        self.setMaximumWidth(560)
        root = QVBoxLayout(body)
        note = QLabel(DISCLAIMER)
        note.setStyleSheet("color: #e0a040; font-style: italic;")
        note.setWordWrap(True)
        root.addWidget(note)

        case = QGroupBox("Case")
        form = QFormLayout(case)
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.preset_combo = QComboBox()
        for name, title in available_presets():
            self.preset_combo.addItem(title, name)
        for combo in (self.image_combo, self.labels_combo, self.preset_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(18)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Procedure", self.preset_combo)
        root.addWidget(case)

        seg = QGroupBox("Segment")
        seg_layout = QVBoxLayout(seg)
        row = QHBoxLayout()
        self.bundle_combo = QComboBox()
        self.bundle_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.bundle_combo.setMinimumContentsLength(12)
        self._bundles = available_bundles()
        self.segment_button = QPushButton("Segment")
        self.segment_button.setEnabled(False)
        self.load_labels_button = QPushButton("Load label map…")
        row.addWidget(self.bundle_combo, 1)
        row.addWidget(self.segment_button)
        seg_layout.addLayout(row)
        seg_layout.addWidget(self.load_labels_button)
        root.addWidget(seg)

        plan_row = QHBoxLayout()
        self.plan_button = QPushButton("Plan")
        self.plan_button.setStyleSheet("font-weight: bold;")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        plan_row.addWidget(self.plan_button)
        plan_row.addWidget(self.progress, 1)
        plan_row.addWidget(self.cancel_button)
        root.addLayout(plan_row)
        self.status = QLabel("Open a case, then load or compute its labels.")
        self.status.setWordWrap(True)
        root.addWidget(self.status)

        self.tabs = QTabWidget()
        root.addWidget(self.tabs, 1)
        self._build_paths_tab()
        self._build_view_tab()
        self._build_outcome_tab()

        export = QHBoxLayout()
        self.save_plan_button = QPushButton("Save plan…")
        self.load_plan_button = QPushButton("Load plan…")
        self.report_button = QPushButton("Report…")
        self.report_button.setToolTip("plan.json, report.html and report.pdf (planner.report) into a folder")
        self.screenshot_button = QPushButton("Screenshot…")
        export.addWidget(self.save_plan_button)
        export.addWidget(self.load_plan_button)
        export.addWidget(self.report_button)
        export.addWidget(self.screenshot_button)
        root.addLayout(export)

        self.preset_combo.currentIndexChanged.connect(self._preset_changed)
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        self.segment_button.clicked.connect(self._segment_clicked)
        self.load_labels_button.clicked.connect(self._load_labels_clicked)
        self.plan_button.clicked.connect(self.plan)
        self.cancel_button.clicked.connect(self.cancel)
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.save_plan_button.clicked.connect(self._save_plan_clicked)
        self.load_plan_button.clicked.connect(self._load_plan_clicked)
        self.report_button.clicked.connect(self._report_clicked)
        self.screenshot_button.clicked.connect(self._screenshot_clicked)

    def _build_paths_tab(self) -> None:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.table = QTableWidget(0, 0)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(150)
        self.table.setMaximumHeight(230)
        layout.addWidget(self.table, 2)
        self.metrics_label = QLabel("Plan to see ranked needle paths; drag the entry or target point to adjust.")
        self.metrics_label.setWordWrap(True)
        self.metrics_label.setTextFormat(Qt.RichText)
        self.metrics_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        layout.addWidget(self.metrics_label, 1)
        self.tabs.addTab(tab, "Paths")

    def _build_view_tab(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.view_figure = Figure(figsize=(4.2, 4.4), facecolor="#262930")
        self.view_canvas = FigureCanvasQTAgg(self.view_figure)
        self.view_canvas.setMinimumSize(240, 400)
        self.view_canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        layout.addWidget(self.view_canvas)
        self.tabs.addTab(tab, "Needle view")

    def _build_outcome_tab(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        from napari_plugin._session import clinical_fields

        tab = QWidget()
        layout = QVBoxLayout(tab)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        checks = QGridLayout()  # yes/no inputs two per row keep the panel short
        self.clinical_editors: dict[str, QWidget] = {}
        n_checks = 0
        for spec in clinical_fields():
            label = spec["label"] + (" ◂ plan" if spec.get("from_plan") else "")
            editor = _editor_for(spec, label)
            self.clinical_editors[spec["name"]] = editor
            if spec.get("from_plan"):
                editor.setToolTip("taken from the plan when there is one (planner.analgesia.inputs_from_plan)")
            if isinstance(editor, QCheckBox):
                checks.addWidget(editor, n_checks // 2, n_checks % 2)
                n_checks += 1
            else:
                form.addRow(label, editor)
        layout.addLayout(form)
        layout.addLayout(checks)
        self.predict_button = QPushButton("Estimate analgesia duration")
        layout.addWidget(self.predict_button)
        self.outcome_label = QLabel("")
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setTextFormat(Qt.RichText)
        layout.addWidget(self.outcome_label)
        self.outcome_figure = Figure(figsize=(4.0, 2.2), facecolor="#262930")
        self.outcome_canvas = FigureCanvasQTAgg(self.outcome_figure)
        self.outcome_canvas.setMinimumSize(240, 170)
        self.outcome_canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        layout.addWidget(self.outcome_canvas)
        layout.addStretch(1)
        self.tabs.addTab(tab, "Outcome")
        self.predict_button.clicked.connect(self.predict_outcome)

    # ================================================================ layers and choices
    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and layer.ndim == 3 + int(bool(getattr(layer, "rgb", False)))]

    def _labels_layers(self) -> list[Any]:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels) and layer.ndim == 3]

    def _refresh_layer_choices(self, event: Any = None) -> None:
        self._refresh_combos()
        layer = getattr(event, "value", None)
        plan = layer.metadata.get(PLAN_KEY) if layer is not None and getattr(event, "type", "") == "inserted" else None
        if plan is not None and self.session is not None and layer.metadata.get(ROLE_KEY) == "plan":
            try:  # a plan.json opened with File > Open: show it in the table
                self._adopt_plan(plan)
            except PlannerError as exc:
                self._fail(str(exc))

    def _refresh_combos(self) -> None:
        for combo, layers in ((self.image_combo, self._image_layers()), (self.labels_combo, self._labels_layers())):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            for layer in layers:
                combo.addItem(layer.name)
            index = combo.findText(current)
            combo.setCurrentIndex(index if index >= 0 else (0 if layers else -1))
            combo.blockSignals(False)
        self._image_changed()

    def _layer(self, name: str) -> Any:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def image_volume(self) -> Any:
        layer = self._layer(self.image_combo.currentText())
        if layer is None:
            return None
        stored = layer.metadata.get(VOLUME_KEY)
        if stored is not None and stored.shape == tuple(np.shape(layer.data)[:3]):
            return stored
        volume = volume_from_layer(layer.data if not layer.rgb else np.asarray(layer.data).mean(-1),
                                   {"scale": layer.scale, "translate": layer.translate, "metadata": layer.metadata})
        layer.metadata[VOLUME_KEY] = volume  # a layer from another reader: keep one Volume for it
        return volume

    def _image_changed(self, *_: Any) -> None:
        volume = self.image_volume()
        if volume is None:
            self.session = None
            return
        if self.session is None or self.session.image is not volume:
            layer = self._layer(self.image_combo.currentText())
            meta = layer.metadata if layer is not None else {}
            self._choose_preset(list(meta.get("presets") or []), volume.modality)
            self._fill_bundles(volume.modality)
            self.session = PlanningSession(image=volume, preset=self.preset_combo.currentData(),
                                           case=str(meta.get("sample_case") or self.image_combo.currentText()))
            self._labels_changed()

    def _labels_changed(self, *_: Any) -> None:
        layer = self._layer(self.labels_combo.currentText())
        if self.session is None or layer is None:
            return
        current = self.session.labels
        source = layer.metadata.get(LABELS_SOURCE_KEY) or {"source": f"napari layer {layer.name}"}
        if current is not None and current.shape == layer.data.shape and np.array_equal(current.array, layer.data):
            self.session.labels_source = dict(source)  # same voxels (a snapshot is kept: edits are seen at Plan)
            return
        labels = volume_from_layer(np.array(layer.data, copy=True),
                                   {"scale": layer.scale, "translate": layer.translate, "metadata": layer.metadata})
        try:
            self.session.set_labels(labels, source=source)
            self._say(f"Labels: {layer.name} ({len(np.unique(labels.array)) - 1} structures). Press Plan.")
        except PlannerError as exc:
            self._fail(str(exc))

    def _fill_bundles(self, modality: str) -> None:
        """Bundles for the image's modality (others would be refused by segmentation)."""
        self.bundle_combo.clear()
        for name, path, bundle_modality in self._bundles:
            if bundle_modality == modality:
                self.bundle_combo.addItem(f"{name} ({bundle_modality})", str(path))
        if self.bundle_combo.count() == 0:
            self.bundle_combo.addItem(f"no {modality} model in models/", None)
        self.segment_button.setEnabled(self.bundle_combo.currentData() is not None)

    def _choose_preset(self, suggested: list[str], modality: str) -> None:
        """Default procedure: the case's first suggested preset, else one for the modality."""
        fallback = ["supraclavicular_us_inplane"] if modality == "US" else ["celiac_posterior_retrocrural"]
        for name in suggested + fallback:
            index = self.preset_combo.findData(name)
            if index >= 0:
                self.preset_combo.setCurrentIndex(index)
                return

    def _preset_changed(self, *_: Any) -> None:
        if self.session is not None:
            self.session.set_preset(self.preset_combo.currentData())

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("")

    def _fail(self, text: str) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #ff6060;")
        self.failed.emit(text)

    # ================================================================ segmentation
    def add_labels(self, labels: Any, name: str = "labels", source: dict[str, Any] | None = None) -> Any:
        """Show a label map (a Volume on the image grid) and use it for planning.

        ``source`` (what made the labels) travels in the layer metadata into the plan.
        """
        data, meta, _ = labels_layer_data(labels, name)
        meta["metadata"][LABELS_SOURCE_KEY] = dict(source or {"source": f"napari layer {name}"})
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_labels(data, **meta)
        self.labels_combo.setCurrentText(layer.name)
        self._labels_changed()
        return layer

    def load_labels(self, path: str | Path) -> Any:
        """Load a label map file (NIfTI or DICOM SEG) onto the image grid."""
        from napari_plugin._session import read_label_map

        if self.session is None:
            raise PlannerError("open the image first; the label map is placed on its grid")
        labels = read_label_map(path, self.session.image)
        layer = self.add_labels(labels, Path(path).name.split(".")[0],
                                source={"source": "imported", "file": Path(path).name})
        self.segmented.emit()
        return layer

    def _load_labels_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Label map", "", "Label maps (*.nii *.nii.gz *.dcm)")
        if path:
            try:
                self.load_labels(path)
            except PlannerError as exc:
                self._fail(str(exc))

    def _segment_clicked(self) -> None:
        self.segment(self.bundle_combo.currentData())

    def segment(self, bundle: str | Path) -> None:
        """Segment the image with a bundle in a worker thread (torch loads only then)."""
        from napari.qt.threading import create_worker

        from napari_plugin._session import segment_steps

        if self.session is None:
            self._fail("open an image first")
            return
        worker = create_worker(segment_steps, self.session.image, Path(bundle),
                               _progress={"desc": "Segmenting"}, _ignore_errors=True)
        worker.yielded.connect(lambda step, w=worker: self._on_progress(step, w))
        worker.returned.connect(lambda result, w=worker: self._segment_done(result) if w is self._worker else None)
        self._start(worker, "Segmenting…")

    def _segment_done(self, result: Any) -> None:
        self._finish()
        if result is None:
            return
        labels, source = result
        self.add_labels(labels, "segmentation", source=source)
        self._say("Segmentation done. Check it, then press Plan.")
        self.segmented.emit()

    # ================================================================ workers
    def _start(self, worker: Any, text: str) -> None:
        self._worker = worker
        worker.errored.connect(lambda exc, w=worker: self._worker_failed(exc) if w is self._worker else None)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self.plan_button.setEnabled(False)
        self.segment_button.setEnabled(False)
        self._say(text)
        worker.start()

    def _on_progress(self, step: Any, worker: Any = None) -> None:
        if worker is not None and worker is not self._worker:
            return  # a cancelled worker still finishing its current step
        fraction, text = step
        self.progress.setValue(int(round(100 * float(fraction))))
        self.status.setText(text)

    def _finish(self) -> None:
        self._worker = None
        self.progress.setValue(100)
        self.cancel_button.setEnabled(False)
        self.plan_button.setEnabled(True)
        self.segment_button.setEnabled(self.bundle_combo.currentData() is not None)

    def _worker_failed(self, exc: BaseException) -> None:
        """A worker's error as one line in the widget (the workers do not re-raise: we show it)."""
        self._finish()
        self.progress.setValue(0)
        if isinstance(exc, PlannerError):
            self._fail(str(exc))
            return
        # not a user-fixable problem: a bug; keep its traceback in the log
        logging.getLogger(__name__).error("planning widget worker failed", exc_info=exc)
        self._fail(f"{type(exc).__name__}: {exc} (a bug: please report it with the log)")

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self._finish()
            self.progress.setValue(0)
            self._say("Cancelled.")

    # ================================================================ planning
    def plan(self) -> None:
        """Run the ranked search in a worker thread; fills the table when done."""
        from napari.qt.threading import create_worker

        from napari_plugin._session import plan_steps

        if self.session is None:
            self._fail("open an image first")
            return
        self.session.set_preset(self.preset_combo.currentData())
        self._labels_changed()  # the labels may have been edited since they were loaded
        worker = create_worker(plan_steps, self.session, _progress={"desc": "Planning"}, _ignore_errors=True)
        worker.yielded.connect(lambda step, w=worker: self._on_progress(step, w))
        worker.returned.connect(lambda plan, w=worker: self._plan_done(plan) if w is self._worker else None)
        self._start(worker, "Planning…")

    def _plan_done(self, plan: Any) -> None:
        self._finish()
        if plan is None:
            return
        self.show_plan()
        self.planned.emit()

    def show_plan(self) -> None:
        """Fill the ranked table from the session's plan and show its best path."""
        assert self.session is not None
        headers, rows, tips = self.session.table()
        self.table.blockSignals(True)
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(headers)
        for r, (cells, tip) in enumerate(zip(rows, tips)):
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        if self.session.targets_derived:
            self._show_derived_targets()
        self._show_skin_risk()
        self._show_planned_paths()
        self._activate_handles()
        n = len(rows)
        self._say(f"{n} ranked path{'s' if n != 1 else ''} for {self.preset_combo.currentText()}. "
                  "Select a row; drag the entry or target point to adjust.")
        if n:
            self.table.selectRow(0)
            self.select_row(0)
            self._activate_handles()

    def _show_derived_targets(self) -> None:
        """Show the target regions planner.targets derived (the labels had none)."""
        assert self.session is not None and self.session.labels is not None
        layer = self._layer(self.labels_combo.currentText())
        if layer is not None and layer.data.shape == self.session.labels.shape:
            data, meta, _ = labels_layer_data(self.session.labels, layer.name)
            layer.data = np.array(data, copy=True)
            layer.colormap = meta["colormap"]
            layer.features = meta["features"]
            self._say(self.status.text() + " Target regions derived by planner.targets (shown in the labels).")

    def load_plan(self, path: str | Path) -> Any:
        """Open a saved plan.json on the current image and show its trajectories."""
        from planner.plan import Plan

        assert self.session is not None
        plan = Plan.load(path)
        self._adopt_plan(plan)
        return plan

    def _adopt_plan(self, plan: Any) -> None:
        assert self.session is not None
        self.session.use_plan(plan)
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findData(plan.procedure)))
        self.preset_combo.blockSignals(False)
        self.show_plan()
        self._prepare_live()
        self.planned.emit()

    def _prepare_live(self) -> None:
        """Build the live evaluator (distance maps) in a worker so the first drag does not stall."""
        from napari.qt.threading import create_worker

        if self.session is None or self.session._planner is not None or self._preparing is not None:
            return
        worker = create_worker(self.session.path_planner, _ignore_errors=True)
        self._preparing = worker

        def done(*_: Any) -> None:
            self._preparing = None
            self._say("Live evaluation ready: drag the entry or target point.")

        worker.returned.connect(done)
        worker.errored.connect(lambda exc: (setattr(self, "_preparing", None), self._fail(str(exc))))
        self._say("Preparing live evaluation (distance maps)…")
        worker.start()

    def _load_plan_clicked(self) -> None:
        if self.session is None:
            self._fail("open the image the plan belongs to first")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load plan", "", "Plan JSON (*.json)")
        if path:
            try:
                self.load_plan(path)
            except PlannerError as exc:
                self._fail(str(exc))

    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.select_row(rows[0].row())

    def select_row(self, index: int) -> None:
        """Show ranked trajectory ``index`` and move the 2D slice to its target."""
        assert self.session is not None
        trajectory = self.session.select(index)
        path = self.session.trajectory_world(trajectory)
        dims = self.viewer.dims
        if dims.ndim == 3 and len(dims.not_displayed) == 1:
            axis = int(dims.not_displayed[0])
            dims.set_point(axis, float(path[1][axis]))
        self._show_needle(path, trajectory)

    def set_path_world(self, entry_zyx: Any, target_zyx: Any) -> Any:
        """Show and evaluate a path given as two napari world points (no plan needed)."""
        assert self.session is not None
        trajectory = self.session.evaluate_world(np.asarray(entry_zyx, float), np.asarray(target_zyx, float))
        self._show_needle(np.stack([np.asarray(entry_zyx, float), np.asarray(target_zyx, float)]), trajectory)
        return trajectory

    # ================================================================ the needle
    def _ensure_needle_layers(self, path_world: np.ndarray) -> None:
        from napari_plugin._session import marker_size_mm

        assert self.session is not None
        vectors = _needle.as_vectors(path_world)
        size = marker_size_mm(self.session.image)
        if NEEDLE_LAYER not in self.viewer.layers:
            self.viewer.add_vectors(vectors, edge_width=size / 2, edge_color=_needle.hex_color(True), vector_style="line",
                                    blending="translucent_no_depth", name=NEEDLE_LAYER,
                                    metadata={ROLE_KEY: "needle"})
        if PROJECTION_LAYER not in self.viewer.layers:
            self.viewer.add_vectors(vectors, edge_width=size / 4, edge_color=_needle.hex_color(True), vector_style="line",
                                    opacity=0.7, name=PROJECTION_LAYER, metadata={ROLE_KEY: "needle_projection"})
        if CROSSING_LAYER not in self.viewer.layers:
            self.viewer.add_points(path_world[1:], size=1.4 * size, symbol="ring", face_color=_needle.hex_color(True),
                                   border_width=0, name=CROSSING_LAYER, metadata={ROLE_KEY: "needle_crossing"})
        if HANDLES_LAYER not in self.viewer.layers:
            layer = self.viewer.add_points(path_world, size=size, face_color=["#40ff40", "#ffd700"],
                                           border_color="white", border_width=0.1, name=HANDLES_LAYER,
                                           metadata={ROLE_KEY: "needle_handles"})
            layer.events.data.connect(self._handles_moved)
            layer.mode = "select"
            self._sync_display()
        for name in (NEEDLE_LAYER, PROJECTION_LAYER, CROSSING_LAYER):
            self.viewer.layers[name].editable = False

    def _show_needle(self, path_world: np.ndarray, trajectory: Any) -> None:
        assert self.session is not None
        self._updating = True
        try:
            self._ensure_needle_layers(path_world)
            handles = self.viewer.layers[HANDLES_LAYER]
            if len(handles.data) != 2 or not np.allclose(handles.data, path_world):
                handles.data = path_world
            self._draw_needle(path_world, self.session.is_feasible(trajectory))
        finally:
            self._updating = False
        self.metrics_label.setText(self.session.metrics_html(trajectory))
        self._reslice_timer.start()
        self.metrics_changed.emit()

    def _draw_needle(self, path_world: np.ndarray, feasible: bool) -> None:
        """Update only what the current display shows (live dragging stays fast)."""
        recolour = feasible != self._feasible
        self._path, self._feasible = np.asarray(path_world, float), feasible
        if self.viewer.dims.ndisplay == 3:
            needle = self.viewer.layers[NEEDLE_LAYER]
            _set_in_place(needle, _needle.as_vectors(self._path))
            if recolour or self._needle_stale:
                needle.edge_color = _needle.hex_color(feasible)
            self._needle_stale = False
        else:
            self._needle_stale = True
            self._update_slice_overlay(recolour=recolour)

    def _handles_moved(self, event: Any = None) -> None:
        """Live re-evaluation while the entry or target point is dragged."""
        if self._updating or self.session is None:
            return
        if event is not None and str(getattr(event, "action", "changed")) not in ("changed", "ActionType.CHANGED"):
            return
        if self._preparing is not None or self._worker is not None:
            self._say("Busy (planning or preparing live evaluation)… the path is evaluated when ready.")
            return
        handles = self.viewer.layers[HANDLES_LAYER]
        data = np.asarray(handles.data, float)
        if len(data) != 2:  # a point was added or deleted: put the pair back
            if self._path is not None:
                self._updating = True
                handles.data = self._path
                self._updating = False
            return
        try:
            trajectory = self.session.evaluate_world(data[0], data[1])
        except PlannerError as exc:
            self._fail(str(exc))
            return
        self._updating = True
        try:
            self._draw_needle(data, self.session.is_feasible(trajectory))
        finally:
            self._updating = False
        self.metrics_label.setText(self.session.metrics_html(trajectory))
        self._reslice_timer.start()
        self.metrics_changed.emit()

    def _sync_display(self, *_: Any) -> None:
        """3D shows the needle itself; 2D shows its projection and where it crosses the slice."""
        if NEEDLE_LAYER not in self.viewer.layers:
            return
        three_d = self.viewer.dims.ndisplay == 3
        self._labels_for_display(three_d)
        if PLANNED_LAYER in self.viewer.layers:
            self.viewer.layers[PLANNED_LAYER].visible = three_d
        if self.viewer.layers[NEEDLE_LAYER].visible != three_d:
            self.viewer.layers[NEEDLE_LAYER].visible = three_d
        for name in (PROJECTION_LAYER, CROSSING_LAYER):
            if self.viewer.layers[name].visible == three_d:
                self.viewer.layers[name].visible = not three_d
        if self._path is not None:
            self._needle_stale = True
            self._draw_needle(self._path, bool(self._feasible))
            if not three_d:
                self._update_slice_overlay(recolour=True)

    def _labels_for_display(self, three_d: bool) -> None:
        """In 3D hide the context structures of the planning labels (they would wrap everything)."""
        from napari_plugin._layers import anatomy_3d_colormap

        layer = self._layer(self.labels_combo.currentText())
        if layer is None:
            return
        if three_d:
            layer.colormap = anatomy_3d_colormap(layer.data)
        else:
            from planner import anatomy

            present = [int(v) for v in np.unique(layer.data) if int(v) != anatomy.BACKGROUND]
            layer.colormap = {None: (0.0, 0.0, 0.0, 0.0), **anatomy.color_table(present)}

    def _update_slice_overlay(self, *_: Any, recolour: bool = False) -> None:
        """The crossing marker and the projection of the needle on the current 2D slice."""
        if self._path is None or PROJECTION_LAYER not in self.viewer.layers or self.viewer.dims.ndisplay != 2:
            return
        dims = self.viewer.dims
        if dims.ndim != 3 or len(dims.not_displayed) != 1:
            return
        axis = int(dims.not_displayed[0])
        value = float(dims.point[axis])
        projection = self.viewer.layers[PROJECTION_LAYER]
        _set_in_place(projection, _needle.as_vectors(_needle.projection_on_plane(self._path[0], self._path[1],
                                                                                   axis, value)))
        crossing = self.viewer.layers[CROSSING_LAYER]
        point = _needle.plane_crossing(self._path[0], self._path[1], axis, value)
        _set_in_place(crossing, (self._path[1] if point is None else point)[None, :])
        if bool(crossing.shown[0]) != (point is not None):
            crossing.shown = [point is not None]
        if recolour:
            color = _needle.hex_color(bool(self._feasible))
            projection.edge_color = color
            crossing.face_color = color
            crossing.current_face_color = color

    def _activate_handles(self) -> None:
        """Make the entry/target points the active layer, so that a drag moves them."""
        if HANDLES_LAYER in self.viewer.layers:
            handles = self.viewer.layers[HANDLES_LAYER]
            self.viewer.layers.selection.active = handles
            handles.mode = "select"

    def _show_planned_paths(self) -> None:
        """The plan's recommended needles (both sides of a bilateral plan), thin, in 3D."""
        from napari_plugin._layers import plan_layer_data

        assert self.session is not None and self.session.plan is not None
        if PLANNED_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PLANNED_LAYER)
        primary = [t for t in self.session.plan.trajectories if t.role == "primary"]
        if not primary:
            return
        plan = dataclasses.replace(self.session.plan, trajectories=tuple(primary))
        [(data, meta, _)] = plan_layer_data(plan, name=PLANNED_LAYER)
        from napari_plugin._session import marker_size_mm

        meta.update(edge_width=marker_size_mm(self.session.image) / 4, opacity=0.6, blending="translucent_no_depth",
                    visible=self.viewer.dims.ndisplay == 3)
        meta["metadata"] = {ROLE_KEY: "planned_paths"}  # not the plan layer the writer saves
        layer = self.viewer.add_vectors(data, **meta)
        layer.editable = False

    def _show_skin_risk(self) -> None:
        """Skin entry points coloured by the lowest risk reachable from them (grey: none feasible)."""
        from napari_plugin._needle import risk_colors

        assert self.session is not None
        found = self.session.skin_risk()
        if SKIN_RISK_LAYER in self.viewer.layers:
            self.viewer.layers.remove(SKIN_RISK_LAYER)
        if found is None:
            return
        points, risk = found
        from napari_plugin._session import marker_size_mm

        self.viewer.add_points(points, features={"risk": risk}, face_color=risk_colors(risk),
                               size=0.6 * marker_size_mm(self.session.image),
                               border_width=0, opacity=0.8, name=SKIN_RISK_LAYER,
                               metadata={ROLE_KEY: "skin_risk"})
        self.viewer.layers[SKIN_RISK_LAYER].editable = False
        # keep the needle layers above it so the handles stay draggable
        self.viewer.layers.move(self.viewer.layers.index(SKIN_RISK_LAYER),
                                min(self.viewer.layers.index(n) for n in (NEEDLE_LAYER, PROJECTION_LAYER)
                                    if n in self.viewer.layers) if NEEDLE_LAYER in self.viewer.layers
                                else len(self.viewer.layers))

    # ================================================================ reslices
    def _update_reslices(self) -> None:
        """After a drag settles: the reslices, and the plan the needle layer saves (npe2 writer)."""
        if self.session is None or self.session.current is None:
            return
        if NEEDLE_LAYER in self.viewer.layers and self.session.plan is not None:
            self.viewer.layers[NEEDLE_LAYER].metadata[PLAN_KEY] = self.session.adjusted_plan()
        from napari_plugin._figures import draw_reslices

        entry, target = self.session.current_path_lps()
        draw_reslices(self.view_figure, self.session.image, self.session.labels, entry, target,
                      self.session.is_feasible(self.session.current))
        self.view_canvas.draw_idle()

    # ================================================================ outcome
    def clinical_values(self) -> dict[str, Any]:
        return {name: _editor_value(editor) for name, editor in self.clinical_editors.items()}

    def predict_outcome(self) -> Any:
        """Analgesia estimate for the clinical inputs and the current plan (planner.analgesia)."""
        from napari_plugin._figures import draw_relief_curve

        if self.session is None:
            self._fail("open an image first")
            return None
        try:
            estimate = self.session.outcome(self.clinical_values())
        except PlannerError as exc:
            self._fail(str(exc))
            return None
        self.outcome_label.setText(self.session.outcome_html(estimate))
        for name, value in estimate.inputs.items():  # show what the plan contributed
            if name in self.clinical_editors:
                _set_editor_value(self.clinical_editors[name], value)
                self.clinical_editors[name].setEnabled(name not in self.session.inputs_from_plan)
        weeks, curve = self.session.relief_curve(estimate)
        draw_relief_curve(self.outcome_figure, weeks, curve, estimate)
        self.outcome_canvas.draw_idle()
        return estimate

    # ================================================================ export
    def save_plan(self, path: str | Path) -> Path:
        assert self.session is not None
        saved = self.session.save_plan(Path(path))
        self._say(f"Plan saved to {saved}")
        return saved

    def _save_plan_clicked(self) -> None:
        if self.session is None or self.session.plan is None:
            self._fail("make a plan first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save plan", "plan.json", "Plan JSON (*.json)")
        if path:
            try:
                self.save_plan(path)
            except PlannerError as exc:
                self._fail(str(exc))

    def export_report(self, folder: str | Path) -> None:
        """Write the procedure report of the current (adjusted) plan in a worker; emits ``reported``."""
        from napari.qt.threading import create_worker

        if self.session is None or self.session.plan is None:
            self._fail("make a plan first")
            return
        worker = create_worker(self.session.write_report, Path(folder), self.clinical_values(),
                               _progress={"desc": "Report"}, _ignore_errors=True)
        worker.returned.connect(lambda result, w=worker: self._report_done(result) if w is self._worker else None)
        self._start(worker, "Writing the procedure report…")

    def _report_done(self, result: Any) -> None:
        self._finish()
        written, reason = result
        self._say(f"Report written to {Path(written['report.pdf']).parent}" + (f" ({reason})" if reason else ""))
        self.reported.emit(written)

    def _report_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for plan.json, report.html and report.pdf")
        if folder:
            self.export_report(folder)

    def _screenshot_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Screenshot", "plan.png", "PNG (*.png)")
        if path:
            self.viewer.screenshot(path, canvas_only=False)
            self._say(f"Screenshot saved to {path}")


def _set_in_place(layer: Any, data: np.ndarray) -> None:
    """Move a small overlay layer's data without a full data reset (keeps live dragging fast).

    The layer's extent is left as it was (it only bounds "reset view"); the view is re-sliced.
    """
    if np.shape(layer.data) == np.shape(data):
        layer.data[...] = data
        layer.refresh(extent=False, thumbnail=False)
    else:
        layer.data = data


# ==================================================================== clinical editors
def _editor_for(spec: dict[str, Any], label: str = "") -> QWidget:
    kind, default = spec["kind"], spec["default"]
    if kind == "bool":
        editor: QWidget = QCheckBox(label)
        editor.setChecked(bool(default))
    elif kind == "choice":
        editor = QComboBox()
        editor.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        editor.setMinimumContentsLength(10)
        for choice in spec["choices"]:
            editor.addItem(str(choice).replace("_", " "), choice)
        editor.setCurrentIndex(max(0, list(spec["choices"]).index(default)) if default in spec["choices"] else 0)
    elif kind == "int":
        editor = QSpinBox()
        editor.setRange(int(spec.get("min", 0)), int(spec.get("max", 10)))
        editor.setValue(int(default))
    else:
        editor = QDoubleSpinBox()
        editor.setRange(float(spec.get("min", 0.0)), float(spec.get("max", 1e4)))
        editor.setDecimals(int(spec.get("decimals", 1)))
        editor.setValue(float(default))
    if spec.get("help"):
        editor.setToolTip(spec["help"])
    return editor


def _set_editor_value(editor: QWidget, value: Any) -> None:
    editor.blockSignals(True)
    if isinstance(editor, QCheckBox):
        editor.setChecked(bool(value))
    elif isinstance(editor, QComboBox):
        index = editor.findData(value)
        if index >= 0:
            editor.setCurrentIndex(index)
    else:
        editor.setValue(value)
    editor.blockSignals(False)


def _editor_value(editor: QWidget) -> Any:
    if isinstance(editor, QCheckBox):
        return editor.isChecked()
    if isinstance(editor, QComboBox):
        return editor.currentData()
    return editor.value()

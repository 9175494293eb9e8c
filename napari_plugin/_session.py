"""The planning session behind the dock widget (pure: no napari or Qt import).

It holds the case (image, labels), the procedure preset, the ranked plan
(:func:`planner.plan.build_plan`) and the path the physician is adjusting, and converts
between napari world ``[z, y, x]`` mm and patient LPS mm. Every number it returns is
computed by ``planner``: live metrics by :meth:`planner.trajectory.PathPlanner.evaluate`
(on the same labels, preset and error model as the plan), the spread of an adjusted plan
by :func:`planner.spread.estimate_spread`, the outcome by :func:`planner.analgesia.predict`.
This module only routes and formats.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from planner.errors import LabelMapError, PlanError, PlannerError
from planner.volume import Volume



def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Metric ``name`` of a planner result: attribute, mapping key, or ``Trajectory.details`` entry."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    if hasattr(obj, name):
        return getattr(obj, name)
    details = getattr(obj, "details", None)
    if isinstance(details, Mapping):
        return details.get(name, default)
    return default


def fmt_mm(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if not np.isfinite(value):
        return "> max" if value > 0 else "inside"
    return f"{value:.1f}"


@dataclass
class PlanningSession:
    """One case being planned: image, labels, preset, plan and the adjusted path.

    ``adjusted`` maps a trajectory's index in the plan to the re-evaluated metrics of the
    path the physician dragged it to; :meth:`adjusted_plan` folds them into the plan.
    """

    image: Volume
    labels: Volume | None = None
    preset: str | None = None
    case: str = "case"
    plan: Any = None
    selected: int | None = None
    current: Any = None
    adjusted: dict[int, Any] = field(default_factory=dict)
    targets_derived: bool = False
    #: what produced the labels, as ``Plan.models["labels"]`` (see planner.report.labels_description)
    labels_source: dict[str, Any] = field(default_factory=dict)
    #: clinical inputs the last outcome took from the plan (the rest came from the form)
    inputs_from_plan: tuple[str, ...] = ()
    _planner: Any = field(default=None, repr=False)
    _skin: Any = field(default=None, repr=False)

    # ------------------------------------------------------------- case and labels
    def set_labels(self, labels: Volume, source: Mapping[str, Any] | None = None) -> None:
        """Use ``labels`` (checked to lie on the image grid); drops any plan made before.

        ``source`` says what made the labels (a model bundle, a file); plans record it.
        """
        from planner.distance import check_same_grid

        check_same_grid(self.image, labels)
        self.labels = labels
        self.labels_source = dict(source or {})
        self.targets_derived = False
        self._reset()

    def set_preset(self, name: str) -> None:
        if name != self.preset:
            self.preset = name
            self._reset()

    def _reset(self) -> None:
        self._planner = None
        self._skin = None
        self.plan = None
        self.selected = None
        self.current = None
        self.adjusted = {}

    # ------------------------------------------------------------- coordinates
    def to_lps(self, world_zyx: np.ndarray) -> np.ndarray:
        return self.image.napari_to_lps(np.asarray(world_zyx, float))

    def to_world(self, lps_xyz: np.ndarray) -> np.ndarray:
        return self.image.lps_to_napari(np.asarray(lps_xyz, float))

    def trajectory_world(self, trajectory: Any) -> np.ndarray:
        """``(2, 3)`` world ``[z, y, x]`` mm of a trajectory's entry and target."""
        entry = np.asarray(_get(trajectory, "entry_lps_mm"), float)
        target = np.asarray(_get(trajectory, "target_lps_mm"), float)
        return self.to_world(np.stack([entry, target]))

    # ------------------------------------------------------------- planning
    def _require(self) -> tuple[Volume, Any]:
        from planner.presets import get_preset

        if self.labels is None:
            raise PlanError("no label map yet: segment the image or load a label map first")
        if self.preset is None:
            raise PlanError("no procedure preset chosen")
        return self.labels, get_preset(self.preset)

    def ensure_targets(self) -> Volume:
        """The labels with the preset's target region; derived by :mod:`planner.targets` if absent."""
        from planner.anatomy import structure
        from planner.targets import add_targets

        labels, preset = self._require()
        if not (labels.array == structure(preset.target).label).any():
            labels = add_targets(labels)
            self.labels = labels
            self.targets_derived = True
        return labels

    def path_planner(self) -> Any:
        """The case's :class:`planner.trajectory.PathPlanner` (same inputs as the plan's)."""
        if self._planner is None:
            from planner.distance import CaseGeometry
            from planner.trajectory import PathPlanner

            labels = self.ensure_targets()
            image = self.image
            frame = self.planning_frame()
            if frame is not None:  # in-plane ultrasound: the plan is made in one frame of the cine
                from planner.trajectory import single_frame

                image, labels = single_frame(image, frame), single_frame(labels, frame)
            self._planner = PathPlanner(CaseGeometry(labels=labels, image=image), self.preset)
        return self._planner

    def planning_frame(self) -> int | None:
        """The cine frame an in-plane preset plans in (the plan's, else planner's choice); else None."""
        from planner.trajectory import target_frame

        labels, preset = self._require()
        if not preset.in_plane or labels.shape[0] == 1:
            return None
        recorded = (getattr(self.plan, "search", None) or {}).get("frame") if self.plan is not None else None
        return int(recorded) if recorded is not None else target_frame(labels, preset.target)

    def plan_now(self) -> Any:
        """The ranked plan (:func:`planner.plan.build_plan`) for the preset on the labels."""
        from planner.plan import build_plan

        labels = self.ensure_targets()
        models: dict[str, Any] = {"labels": dict(self.labels_source)}
        if self.targets_derived:
            models["target_regions"] = "derived by planner.targets"
        plan = build_plan(self.image, labels, self.preset, case=self.case, models=models)
        self._reset_plan(plan)
        return plan

    def _reset_plan(self, plan: Any) -> None:
        self.plan = plan
        self.selected = None
        self.current = None
        self.adjusted = {}

    def use_plan(self, plan: Any) -> None:
        """Show a plan made elsewhere (a loaded plan.json); checks it was made on this grid."""
        grid = dict(getattr(plan, "grid", {}) or {})
        if grid.get("shape_zyx") and list(grid["shape_zyx"]) != list(self.image.shape):
            raise PlanError(f"the plan was made on a {grid['shape_zyx']} grid but the image is "
                            f"{list(self.image.shape)}; open the image the plan belongs to")
        if plan.procedure != self.preset:
            self.set_preset(plan.procedure)
        self._reset_plan(plan)

    @property
    def trajectories(self) -> Sequence[Any]:
        return list(self.plan.trajectories) if self.plan is not None else []

    def select(self, index: int) -> Any:
        """Make ranked trajectory ``index`` the path being shown and adjusted."""
        trajectories = self.trajectories
        if not 0 <= index < len(trajectories):
            raise PlanError(f"no trajectory {index + 1}: the plan has {len(trajectories)}")
        self.selected = index
        self.current = self.adjusted.get(index, trajectories[index])
        return self.current

    def evaluate_lps(self, entry_lps: np.ndarray, target_lps: np.ndarray) -> Any:
        """Every metric of one straight path (planner.trajectory.PathPlanner.evaluate)."""
        if np.allclose(entry_lps, target_lps):
            raise PlanError("entry and target are the same point; drag one of them apart")
        self.current = self.path_planner().evaluate(np.asarray(entry_lps, float), np.asarray(target_lps, float))
        if self.selected is not None:
            self.adjusted[self.selected] = self.current
        return self.current

    def evaluate_world(self, entry_zyx: np.ndarray, target_zyx: np.ndarray) -> Any:
        """:meth:`evaluate_lps` for two napari world points ``[z, y, x]`` mm."""
        return self.evaluate_lps(self.to_lps(entry_zyx), self.to_lps(target_zyx))

    def current_path_lps(self) -> tuple[np.ndarray, np.ndarray]:
        if self.current is None:
            raise PlanError("no path selected yet: plan, then select a row")
        return (np.asarray(_get(self.current, "entry_lps_mm"), float),
                np.asarray(_get(self.current, "target_lps_mm"), float))

    @staticmethod
    def is_feasible(trajectory: Any) -> bool:
        return bool(_get(trajectory, "feasible", False))

    def adjusted_plan(self) -> Any:
        """The plan with every dragged trajectory replaced by its re-evaluated metrics.

        The spread (which feeds the analgesia estimate) is re-estimated from the adjusted
        primary tips with :func:`planner.spread.estimate_spread`, and a warning in the plan
        says which trajectories were moved by hand.
        """
        if self.plan is None:
            raise PlanError("no plan yet: press Plan first")
        if not self.adjusted:
            return self.plan
        from planner.plan import Trajectory
        from planner.spread import estimate_spread

        trajectories = list(self.plan.trajectories)
        moved = []
        for index, metrics in sorted(self.adjusted.items()):
            old = trajectories[index]
            new = Trajectory.from_metrics(metrics, rank=old.rank, role=old.role)
            trajectories[index] = dataclasses.replace(new, details={**new.details, "adjusted_in_viewer": True})
            moved.append(f"{old.role} {old.rank} ({old.side})")
        spread = dict(self.plan.spread)
        if self.plan.preset.get("modality", "CT") == "CT":
            tips = [t.target_lps_mm for t in trajectories if t.role == "primary"]
            spread = estimate_spread(self.path_planner().geometry, tips, target=self.plan.target).to_dict()
        note = f"adjusted by hand in the napari viewer and re-evaluated: {', '.join(moved)}"
        warnings = tuple(w for w in self.plan.warnings if not w.startswith("adjusted by hand")) + (note,)
        return dataclasses.replace(self.plan, trajectories=tuple(trajectories), spread=spread, warnings=warnings)

    def save_plan(self, path: Path) -> Path:
        return self.adjusted_plan().save(path)

    # ------------------------------------------------------------- skin risk
    def compute_skin_risk(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per skin entry: the lowest risk of a feasible path from it (``nan``: none feasible).

        From the candidate sets of :meth:`planner.trajectory.PathPlanner.search` on every
        side the preset plans; ``None`` for ultrasound presets (no skin surface).
        """
        from planner.presets import get_preset
        from planner.trajectory import sides_for

        preset = get_preset(self.preset)
        if preset.in_plane:
            return None
        planner = self.path_planner()
        entries, risks = [], []
        for side in sides_for(preset):
            cands = planner.search(side)
            risk = np.where(cands.feasible, cands.risk, np.nan)
            unique, inverse = np.unique(cands.entry_lps, axis=0, return_inverse=True)
            best = np.full(len(unique), np.inf)
            np.fmin.at(best, inverse.ravel(), risk)
            entries.append(unique)
            risks.append(np.where(np.isfinite(best), best, np.nan))
        self._skin = (self.to_world(np.concatenate(entries)), np.concatenate(risks))
        return self._skin

    def skin_risk(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._skin

    # ------------------------------------------------------------- outcome
    def outcome(self, clinical: Mapping[str, Any]) -> Any:
        """:func:`planner.analgesia.predict` for the clinical inputs and the (adjusted) plan.

        Plan-derived inputs (procedure, approach, bilateral, spread, encasement) come from
        the plan through :func:`planner.analgesia.inputs_from_plan`, when there is one.
        """
        from planner.analgesia import ClinicalInputs, inputs_from_plan, predict

        values = dict(clinical)
        self.inputs_from_plan = ()
        if self.plan is None:
            return predict(ClinicalInputs.from_mapping(values))
        plan_dict = self.adjusted_plan().to_dict()
        own = {k: v for k, v in values.items() if k not in PLAN_DERIVED_INPUTS}
        if plan_dict.get("celiac_axis_encased") is None and "celiac_axis_encasement" in values:
            own["celiac_axis_encasement"] = values["celiac_axis_encasement"]
        try:
            inputs = inputs_from_plan(plan_dict, **own)
        except PlanError:
            if "spread_quadrants" not in values:
                raise
            # the plan has no spread estimate for this procedure: the physician's value is used
            inputs = inputs_from_plan(plan_dict, **own, spread_quadrants=values["spread_quadrants"])
            own["spread_quadrants"] = values["spread_quadrants"]
        self.inputs_from_plan = tuple(k for k in PLAN_DERIVED_INPUTS if k not in own)
        return predict(inputs)

    def relief_curve(self, estimate: Any, weeks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """P(still relieved | response) over ``weeks`` (:func:`planner.report.relief_curve`)."""
        from planner.report import relief_curve

        grid = np.linspace(0.0, 52.0, 105) if weeks is None else np.asarray(weeks, float)
        return grid, relief_curve(estimate, grid)

    # ------------------------------------------------------------- report
    def write_report(self, folder: Path, clinical: Mapping[str, Any]) -> tuple[dict[str, Path], str]:
        """``plan.json``, ``report.html`` and ``report.pdf`` of the (adjusted) plan (planner.report).

        The analgesia estimate is the one the outcome panel shows for ``clinical``; when the
        procedure has none the report says why. Returns the files and that reason ("" if any).
        """
        from planner.analgesia import REFERENCE
        from planner.report import build_report, write_outputs

        plan = self.adjusted_plan()
        labels = self.ensure_targets()
        try:
            estimate, reason = self.outcome(clinical), ""
        except PlannerError as exc:
            estimate, reason = None, f"No analgesia-duration estimate: {exc}."
        entered = ()
        if estimate is not None:
            entered = tuple(k for k, v in clinical.items()
                            if k not in self.inputs_from_plan and getattr(REFERENCE, k, v) != v)
        report = build_report(plan, self.image, labels, estimate, clinical_entered=entered,
                              no_estimate_reason=reason)
        return write_outputs(folder, plan, report), reason

    # ------------------------------------------------------------- presentation
    def table(self) -> tuple[list[str], list[list[str]], list[str]]:
        """Headers, formatted cells and a tooltip (the reasons) per ranked trajectory."""
        return trajectory_table(self.trajectories)

    def metrics_html(self, trajectory: Any) -> str:
        return metrics_html(trajectory)

    @staticmethod
    def outcome_html(estimate: Any) -> str:
        return outcome_html(estimate)


#: organs at risk farther than this from the path are counted, not listed, in the metrics text
CLEARANCE_SHOWN_MM = 20.0

#: ClinicalInputs fields that a plan provides (planner.analgesia.inputs_from_plan)
PLAN_DERIVED_INPUTS = ("procedure", "approach", "bilateral", "spread_quadrants", "celiac_axis_encasement")


# ------------------------------------------------------------------ formatting (no numbers made here)
def _angle(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def _prob(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f}%"


def trajectory_table(trajectories: Sequence[Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """The ranked table: one row per trajectory, a clearance column per organ at risk.

    Columns: rank, side, within hard constraints, length, needle, skin / gantry angle,
    risk, probability of touching an organ at risk, then the minimum clearance (mm) to
    every organ at risk the preset forbids (nearest first by the first row).
    """
    oars: list[str] = []
    for t in trajectories:
        margins = _get(t, "margins_mm", {}) or {}
        for name in sorted(margins, key=lambda n: (_get(t, "min_clearance_mm", {}) or {}).get(n, np.inf)):
            if name not in oars:
                oars.append(name)
    from planner.anatomy import structure

    headers = ["#", "Side", "OK", "Length mm", "Needle mm", "Skin °", "Gantry °", "Risk", "P(contact)"]
    headers += [f"{structure(n).display_name} mm" for n in oars]
    rows, tips = [], []
    for i, t in enumerate(trajectories):
        clear = _get(t, "min_clearance_mm", {}) or {}
        needle = _get(t, "needle_length_mm")
        rows.append([str(i + 1), str(_get(t, "side", "")), "yes" if _get(t, "feasible") else "NO",
                     fmt_mm(_get(t, "length_mm")), "-" if needle is None else f"{float(needle):.0f}",
                     _angle(_get(t, "skin_angle_deg")), _angle(_get(t, "gantry_angle_deg")),
                     f"{float(_get(t, 'risk', np.nan)):.3f}", _prob(_get(t, "p_oar_contact"))]
                    + [fmt_mm(clear.get(n)) for n in oars])
        reasons = list(_get(t, "reasons", ()) or ())
        tips.append("Within every hard constraint" if not reasons else "Breaks: " + "; ".join(reasons))
    return headers, rows, tips


def metrics_html(t: Any) -> str:
    """Rich-text summary of one path's metrics, hard-constraint breaks in red."""
    from planner.anatomy import structure

    if t is None:
        return ""
    reasons = list(_get(t, "reasons", ()) or ())
    head = ('<b style="color:#40e040">Within every hard constraint</b>' if not reasons else
            '<b style="color:#ff4040">Breaks a hard constraint:</b> ' + html.escape("; ".join(reasons)))
    needle = _get(t, "needle_length_mm")
    lines = [head,
             f"Length <b>{fmt_mm(_get(t, 'length_mm'))} mm</b>"
             + (f" (needle {float(needle):.0f} mm)" if needle is not None else " (no needle long enough)")
             + f", side {_get(t, 'side', '')}, entry {fmt_mm(_get(t, 'entry_from_midline_mm'))} mm from midline",
             f"Skin angle {_angle(_get(t, 'skin_angle_deg'))}°, gantry {_angle(_get(t, 'gantry_angle_deg'))}°, "
             f"cranial {_angle(_get(t, 'cranial_angle_deg'))}°, sagittal {_angle(_get(t, 'sagittal_angle_deg'))}°"
             + (f", in-plane {_angle(_get(t, 'in_plane_angle_deg'))}°" if _get(t, "in_plane_angle_deg") is not None
                else ""),
             f"Risk {float(_get(t, 'risk', np.nan)):.3f}; P(touching an organ at risk) "
             f"{_prob(_get(t, 'p_oar_contact'))} (lateral error {_prob(_get(t, 'p_oar_contact_lateral'))}, "
             f"depth {_prob(_get(t, 'p_oar_contact_depth'))})"]
    clear = _get(t, "min_clearance_mm", {}) or {}
    margins = _get(t, "margins_mm", {}) or {}
    cells, far = [], 0
    # tightest first: by slack (clearance minus hard margin); crossable structures last
    for name in sorted(clear, key=lambda n: clear[n] - margins[n] if n in margins else np.inf):
        value, margin = clear[name], margins.get(name)
        if margin is None or (value > CLEARANCE_SHOWN_MM and value >= margin):
            far += 1  # crossable structures and distant ones are counted, not listed
            continue
        bad = value < margin
        colour = "#ff4040" if bad else "#e0e0e0"
        limit = f"/{margin:g}" if margin >= 0 else f" (≥ {margin:g})"
        cells.append(f'<span style="color:{colour}">{html.escape(structure(name).display_name)} '
                     f'{fmt_mm(value)}{limit}</span>')
    if cells:
        lines.append("Clearance mm / hard margin (tightest first): " + ", ".join(cells)
                     + (f" (+{far} farther than {CLEARANCE_SHOWN_MM:g} mm or crossable)" if far else ""))
    return "<br>".join(lines)


def outcome_html(e: Any) -> str:
    """Rich text of an analgesia estimate: its own summary (planner.analgesia), warnings, contributions."""
    lines = [html.escape(line) for line in e.summary().splitlines()]
    if lines:  # the last line is the model's label and disclaimer
        lines[-1] = f'<span style="color:#e0a040"><i>{lines[-1]}</i></span>'
    lo, hi = e.median_relief_weeks_ci_80
    lines.insert(2, f"(80% confidence interval of the median {lo:.1f}-{hi:.1f} weeks; reference patient "
                    f"{e.reference_median_relief_weeks:.1f})")
    for w in e.warnings:
        lines.append(f'<span style="color:#ff9040">{html.escape(w)}</span>')
    if e.contributions:
        parts = [f"{html.escape(c.description)}: median x{c.median_factor:.2f}, relief-loss HR "
                 f"{c.relief_loss_hazard_ratio:.2f}" for c in e.contributions]
        lines.append("<b>Contributions</b> (vs the reference patient): " + "; ".join(parts))
    else:
        lines.append("<b>Contributions</b>: none (the reference patient)")
    return "<br>".join(lines)


# ------------------------------------------------------------------ choices for the widget
def available_presets() -> list[tuple[str, str]]:
    """``(name, display name)`` of every bundled procedure preset (planner.presets)."""
    from planner.presets import get_preset, preset_names

    return [(name, get_preset(name).display_name) for name in preset_names()]


def available_bundles() -> list[tuple[str, Path, str]]:
    """``(name, folder, modality)`` of every MONAI bundle shipped in ``models/`` (metadata only, no torch)."""
    from planner.resources import models_dir
    from segmentation.bundle import METADATA, read_bundle

    try:
        root = models_dir()
    except PlannerError:
        return []
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / METADATA).is_file():
            try:
                found.append((folder.name, folder, read_bundle(folder).modality))
            except PlannerError:
                continue  # a malformed bundle is reported when it is chosen by path, not listed
    return found


def marker_size_mm(volume: Volume) -> float:
    """Display size of the needle handles: about 1.5% of the image extent, 0.8-6 mm."""
    extent = max(n * s for n, s in zip(volume.shape, volume.spacing) if n > 1) if volume.array.size else 100.0
    return float(np.clip(0.015 * extent, 0.8, 6.0))


def read_label_map(path: str | Path, reference: Volume) -> Volume:
    """A label map file (NIfTI, or DICOM SEG placed on ``reference``) in the vocabulary."""
    from planner.volume import is_nifti, load_nifti

    p = Path(path)
    if is_nifti(p):
        labels = load_nifti(p)
    else:
        from planner.dicom_seg import read_seg

        labels = read_seg(p, reference)
    array = labels.array
    if array.dtype.kind == "f":
        if not np.all(np.mod(array, 1) == 0):
            raise LabelMapError(f"{p}: holds non-integer values; expected a label map in the vocabulary")
    return labels.with_array(np.asarray(array).astype(np.uint8) if array.max() < 256 else array.astype(np.int32))


# ------------------------------------------------------------------ worker steps
def segment_steps(image: Volume, bundle_path: Path, frames_per_step: int = 64) -> Iterator[tuple[float, str]]:
    """Generator for a napari worker: yields ``(fraction, message)``, returns ``(labels, source)``.

    Runs the bundle through ``segmentation.commands.segment`` (the same pipeline as
    ``plexplan segment``); torch and MONAI are imported here, not before. An ultrasound
    cine is segmented a few frames at a time (frames are independent), so progress is
    real and Cancel takes effect between steps.
    """
    from segmentation.commands.segment import choose_bundle, run_pipeline

    yield 0.02, "Loading the model…"
    bundle = choose_bundle(str(bundle_path), image)
    if image.modality != "US" or image.shape[0] <= frames_per_step:
        yield 0.1, f"Running {bundle.name}…"
        return run_pipeline(bundle, image, 1, 16, progress=False), bundle_source(bundle)
    parts = []
    n = image.shape[0]
    for start in range(0, n, frames_per_step):
        stop = min(n, start + frames_per_step)
        chunk = Volume(array=image.array[start:stop], spacing=image.spacing, origin=image.origin,
                       direction=image.direction, modality=image.modality, source=image.source,
                       warnings=image.warnings)
        parts.append(run_pipeline(bundle, chunk, 1, 16, progress=False).array)
        yield stop / n, f"Segmented frames {stop}/{n} with {bundle.name}"
    return image.with_array(np.concatenate(parts, axis=0)), bundle_source(bundle)


def bundle_source(bundle: Any) -> dict[str, Any]:
    """What a plan records about the model that made its labels (``Plan.models["labels"]``)."""
    return {"source": "model", "name": bundle.name, "version": str(bundle.metadata.get("version", "?")),
            "card": str(Path(bundle.root) / "docs" / "README.md")}


def plan_steps(session: PlanningSession) -> Iterator[tuple[float, str]]:
    """Generator for a napari worker: the ranked plan, then the live evaluator and skin risk."""
    yield 0.05, f"Planning {session.preset}: distance maps, search, ranking…"
    plan = session.plan_now()
    yield 0.6, "Preparing live evaluation…"
    session.path_planner()
    yield 0.75, "Skin entry risk…"
    session.compute_skin_risk()
    yield 1.0, "Plan ready"
    return plan


def clinical_fields() -> list[dict[str, Any]]:
    """Editor specs for every :class:`planner.analgesia.features.ClinicalInputs` field."""
    from dataclasses import fields as dataclass_fields

    from planner.analgesia import features

    choices: dict[str, tuple[Any, ...]] = {
        "procedure": features.PROCEDURES,
        "approach": tuple(dict.fromkeys(a for group in features.APPROACHES.values() for a in group)),
        "tumour_site": features.TUMOUR_SITES,
    }
    ranges = {"spread_quadrants": (0, 4), "ecog": (0, 4), "oral_morphine_mg_day": (0.0, 2000.0),
              "baseline_pain": (0.0, 10.0)}
    labels = {"oral_morphine_mg_day": "Oral morphine eq. (mg/day)", "ecog": "ECOG",
              "baseline_pain": "Baseline pain (NRS 0-10)", "spread_quadrants": "Spread (quadrants)",
              "early_procedure": "Early (not rescue)", "repeat_procedure": "Repeat neurolysis",
              "prior_upper_abdominal_surgery": "Prior upper-abdominal surgery",
              "celiac_axis_encasement": "Celiac axis encased"}
    specs = []
    for f in dataclass_fields(features.ClinicalInputs):
        default = getattr(features.REFERENCE, f.name)
        spec: dict[str, Any] = {"name": f.name, "label": labels.get(f.name, f.name.replace("_", " ").capitalize()),
                                "default": default, "from_plan": f.name in PLAN_DERIVED_INPUTS}
        if f.name in choices:
            spec.update(kind="choice", choices=choices[f.name])
        elif isinstance(default, bool):
            spec["kind"] = "bool"
        elif isinstance(default, int):
            spec.update(kind="int", min=ranges.get(f.name, (0, 10))[0], max=ranges.get(f.name, (0, 10))[1])
        else:
            spec.update(kind="float", min=ranges.get(f.name, (0.0, 1e4))[0], max=ranges.get(f.name, (0.0, 1e4))[1])
        specs.append(spec)
    return specs

"""The procedure report: one model, rendered to self-contained HTML and to PDF.

:func:`build_report` is a pure function of the plan, the image and label volumes and the
analgesia estimate. Every number the report shows is formatted once, into the tables of a
:class:`Report`; the HTML and the PDF are two renderings of the same tables, so they cannot
disagree with each other, and the tables are built from the plan's own values (the same
values ``plan.json`` stores). Figures are matplotlib PNGs (Agg canvas, no pyplot): the axial slice through the
target with the needles, the in-plane reslice along each recommended needle
(:mod:`planner.reslice`), a 3D overview (marching cubes on downsampled masks) and the relief
curve. The PDF is laid out with reportlab.

:func:`write_outputs` writes ``plan.json``, ``report.html`` and ``report.pdf`` into a folder,
each atomically and only after all three rendered; :func:`write_plan_report` does estimate,
report and files in one call (``plexplan plan`` and a viewer's export).

Research and education software, not a medical device.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from planner.analgesia.model import format_percent as fmt_pct
from planner.analgesia.model import format_weeks as fmt_weeks
from planner.volume import Volume, atomic_output

STATEMENT = ("RESEARCH AND EDUCATION SOFTWARE - NOT FOR CLINICAL DECISIONS. This report is not a medical "
             "device output. Trajectories are suggestions computed from a label map; a qualified physician "
             "must verify every path on the images before any procedure.")
SYNTHETIC_NOTE = ("The analgesia-duration estimate comes from a model fit on a synthetic cohort (simulated "
                  "patients built from published figures), not on patient data.")
#: soft-tissue window for CT figures (HU): level 40, width 400
CT_WINDOW_HU = (-160.0, 240.0)
#: organs at risk farther than this from a recommended needle are summarised, not listed
LISTED_CLEARANCE_MM = 30.0
NEEDLE_COLORS = ("#00c8ff", "#ff8c00", "#7cfc00", "#ff69b4")
REPORT_FILES = ("plan.json", "report.html", "report.pdf")


# ---------------------------------------------------------------------------- formatting
def fmt_mm(value: Any) -> str:
    """Millimetres, one decimal ("-" when absent)."""
    return "-" if value is None else f"{float(value):.1f}"


def fmt_deg(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"




def fmt_risk(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"




def fmt_point(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in values) + ")"


def display_name(name: str) -> str:
    from planner.anatomy import structure
    from planner.errors import LabelMapError

    try:
        return structure(name).display_name
    except LabelMapError:
        return name.replace("_", " ")


# ---------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Table:
    """A titled table of formatted cells (both renderings show exactly these strings)."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Report:
    """Everything the report shows (see module docstring)."""

    title: str
    subtitle: str
    statement: str
    sections: tuple[tuple[str, tuple[Table, ...]], ...]
    figures: tuple[Figure, ...]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def tables(self) -> tuple[Table, ...]:
        return tuple(t for _, tables in self.sections for t in tables)

    def to_html(self) -> str:
        return render_html(self)

    def to_pdf(self) -> bytes:
        return render_pdf(self)


def _kv(title: str, rows: Sequence[tuple[str, str]], note: str = "") -> Table:
    return Table(title=title, header=("Item", "Value"), rows=tuple((str(a), str(b)) for a, b in rows), note=note)


def patient_identifiers(image: Volume) -> list[tuple[str, str]]:
    """Patient name, ID, birth date, accession and study date from the image's first DICOM file."""
    if image.source is None or not image.source.files:
        return [("Patient identifiers", "none in the image (not a DICOM series)")]
    import pydicom

    try:
        ds = pydicom.dcmread(image.source.files[0], stop_before_pixels=True)
    except Exception as exc:  # unreadable file: say so rather than fail the report
        return [("Patient identifiers", f"could not be read ({exc})")]
    return [("Patient name", str(ds.get("PatientName", "") or "-")), ("Patient ID", str(ds.get("PatientID", "") or "-")),
            ("Birth date", str(ds.get("PatientBirthDate", "") or "-")),
            ("Accession number", str(ds.get("AccessionNumber", "") or "-")),
            ("Study date", str(ds.get("StudyDate", "") or "-"))]


def _case_table(plan: Any, image: Volume, include_identifiers: bool) -> Table:
    preset = plan.preset or {}
    labels_info = dict(plan.models.get("labels", {})) if plan.models else {}
    rows: list[tuple[str, str]] = [("Case", plan.case)]
    if include_identifiers:
        rows += patient_identifiers(image)
    rows += [
        ("Procedure", str(preset.get("display_name", plan.procedure))),
        ("Preset", plan.procedure), ("Approach", plan.approach),
        ("Target region", display_name(plan.target) if plan.target else "-"),
        ("Needles", "bilateral (left and right)" if plan.bilateral else "single"),
        ("Patient position", str(preset.get("patient_position", "-"))),
        ("Image", f"{image.modality}, {' x '.join(str(n) for n in image.shape[::-1])} voxels (x, y, z), "
                  f"{' x '.join(f'{s:g}' for s in image.spacing[::-1])} mm"),
        ("Labels used", labels_description(labels_info)),
        ("Celiac axis encased by tumour", {None: "not assessed (no tumour or no celiac trunk in the label map)",
                                           True: "yes", False: "no"}[plan.celiac_axis_encased]),
        ("Predicted injectate spread", _spread_text(plan)),
        ("Plan created (UTC)", plan.created_utc),
    ]
    if not include_identifiers:
        rows.append(("Patient identifiers", "withheld (use --include-identifiers to show them)"))
    return _kv("Case summary", rows)


def spread_assessed(plan: Any) -> bool:
    """True when the plan's procedure has a spread estimate (celiac neurolysis, see planner.spread)."""
    from planner.analgesia.features import PLAN_PRESETS, SPREAD_ASSESSED

    return PLAN_PRESETS.get(plan.procedure, ("",))[0] in SPREAD_ASSESSED


def _spread_text(plan: Any) -> str:
    rule = str(plan.spread.get("rule", ""))
    if not spread_assessed(plan):
        return "not assessed for this procedure"
    if not plan.primary:
        return "not estimated: no feasible needle tip"
    if rule.lower().startswith("not applicable"):
        return rule
    covered = ", ".join(plan.spread.get("covered", []))
    return f"{plan.spread.get('quadrants', 0)} of 4 periaortic quadrants" + (f" ({covered})" if covered else "")


def labels_description(info: Mapping[str, Any]) -> str:
    """Which labels the plan used, in words (from ``plan.models['labels']``)."""
    source = str(info.get("source", "unknown"))
    if source == "model":
        return f"CT segmentation model {info.get('name', '?')} version {info.get('version', '?')}"
    if source == "sample reference":
        return f"reference labels of sample case {info.get('case', '?')} ({info.get('file', 'labels.nii.gz')})"
    if source == "imported":
        return f"imported label map {info.get('file', '?')}"
    return source


def vertebral_level(labels: Volume, lps: Sequence[float]) -> str:
    """The vertebra with the most voxels in the axial slice through ``lps`` ("-" when none)."""
    from planner.anatomy import VERTEBRAL_LEVELS, label_of, vertebra_name

    if labels.shape[0] == 1:
        return "-"
    k = int(round(float(labels.lps_to_index(np.asarray(lps, float))[0])))
    if not 0 <= k < labels.shape[0]:
        return "-"
    values, counts = np.unique(labels.array[k], return_counts=True)
    area = dict(zip(values.tolist(), counts.tolist()))
    best = max(VERTEBRAL_LEVELS, key=lambda lv: area.get(label_of(vertebra_name(lv)), 0))
    return best if area.get(label_of(vertebra_name(best)), 0) else "-"


def _summary_table(plan: Any, primary: Sequence[Any], estimate: Any | None, no_estimate_reason: str) -> Table:
    """At a glance: the recommended needles, spread and relief (numbers formatted as in the tables below)."""
    rows: list[tuple[str, str]] = [("Plan", "feasible" if plan.feasible else "NO COMPLETE FEASIBLE PLAN: see the "
                                    "warnings and the reasons per trajectory")]
    for t in primary:
        n = plan.trajectories.index(t) + 1
        near = t.details.get("nearest_structure")
        needle = "-" if t.needle_length_mm is None else f"{t.needle_length_mm:g}"
        closest = f"{display_name(near)} {fmt_mm(t.min_clearance_mm.get(near))} mm" if near else "-"
        rows.append((f"Needle {n} ({t.side}, {t.role})",
                     f"{'feasible' if t.feasible else 'NOT feasible'}; path {fmt_mm(t.length_mm)} mm with a {needle} mm "
                     f"needle; closest organ at risk {closest}; P(contact) {fmt_pct(t.p_oar_contact)}"))
    rows.append(("Predicted injectate spread", _spread_text(plan)))
    if estimate is not None:
        rows.append(("Predicted relief if it responds", f"median {fmt_weeks(estimate.median_relief_weeks)} weeks; "
                     f"P(initial response) {fmt_pct(estimate.p_response)} (synthetic-cohort model)"))
    else:
        rows.append(("Predicted relief", no_estimate_reason or "not predicted"))
    return _kv("At a glance", rows)


def _overview_table(plan: Any) -> Table:
    us = any(t.details.get("in_plane_angle_deg") is not None for t in plan.trajectories)
    header = ("#", "Side", "Role", "Feasible", "Length mm", "Needle mm",
              "In-plane deg" if us else "Cranio-caudal deg", "Sagittal deg", "Nearest organ at risk",
              "Clearance mm", "Risk", "P(contact)")
    rows = []
    for i, t in enumerate(plan.trajectories, 1):
        near = t.details.get("nearest_structure")
        rows.append((str(i), t.side, t.role, "yes" if t.feasible else "no", fmt_mm(t.length_mm),
                     "-" if t.needle_length_mm is None else f"{t.needle_length_mm:g}",
                     fmt_deg(t.details.get("in_plane_angle_deg")) if us else fmt_deg(t.gantry_angle_deg),
                     fmt_deg(t.details.get("sagittal_angle_deg")),
                     display_name(near) if near else "-",
                     fmt_mm(t.min_clearance_mm.get(near)) if near else "-", fmt_risk(t.risk),
                     fmt_pct(t.p_oar_contact)))
    return Table(title="All ranked trajectories", header=header, rows=tuple(rows),
                 note="Cranio-caudal = angle out of the axial plane (gantry tilt); sagittal = angle from the "
                      "sagittal plane. Risk: length-normalised integral of closeness to organs at risk (0 best, "
                      "1 worst). P(contact): probability that the needle touches an organ at risk under the "
                      "placement-error model. Primary = recommended.")


def _trajectory_tables(plan: Any, number: int, t: Any, labels: Volume) -> tuple[Table, Table]:
    d = t.details
    rows = [("Side / role", f"{t.side} / {t.role}"), ("Feasible", "yes" if t.feasible else "no: " + "; ".join(t.reasons)),
            ("Skin entry (LPS mm)", fmt_point(t.entry_lps_mm)), ("Target tip (LPS mm)", fmt_point(t.target_lps_mm))]
    if labels.shape[0] > 1:
        rows += [("Vertebral level of the entry / tip", f"{vertebral_level(labels, t.entry_lps_mm)} / "
                                                       f"{vertebral_level(labels, t.target_lps_mm)}")]
    rows += [("Path length (mm)", fmt_mm(t.length_mm)),
             ("Needle (mm)", "-" if t.needle_length_mm is None else f"{t.needle_length_mm:g}")]
    if d.get("in_plane_angle_deg") is not None:
        rows += [("In-plane angle (deg)", fmt_deg(d.get("in_plane_angle_deg"))),
                 ("Needle visibility (0-1)", fmt_risk(d.get("needle_visibility")))]
    else:
        rows += [("Cranio-caudal (gantry) angle (deg)", fmt_deg(t.gantry_angle_deg)),
                 ("Angle from the sagittal plane (deg)", fmt_deg(d.get("sagittal_angle_deg"))),
                 ("Angle to the skin normal (deg)", fmt_deg(d.get("skin_angle_deg"))),
                 ("Entry from the midline (mm)", fmt_mm(d.get("entry_from_midline_mm")))]
    rows += [("Risk (0 best, 1 worst)", fmt_risk(t.risk)), ("P(organ contact), all errors", fmt_pct(t.p_oar_contact)),
             ("P(organ contact), lateral error only", fmt_pct(d.get("p_oar_contact_lateral"))),
             ("P(organ contact), depth error only", fmt_pct(d.get("p_oar_contact_depth")))]
    summary = _kv(f"Needle {number}: {t.side} ({t.role})", rows,
                  note="LPS = DICOM patient coordinates: x towards the patient's left, y posterior, z superior (mm).")
    margins = d.get("margins_mm", {}) or {}
    organ_rows = []
    far = 0
    from planner.anatomy import structure

    crossable = set((plan.preset or {}).get("crossable", []))
    for name, c in sorted(t.min_clearance_mm.items(), key=lambda kv: kv[1]):
        bone = structure(name).is_bone or structure(name).tissue.value == "cartilage" if _known(name) else False
        margin = margins.get(name)
        if name in crossable:
            if c < LISTED_CLEARANCE_MM:
                organ_rows.append((display_name(name), fmt_mm(c), "-", "crossing allowed by this approach"
                                   if c < 0 else "ok (crossing allowed)"))
            continue
        if bone:
            if c < 0:
                entered = margin is not None and c < margin
                organ_rows.append((display_name(name), fmt_mm(c), f"touch to {fmt_mm(margin)}" if margin is not None
                                   else "touch allowed", "ENTERS BONE" if entered else "bone contact (allowed)"))
            continue
        if c >= LISTED_CLEARANCE_MM:
            far += 1
            continue
        status = "-" if margin is None else ("ok" if c >= margin else ("CROSSES" if c < 0 else "WITHIN MARGIN"))
        organ_rows.append((display_name(name), fmt_mm(c), "-" if margin is None else fmt_mm(margin), status))
    clearance = Table(title=f"Needle {number}: clearance per organ at risk", header=("Structure", "Clearance mm",
                      "Hard margin mm", "Status"), rows=tuple(organ_rows),
                      note=f"Closest distance from the needle to each structure (negative = the needle enters it). "
                           f"{far} further organs at risk are {LISTED_CLEARANCE_MM:g} mm or more away. Bone may be "
                           f"touched (the needle is walked off the vertebral body) but not entered deeper than the 'touch to' depth.")
    return summary, clearance


def _known(name: str) -> bool:
    from planner.anatomy import structure
    from planner.errors import LabelMapError

    try:
        structure(name)
        return True
    except LabelMapError:
        return False


def _analgesia_tables(estimate: Any, entered: Sequence[str], plan_inputs: Sequence[str]) -> tuple[Table, ...]:
    lo, hi = estimate.relief_weeks_prediction_interval_80
    clo, chi = estimate.median_relief_weeks_ci_80
    plo, phi = estimate.p_response_interval_80
    main = _kv("Predicted analgesia duration", [
        ("P(initial response)", f"{fmt_pct(estimate.p_response)} (80% interval {fmt_pct(plo)} to {fmt_pct(phi)})"),
        ("Median relief if it responds (weeks)", fmt_weeks(estimate.median_relief_weeks)),
        ("80% prediction interval (weeks)", f"{fmt_weeks(lo)} to {fmt_weeks(hi)}"),
        ("80% interval of the median (weeks)", f"{fmt_weeks(clo)} to {fmt_weeks(chi)}"),
        ("Reference patient median (weeks)", fmt_weeks(estimate.reference_median_relief_weeks)),
        ("Main factors (median relief vs the reference patient)",
         "; ".join([f"{c.description} x{c.median_factor:.2f}" for c in estimate.contributions
                    if abs(math.log(max(c.median_factor, 1e-9))) > 0.05][:4]) or "none (reference patient)"),
        ("Model", f"{estimate.label} (version {estimate.model_version})"),
    ], note=SYNTHETIC_NOTE)
    tp_rows = tuple((f"{tp.weeks:g}", fmt_pct(tp.p_relieved),
                     f"{fmt_pct(tp.p_relieved_interval_80[0])} to {fmt_pct(tp.p_relieved_interval_80[1])}",
                     fmt_pct(tp.p_relieved_if_response)) for tp in estimate.timepoints)
    timepoints = Table(title="Still relieved over time", header=("Week", "P(relieved)", "80% interval",
                       "P(relieved) if it responds"), rows=tp_rows,
                       note="P(relieved) = responds and is still relieved and alive at that week.")
    input_rows = []
    for key, value in estimate.inputs.items():
        origin = "from the plan" if key in plan_inputs else ("entered" if key in entered else "reference value (not entered)")
        if key == "spread_quadrants" and origin == "from the plan" and not spread_assessed_inputs(estimate):
            origin = "not assessed for this procedure (coded 4)"
        input_rows.append((key.replace("_", " "), str(value).lower() if isinstance(value, bool) else str(value), origin))
    inputs = Table(title="Inputs of the estimate", header=("Input", "Value", "Source"), rows=tuple(input_rows),
                   note="Inputs not taken from the plan or entered are the model's reference patient; enter the "
                        "patient's values (plexplan plan --clinical FILE) for a patient-specific estimate.")
    return main, timepoints, inputs


def spread_assessed_inputs(estimate: Any) -> bool:
    from planner.analgesia.features import SPREAD_ASSESSED

    return estimate.inputs.get("procedure") in SPREAD_ASSESSED


def _versions_table(plan: Any, estimate: Any) -> Table:
    from planner.resources import models_dir

    sw = dict(plan.software)
    rows = [("Software", f"{sw.get('name', 'plexus-planner')} {sw.get('version', '?')}"),
            ("Python / numpy / scipy", f"{sw.get('python', '?')} / {sw.get('numpy', '?')} / {sw.get('scipy', '?')}"),
            ("Plan format version", str(plan.version))]
    labels_info = dict(plan.models.get("labels", {})) if plan.models else {}
    rows.append(("Segmentation", labels_description(labels_info)))
    if labels_info.get("source") == "model":
        rows.append(("Segmentation model card", str(labels_info.get("card", "-"))))
    if estimate is not None:
        rows.append(("Analgesia model", f"{estimate.label}, version {estimate.model_version}"))
        rows.append(("Analgesia model card", str(models_dir() / "analgesia" / "README.md")))
    em = dict(plan.error_model)
    if em:
        rows.append(("Placement-error model", ", ".join(f"{k} {v}" for k, v in em.items())))
    return _kv("Software and model versions", rows)


def plan_inputs_used(estimate: Any, plan: Any) -> tuple[str, ...]:
    """The estimate inputs that came from the plan (see :func:`planner.analgesia.inputs_from_plan`)."""
    keys = ["procedure", "approach", "bilateral", "spread_quadrants"]
    if plan.celiac_axis_encased is not None:
        keys.append("celiac_axis_encasement")
    return tuple(k for k in keys if k in estimate.inputs)


def estimate_for_plan(plan: Any, clinical: Mapping[str, Any] | None = None) -> Any | None:
    """:func:`planner.analgesia.predict` for a plan (``None`` when its procedure has no model).

    Plan-derived inputs come from the plan; ``clinical`` gives the rest (defaults: the
    reference patient). A celiac plan without a spread estimate needs ``spread_quadrants``.
    """
    from planner.analgesia import inputs_from_plan, predict
    from planner.analgesia.features import PLAN_PRESETS, PROCEDURES

    if plan.procedure not in PLAN_PRESETS and plan.procedure not in PROCEDURES:
        return None
    return predict(inputs_from_plan(plan.to_dict(), **dict(clinical or {})))


def estimate_or_reason(plan: Any, clinical: Mapping[str, Any] | None = None) -> tuple[Any | None, str]:
    """:func:`estimate_for_plan`, or ``None`` and the reason in words when there is no estimate.

    No estimate: the procedure has no model, or a celiac plan has no spread estimate (no
    feasible tip) and ``clinical`` gives no ``spread_quadrants``. Bad clinical inputs (unknown
    names, values the plan already gives) still raise.
    """
    clinical = dict(clinical or {})
    rule = str(plan.spread.get("rule", "")).strip().lower()
    if spread_assessed(plan) and rule.startswith("not applicable") and "spread_quadrants" not in clinical:
        return None, (f"No analgesia-duration estimate: the plan has no spread estimate ({_spread_text(plan)}); "
                      "enter spread_quadrants (0-4) in the clinical inputs for one.")
    estimate = estimate_for_plan(plan, clinical)
    if estimate is None:
        return None, "No analgesia-duration model exists for this procedure; no duration is predicted."
    return estimate, ""


def build_report(plan: Any, image: Volume, labels: Volume, estimate: Any | None, *,
                 include_identifiers: bool = False, clinical_entered: Sequence[str] = (),
                 no_estimate_reason: str = "") -> Report:
    """The report of one plan (pure: renders figures in memory, writes nothing).

    Args:
        plan: a :class:`planner.plan.Plan`.
        image, labels: the volumes the plan was made on (labels with their target regions).
        estimate: :class:`planner.analgesia.Estimate` or ``None`` (no model for the procedure).
        include_identifiers: show the patient's name, ID and dates from the DICOM header.
        clinical_entered: estimate inputs the user entered (the others are reference values).
        no_estimate_reason: shown when ``estimate`` is ``None`` (see :func:`estimate_or_reason`).
    """
    image, labels = _planning_frame(plan, image), _planning_frame(plan, labels)
    primary = list(plan.primary) or [t for t in plan.trajectories[:1]]
    sections: list[tuple[str, tuple[Table, ...]]] = [
        ("Summary", (_summary_table(plan, primary, estimate, no_estimate_reason),)),
        ("Case", (_case_table(plan, image, include_identifiers),))]
    traj_tables: list[Table] = [_overview_table(plan)]
    for i, t in enumerate(plan.trajectories, 1):
        if t in primary:
            traj_tables.extend(_trajectory_tables(plan, i, t, labels))
    sections.append(("Trajectories", tuple(traj_tables)))
    figures = [axial_figure(plan, image, labels, primary)]
    if image.shape[0] > 1:  # a single frame (ultrasound) already is the plane of the needle
        figures += [reslice_figure(image, labels, t, n, plan) for n, t in
                    ((plan.trajectories.index(t) + 1, t) for t in primary)]
        figures.append(overview_figure(plan, image, labels, primary))
    notes = [STATEMENT]
    if estimate is not None:
        sections.append(("Analgesia", _analgesia_tables(estimate, clinical_entered, plan_inputs_used(estimate, plan))))
        figures.append(relief_figure(estimate))
        notes.append(SYNTHETIC_NOTE)
    else:
        notes.append(no_estimate_reason or "No analgesia-duration model exists for this procedure; no duration "
                     "is predicted.")
    sections.append(("Versions", (_versions_table(plan, estimate),)))
    warnings = list(plan.warnings) + list(image.warnings)
    if estimate is not None:
        warnings += [f"analgesia estimate: {w}" for w in estimate.warnings]
    status = "feasible plan" if plan.feasible else "NO COMPLETE FEASIBLE PLAN"
    return Report(
        title=f"Needle plan: {plan.preset.get('display_name', plan.procedure) if plan.preset else plan.procedure}",
        subtitle=f"Case {plan.case}; {status}; plexus-planner {plan.software.get('version', '?')}",
        statement=STATEMENT, sections=tuple(sections), figures=tuple(figures), notes=tuple(notes),
        warnings=tuple(warnings), meta={"case": plan.case, "procedure": plan.procedure})


def _planning_frame(plan: Any, volume: Volume) -> Volume:
    """The single frame an in-plane (ultrasound) plan was made on, else the volume itself."""
    frame = plan.search.get("frame") if plan.search else None
    if frame is None or volume.shape[0] == 1:
        return volume
    from planner.trajectory import single_frame

    return single_frame(volume, int(frame))


# ---------------------------------------------------------------------------- figures
def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _window(image: Volume, array: np.ndarray) -> tuple[float, float]:
    if image.modality == "CT":
        return CT_WINDOW_HU
    lo, hi = np.percentile(array, [1, 99]) if array.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def _shown(value: int) -> bool:
    """Structures coloured in the figures: targets, organs at risk and tumour (not skin, fat, muscle)."""
    from planner.anatomy import Role, Tissue, structure
    from planner.errors import LabelMapError

    try:
        s = structure(int(value))
    except LabelMapError:
        return False
    return s.role in (Role.TARGET, Role.ORGAN_AT_RISK) or s.tissue == Tissue.TUMOUR


def _lut(values: np.ndarray) -> np.ndarray:
    """RGBA per label value in ``values`` (vocabulary colours; transparent background and context)."""
    from planner.anatomy import color_table

    top = int(values.max()) if values.size else 0
    lut = np.zeros((top + 1, 4))
    for value, rgba in color_table([int(v) for v in np.unique(values) if v and _shown(int(v))]).items():
        if value <= top:
            lut[value] = rgba
    return lut


def _overlay(lab: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    lab = np.clip(lab.astype(np.int64), 0, None)
    lut = _lut(lab)
    rgba = lut[lab]
    rgba[..., 3] = np.where(lut[lab][..., 3] > 0, alpha, 0.0)
    return rgba


def _legend(ax: Any, lab: np.ndarray, n: int = 14) -> None:
    """Legend of the coloured structures in view: targets, then vessels, then the rest by area."""
    from matplotlib.patches import Patch

    from planner.anatomy import Role, Tissue, color_table, structure

    values, counts = np.unique(lab[lab > 0], return_counts=True)
    keep = [i for i in range(values.size) if _shown(int(values[i]))]

    def priority(i: int) -> tuple[int, int]:
        s = structure(int(values[i]))
        rank = 0 if s.role == Role.TARGET else 1 if s.tissue in (Tissue.ARTERY, Tissue.VEIN, Tissue.TUMOUR) else 2
        return rank, -int(counts[i])

    keep.sort(key=priority)
    keep = keep[:n]
    colors = color_table([int(values[i]) for i in keep])
    handles = [Patch(facecolor=colors[int(values[i])], edgecolor="none",
                     label=display_name(_name(int(values[i])))) for i in keep]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6, frameon=False)


def _name(label: int) -> str:
    from planner.anatomy import structure

    return structure(label).name


def _figure(w: float, h: float) -> Any:
    """A matplotlib figure on the Agg canvas, without pyplot (no global backend switch, so a
    viewer's own matplotlib figures are left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def axial_figure(plan: Any, image: Volume, labels: Volume, primary: Sequence[Any]) -> Figure:
    """Axial slice through the (first) target tip, labels overlaid, needles projected onto it."""
    tip = np.asarray(primary[0].target_lps_mm) if primary else np.asarray(image.index_to_lps(np.array(image.shape) / 2))
    k = int(np.clip(round(float(image.lps_to_index(tip)[0])), 0, image.shape[0] - 1))
    sl, lab = image.array[k].astype(float), labels.array[k]
    sy, sx = image.spacing[1], image.spacing[2]
    extent = (-0.5 * sx, (sl.shape[1] - 0.5) * sx, (sl.shape[0] - 0.5) * sy, -0.5 * sy)
    fig = _figure(7.0, 5.2)
    ax = fig.add_axes((0.06, 0.08, 0.66, 0.86))
    vmin, vmax = _window(image, sl)
    ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="bilinear")
    ax.imshow(_overlay(lab), extent=extent, interpolation="nearest")
    for n, t in enumerate(primary):
        idx = image.lps_to_index(np.stack([t.entry_lps_mm, t.target_lps_mm]))
        ys, xs = idx[:, 1] * sy, idx[:, 2] * sx
        color = NEEDLE_COLORS[n % len(NEEDLE_COLORS)]
        ax.plot(xs, ys, "-" if image.shape[0] == 1 else "--", color=color, linewidth=1.6)
        ax.plot(xs[1], ys[1], "o", color=color, markersize=5, markeredgecolor="black")
        ax.plot(xs[0], ys[0], "s", color=color, markersize=4, markeredgecolor="black")
        ax.annotate(f"{plan.trajectories.index(t) + 1}", (xs[0], ys[0]), color=color, fontsize=9,
                    xytext=(4, 4), textcoords="offset points", weight="bold")
    ax.set_xlabel("mm", fontsize=7)
    ax.tick_params(labelsize=6)
    _legend(ax, lab)
    if image.shape[0] == 1:  # an ultrasound frame: the plan lies in it
        frame = plan.search.get("frame") if plan.search else None
        ax.set_title("Ultrasound frame the plan was made on" + ("" if frame is None else f" (frame {frame})"),
                     fontsize=9)
        caption = ("Probe at the top of the image. Square = skin entry at the probe edge, circle = needle tip; the "
                   "needle runs in the image plane (in-plane technique). Numbers are the trajectory numbers of the "
                   "tables.")
        return Figure(title="Image with the needle", caption=caption, png=_png(fig))
    h, w = sl.shape[0] * sy, sl.shape[1] * sx
    for text, xy in (("R", (0.02 * w, 0.5 * h)), ("L", (0.96 * w, 0.5 * h)), ("A", (0.5 * w, 0.04 * h)),
                     ("P", (0.5 * w, 0.98 * h))):
        ax.text(*xy, text, color="yellow", fontsize=10, weight="bold", ha="center", va="center")
    z = float(image.index_to_lps(np.array([k, 0, 0]))[2])
    ax.set_title(f"Axial slice through the target tip (z = {z:.0f} mm)", fontsize=9)
    caption = ("Radiological view: patient's right on the image left, anterior up (displayed as for a supine "
               f"patient; the plan is for a {plan.preset.get('patient_position', 'prone') if plan.preset else 'prone'} "
               "patient). Square = skin entry, "
               "circle = needle tip; dashed = needle projected onto this slice (it is angled out of the slice). "
               "Numbers are the trajectory numbers of the tables.")
    return Figure(title="Axial slice", caption=caption, png=_png(fig))


def reslice_figure(image: Volume, labels: Volume, t: Any, number: int, plan: Any) -> Figure:
    """The image plane containing the needle (entry left, tip right), labels overlaid."""
    from planner.reslice import reslice_along_needle

    pixel = max(0.5, min(image.spacing[1:]) / 2)
    rs = reslice_along_needle(image, np.asarray(t.entry_lps_mm), np.asarray(t.target_lps_mm), labels=labels,
                              pixel_mm=pixel, half_width_mm=45.0, margin_mm=25.0)
    fig = _figure(7.0, 3.4)
    ax = fig.add_axes((0.06, 0.12, 0.66, 0.78))
    hgt, wid = rs.image.shape
    extent = (0.0, wid * pixel, hgt * pixel, 0.0)
    vmin, vmax = _window(image, rs.image)
    ax.imshow(rs.image, cmap="gray", vmin=vmin, vmax=vmax, extent=extent, interpolation="bilinear")
    if rs.labels is not None:
        ax.imshow(_overlay(rs.labels), extent=extent, interpolation="nearest")
    (r0, c0), (r1, c1) = rs.needle_px * pixel
    color = NEEDLE_COLORS[(list(plan.primary).index(t) if t in plan.primary else 0) % len(NEEDLE_COLORS)]
    ax.plot([c0, c1], [r0, r1], "-", color=color, linewidth=2)
    ax.plot([c0], [r0], "s", color=color, markersize=5, markeredgecolor="black")
    ax.plot([c1], [r1], "o", color=color, markersize=5, markeredgecolor="black")
    import matplotlib.patheffects as pe

    outline = [pe.withStroke(linewidth=2, foreground="black")]
    ax.text(c0, r0 - 4, "skin entry", color="white", fontsize=7, ha="center", path_effects=outline)
    ax.text(c1, r1 - 4, "tip", color="white", fontsize=7, ha="center", path_effects=outline)
    down = _direction_word(rs.row_dir)
    ax.set_xlabel("mm along the needle (from 25 mm outside the skin)", fontsize=7)
    ax.set_ylabel(f"mm across (down = {down})", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(f"Needle {number} ({t.side}): image plane along the needle, length {fmt_mm(t.length_mm)} mm",
                 fontsize=9)
    if rs.labels is not None:
        _legend(ax, rs.labels)
    caption = (f"Oblique reslice containing needle {number}: the needle runs left to right from the skin entry to "
               f"the tip; downwards in the image is towards the patient's {down}.")
    return Figure(title=f"Reslice along needle {number}", caption=caption, png=_png(fig))


def _direction_word(vector: np.ndarray) -> str:
    """The patient direction an LPS vector points most along ("left", "anterior", ...)."""
    v = np.asarray(vector, float)
    axis = int(np.argmax(np.abs(v)))
    return (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))[axis][int(v[axis] > 0)]


#: surfaces drawn in the 3D overview: (group, colour, opacity)
OVERVIEW_GROUPS = (("bone", "#b0a890", 0.45), ("aorta", "#dc1414", 0.9), ("kidneys", "#a050c8", 0.7))


def _mesh(mask: np.ndarray, volume: Volume, step: int) -> np.ndarray | None:
    """Triangles ``(n, 3, 3)`` in LPS mm of a downsampled mask's surface (marching cubes)."""
    from skimage.measure import marching_cubes

    small = mask[::step, ::step, ::step]
    if small.sum() < 4:
        return None
    padded = np.pad(small.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, 0.5)
    lps = volume.index_to_lps((verts - 1.0) * step)
    return lps[faces]


def overview_figure(plan: Any, image: Volume, labels: Volume, primary: Sequence[Any]) -> Figure:
    """3D overview: skin, bone, aorta and kidney surfaces with the recommended needles."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from planner.anatomy import bone_labels, label_of
    from planner.distance import CaseGeometry
    from planner.trajectory import body_mask

    arr = labels.array
    step = max(1, int(round(6.0 / min(labels.spacing))))
    groups = {"bone": np.isin(arr, bone_labels()), "aorta": arr == label_of("aorta"),
              "kidneys": np.isin(arr, [label_of("kidney_left"), label_of("kidney_right")])}
    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot(projection="3d")
    ax.computed_zorder = False  # needles (drawn last) stay visible in front of the surfaces
    skin = _mesh(body_mask(CaseGeometry(labels=labels, image=image)), labels, max(step, int(round(9.0 / min(labels.spacing)))))
    if skin is not None:
        ax.add_collection3d(Poly3DCollection(skin, facecolor="#f4b88c", alpha=0.05, edgecolor="none"))
    for name, color, alpha in OVERVIEW_GROUPS:
        tris = _mesh(groups[name], labels, step)
        if tris is not None:
            ax.add_collection3d(Poly3DCollection(tris, facecolor=color, alpha=alpha, edgecolor="none"))
    for n, t in enumerate(primary):
        e, p = np.asarray(t.entry_lps_mm), np.asarray(t.target_lps_mm)
        color = NEEDLE_COLORS[n % len(NEEDLE_COLORS)]
        ax.plot([e[0], p[0]], [e[1], p[1]], [e[2], p[2]], color=color, linewidth=3.5, zorder=10)
        ax.scatter([p[0]], [p[1]], [p[2]], color=color, s=25, edgecolor="black", zorder=11)
        ax.text(e[0], e[1], e[2], f" {plan.trajectories.index(t) + 1}", color=color, fontsize=10, weight="bold", zorder=12)
    corners = image.index_to_lps(np.array([[0, 0, 0], np.array(image.shape) - 1]))
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(hi - lo))
    ax.view_init(elev=15, azim=60)
    ax.set_xlabel("x: patient left (mm)", fontsize=7)
    ax.set_ylabel("y: posterior (mm)", fontsize=7)
    ax.set_zlabel("z: superior (mm)", fontsize=7)
    ax.tick_params(labelsize=5)
    ax.set_title("3D overview from behind and to the left (bone, aorta, kidneys, skin)", fontsize=9)
    fig.subplots_adjust(left=0.0, right=0.95, bottom=0.02, top=0.95)
    caption = ("Surfaces from the label map (downsampled): bone grey-beige, aorta red, kidneys purple, skin faint; "
               "needles as coloured lines with their trajectory numbers at the skin entry.")
    return Figure(title="3D overview", caption=caption, png=_png(fig))


def relief_curve(estimate: Any, weeks: np.ndarray) -> np.ndarray:
    """P(still relieved | response) over ``weeks`` for the estimate's inputs (shipped model)."""
    from planner.analgesia import ClinicalInputs, load_model
    from planner.analgesia.features import encode

    x = encode(ClinicalInputs.from_mapping(estimate.inputs))
    return np.asarray(load_model().relieved_survival(x[None, :], np.asarray(weeks, float)))[0]


def relief_figure(estimate: Any) -> Figure:
    """The relief curve with the estimate's time points, their 80% intervals and the median."""
    weeks = np.linspace(0.0, 52.0, 105)
    curve = relief_curve(estimate, weeks)
    fig = _figure(6.4, 3.2)
    ax = fig.add_axes((0.1, 0.16, 0.86, 0.72))
    ax.plot(weeks, curve, color="#1f77b4", linewidth=2, label="if it responds")
    ax.plot(weeks, curve * estimate.p_response, color="#1f77b4", linewidth=1.2, linestyle="--",
            label="including non-response")
    for tp in estimate.timepoints:
        lo, hi = tp.p_relieved_if_response_interval_80
        ax.errorbar([tp.weeks], [tp.p_relieved_if_response], yerr=[[tp.p_relieved_if_response - lo],
                    [hi - tp.p_relieved_if_response]], fmt="o", color="#d62728", markersize=4, capsize=3)
    if estimate.median_relief_weeks is not None and math.isfinite(estimate.median_relief_weeks):
        ax.axvline(estimate.median_relief_weeks, color="#d62728", linestyle=":", linewidth=1)
        ax.text(estimate.median_relief_weeks, 0.97, f" median {estimate.median_relief_weeks:.1f} wk", fontsize=7,
                va="top", color="#d62728")
    ax.set_xlim(0, 52)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("weeks after the procedure", fontsize=8)
    ax.set_ylabel("P(still relieved)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("Predicted relief (synthetic-cohort model): points = time points with 80% intervals", fontsize=8)
    caption = SYNTHETIC_NOTE
    return Figure(title="Relief curve", caption=caption, png=_png(fig))


# ---------------------------------------------------------------------------- HTML
_CSS = """body{font-family:Helvetica,Arial,sans-serif;max-width:1000px;margin:1em auto;color:#111;font-size:14px}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:1px solid #888;margin-top:1.6em}h3{font-size:1.05em;margin:1em 0 .3em}
.statement{border:2px solid #b00;background:#fee;padding:.6em;font-weight:bold}
table{border-collapse:collapse;margin:.3em 0;font-size:12px}td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}
th{background:#eee}.note{font-size:11px;color:#444;margin:.2em 0 .8em}figure{margin:1em 0}
figcaption{font-size:11px;color:#333}.warn{color:#8a4b00}img{max-width:100%}"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return f"<h3>{html.escape(t.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def render_html(report: Report) -> str:
    """Self-contained HTML (figures embedded as base64 PNG)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1><p>{html.escape(report.subtitle)}</p>",
             f"<p class='statement'>{html.escape(report.statement)}</p>"]
    if report.warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>"
                                                         for w in report.warnings) + "</ul>")
    figures = list(report.figures)
    for section, tables in report.sections:
        parts.append(f"<h2>{html.escape(section)}</h2>")
        parts.extend(_html_table(t) for t in tables)
        if section == "Trajectories":
            for f in [f for f in figures if f.title != "Relief curve"]:
                parts.append(_html_figure(f))
        if section == "Analgesia":
            for f in [f for f in figures if f.title == "Relief curve"]:
                parts.append(_html_figure(f))
    parts.append("<h2>Notes</h2>" + "".join(f"<p>{html.escape(n)}</p>" for n in report.notes))
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f"<figure><img alt='{html.escape(f.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------- PDF
def render_pdf(report: Report) -> bytes:
    """A4 PDF (reportlab): the statement on every page, tables and figures in report order."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import CondPageBreak, Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table as RLTable
    from reportlab.platypus import TableStyle

    styles = getSampleStyleSheet()
    cell = ParagraphStyle("cell", parent=styles["BodyText"], fontSize=7, leading=8.5, alignment=TA_LEFT)
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    note = ParagraphStyle("note", parent=styles["BodyText"], fontSize=7, leading=9, textColor=colors.HexColor("#444444"))
    statement = ParagraphStyle("statement", parent=styles["BodyText"], fontSize=9, leading=11,
                               textColor=colors.HexColor("#990000"), borderColor=colors.HexColor("#990000"),
                               borderWidth=1, borderPadding=4, fontName="Helvetica-Bold")
    buf = io.BytesIO()
    width = A4[0] - 30 * mm

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 6.5)
        canvas.setFillColor(colors.HexColor("#990000"))
        canvas.drawString(15 * mm, 8 * mm, "Research and education software - not for clinical decisions.")
        canvas.setFillColor(colors.black)
        canvas.drawRightString(A4[0] - 15 * mm, 8 * mm, f"{report.meta.get('case', '')}  page {doc.page}")
        canvas.restoreState()

    def esc(text: str) -> str:
        return html.escape(text, quote=False)

    def wrap_header(text: str) -> str:
        words = text.split()
        if len(text) <= 10 or len(words) < 2:
            return text
        cut = min(range(1, len(words)), key=lambda i: abs(len(" ".join(words[:i])) - len(text) / 2))
        return " ".join(words[:cut]) + "\n" + " ".join(words[cut:])

    def table(t: Table) -> list[Any]:
        if len(t.header) == 2:  # key/value: wrapped paragraphs in fixed columns
            data = [[Paragraph(esc(h), head) for h in t.header]] + [[Paragraph(esc(c), cell) for c in row]
                                                                     for row in t.rows]
            widths: Any = [0.38 * width, 0.62 * width]
        else:  # grids of numbers: plain cells, columns sized to their content
            data = [[wrap_header(h) for h in t.header]] + [list(row) for row in t.rows]
            widths = None
        rl = RLTable(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
        rl.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8e8e8")),
                                ("VALIGN", (0, 0), (-1, -1), "TOP"), ("FONTSIZE", (0, 0), (-1, -1), 7),
                                ("LEADING", (0, 0), (-1, -1), 8.5), ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                                ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
        out: list[Any] = [Paragraph(esc(t.title), styles["Heading4"]), rl]
        if t.note:
            out.append(Paragraph(esc(t.note), note))
        return [KeepTogether(out) if len(t.rows) < 25 else out[0]] + ([] if len(t.rows) < 25 else out[1:])

    def figure(f: Figure) -> Any:
        from PIL import Image as PILImage

        w, h = PILImage.open(io.BytesIO(f.png)).size
        draw_w = min(width, 170 * mm)
        return KeepTogether([Image(io.BytesIO(f.png), width=draw_w, height=draw_w * h / w),
                             Paragraph(esc(f.caption), note), Spacer(1, 3 * mm)])

    story: list[Any] = [Paragraph(esc(report.title), styles["Title"]), Paragraph(esc(report.subtitle), styles["Normal"]),
                        Spacer(1, 3 * mm), Paragraph(esc(report.statement), statement), Spacer(1, 3 * mm)]
    if report.warnings:
        story.append(Paragraph("Warnings", styles["Heading3"]))
        story.extend(Paragraph("- " + esc(w), note) for w in report.warnings)
    for section, tables in report.sections:
        story.append(CondPageBreak(70 * mm))  # no section heading alone at the foot of a page
        story.append(Paragraph(esc(section), styles["Heading2"]))
        for t in tables:
            story.extend(table(t))
        if section == "Trajectories":
            story.extend(figure(f) for f in report.figures if f.title != "Relief curve")
        if section == "Analgesia":
            story.extend(figure(f) for f in report.figures if f.title == "Relief curve")
    story.append(Paragraph("Notes", styles["Heading2"]))
    story.extend(Paragraph(esc(n), styles["BodyText"]) for n in report.notes)
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=12 * mm,
                            bottomMargin=14 * mm, title=report.title, author="plexus-planner",
                            subject="Research and education software, not for clinical decisions")
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buf.getvalue()


# ---------------------------------------------------------------------------- files
def write_outputs(out_dir: str | Path, plan: Any, report: Report) -> dict[str, Path]:
    """Write ``plan.json``, ``report.html`` and ``report.pdf`` into ``out_dir``.

    All three are rendered in memory first; each file is then written atomically, so a
    failure while rendering leaves no file and a reader never sees a partial one.
    """
    folder = Path(out_dir)
    payloads = {"plan.json": plan.to_json().encode("utf-8"), "report.html": report.to_html().encode("utf-8"),
                "report.pdf": report.to_pdf()}
    written: dict[str, Path] = {}
    for name in REPORT_FILES:
        target = folder / name
        with atomic_output(target) as tmp:
            tmp.write_bytes(payloads[name])
        written[name] = target
    return written


def write_plan_report(out_dir: str | Path, plan: Any, image: Volume, labels: Volume,
                      clinical: Mapping[str, Any] | None = None, include_identifiers: bool = False
                      ) -> tuple[dict[str, Path], Any | None, str]:
    """Estimate, report and files in one call (what ``plexplan plan`` and a viewer's export use).

    ``labels`` may lack the target regions (they are derived as in planning). Returns the
    files written, the estimate (or ``None``) and, without an estimate, the reason.
    """
    from planner.plan import _with_targets

    estimate, reason = estimate_or_reason(plan, clinical)
    report = build_report(plan, image, _with_targets(labels, plan.target) if plan.target else labels, estimate,
                          include_identifiers=include_identifiers, clinical_entered=tuple(clinical or {}),
                          no_estimate_reason=reason)
    return write_outputs(out_dir, plan, report), estimate, reason

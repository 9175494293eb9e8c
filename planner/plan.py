"""The typed, versioned ``Plan``: ranked needle trajectories with their metrics, as JSON.

A plan is what the planner hands to the report, the napari widgets and the analgesia
estimate. Coordinates are patient LPS millimetres, so a plan survives another viewer.
Files are written atomically and validated on load: an unknown version or a malformed
file raises :class:`planner.errors.PlanError` naming the file and the problem.

Example:
    >>> import tempfile, pathlib
    >>> from planner.plan import Plan, Trajectory
    >>> t = Trajectory(entry_lps_mm=(60.0, 110.0, 0.0), target_lps_mm=(20.0, 0.0, 0.0), length_mm=117.0,
    ...                feasible=True, min_clearance_mm={"aorta": 6.0}, risk=0.1, p_oar_contact=0.01,
    ...                gantry_angle_deg=0.0)
    >>> plan = Plan(case="demo", procedure="celiac_posterior_retrocrural", approach="posterior retrocrural",
    ...             bilateral=False, celiac_axis_encased=None, spread={"quadrants": 2, "rule": "..."},
    ...             trajectories=(t,))
    >>> path = plan.save(pathlib.Path(tempfile.mkdtemp()) / "plan.json")
    >>> Plan.load(path).trajectories[0].length_mm
    117.0
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from planner import __version__
from planner.errors import PlanError
from planner.volume import Volume, atomic_output

PLAN_VERSION = 1
DISCLAIMER = ("Research and education software, not a medical device. Trajectories are suggestions "
              "computed from a label map; a qualified physician must verify every path on the images "
              "before any procedure.")
REQUIRED_TRAJECTORY_KEYS = ("entry_lps_mm", "target_lps_mm", "length_mm", "feasible", "min_clearance_mm",
                            "risk", "p_oar_contact", "gantry_angle_deg")
REQUIRED_PLAN_KEYS = ("version", "case", "procedure", "approach", "bilateral", "celiac_axis_encased", "spread",
                      "trajectories", "software", "disclaimer")


def _num(value: Any, what: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise PlanError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _point(value: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise PlanError(f"{what} must be a list of 3 LPS mm values, got {value!r}")
    return tuple(_num(v, what) for v in value)  # type: ignore[return-value]


@dataclass(frozen=True)
class Trajectory:
    """One ranked needle path. ``details`` holds every further metric (angles, robustness...)."""

    entry_lps_mm: tuple[float, float, float]
    target_lps_mm: tuple[float, float, float]
    length_mm: float
    feasible: bool
    min_clearance_mm: Mapping[str, float]
    risk: float
    p_oar_contact: float | None
    gantry_angle_deg: float | None
    rank: int = 1
    side: str = "both"
    role: str = "primary"
    needle_length_mm: float | None = None
    reasons: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Any, rank: int, role: str) -> "Trajectory":
        """From a :class:`planner.trajectory.PathMetrics`."""
        d = metrics.to_dict()
        core = {k: d.pop(k) for k in REQUIRED_TRAJECTORY_KEYS}
        return cls.from_dict({**core, "rank": rank, "side": d.pop("side"), "role": role,
                              "needle_length_mm": d.pop("needle_length_mm"), "reasons": d.pop("reasons"), **d})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rank": self.rank, "side": self.side, "role": self.role,
            "entry_lps_mm": list(self.entry_lps_mm), "target_lps_mm": list(self.target_lps_mm),
            "length_mm": self.length_mm, "needle_length_mm": self.needle_length_mm, "feasible": self.feasible,
            "reasons": list(self.reasons), "min_clearance_mm": dict(self.min_clearance_mm), "risk": self.risk,
            "p_oar_contact": self.p_oar_contact, "gantry_angle_deg": self.gantry_angle_deg,
        }
        out.update({k: v for k, v in self.details.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "trajectory") -> "Trajectory":
        if not isinstance(d, Mapping):
            raise PlanError(f"{where} must be an object, got {type(d).__name__}")
        missing = [k for k in REQUIRED_TRAJECTORY_KEYS if k not in d]
        if missing:
            raise PlanError(f"{where} lacks {', '.join(missing)}")
        if not isinstance(d["feasible"], bool):
            raise PlanError(f"{where}.feasible must be true or false, got {d['feasible']!r}")
        clearance = d["min_clearance_mm"]
        if not isinstance(clearance, Mapping) or not all(isinstance(k, str) for k in clearance):
            raise PlanError(f"{where}.min_clearance_mm must map structure names to mm")
        reasons = d.get("reasons", [])
        if not isinstance(reasons, (list, tuple)) or not all(isinstance(r, str) for r in reasons):
            raise PlanError(f"{where}.reasons must be a list of strings")
        rank = d.get("rank", 1)
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise PlanError(f"{where}.rank must be an integer, got {rank!r}")
        known = set(REQUIRED_TRAJECTORY_KEYS) | {"rank", "side", "role", "needle_length_mm", "reasons"}
        return cls(
            entry_lps_mm=_point(d["entry_lps_mm"], f"{where}.entry_lps_mm"),
            target_lps_mm=_point(d["target_lps_mm"], f"{where}.target_lps_mm"),
            length_mm=_num(d["length_mm"], f"{where}.length_mm"),  # type: ignore[arg-type]
            feasible=d["feasible"],
            min_clearance_mm={k: _num(v, f"{where}.min_clearance_mm[{k}]") for k, v in clearance.items()},  # type: ignore[misc]
            risk=_num(d["risk"], f"{where}.risk"),  # type: ignore[arg-type]
            p_oar_contact=_num(d["p_oar_contact"], f"{where}.p_oar_contact", optional=True),
            gantry_angle_deg=_num(d["gantry_angle_deg"], f"{where}.gantry_angle_deg", optional=True),
            rank=rank, side=str(d.get("side", "both")), role=str(d.get("role", "primary")),
            needle_length_mm=_num(d.get("needle_length_mm"), f"{where}.needle_length_mm", optional=True),
            reasons=tuple(reasons), details={k: v for k, v in d.items() if k not in known},
        )


def software_versions() -> dict[str, str]:
    import numpy
    import scipy

    return {"name": "plexus-planner", "version": __version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__}


@dataclass(frozen=True)
class Plan:
    """A versioned needle plan for one case and procedure preset (see module docstring)."""

    case: str
    procedure: str
    approach: str
    bilateral: bool
    celiac_axis_encased: bool | None
    spread: Mapping[str, Any]
    trajectories: tuple[Trajectory, ...]
    software: Mapping[str, str] = field(default_factory=software_versions)
    models: Mapping[str, Any] = field(default_factory=dict)
    disclaimer: str = DISCLAIMER
    target: str = ""
    preset: Mapping[str, Any] = field(default_factory=dict)
    error_model: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Any] = field(default_factory=dict)
    search: Mapping[str, Any] = field(default_factory=dict)
    anatomy: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    created_utc: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    version: int = PLAN_VERSION

    @property
    def primary(self) -> tuple[Trajectory, ...]:
        """The recommended trajectories (two for a bilateral plan)."""
        return tuple(t for t in self.trajectories if t.role == "primary")

    @property
    def feasible(self) -> bool:
        """True when the plan is complete: every primary path feasible, two for bilateral."""
        primary = self.primary
        return (len(primary) == (2 if self.bilateral else 1)) and all(t.feasible for t in primary)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "case": self.case, "procedure": self.procedure, "approach": self.approach,
            "target": self.target, "bilateral": self.bilateral, "celiac_axis_encased": self.celiac_axis_encased,
            "spread": dict(self.spread), "trajectories": [t.to_dict() for t in self.trajectories],
            "software": dict(self.software), "models": dict(self.models), "preset": dict(self.preset),
            "error_model": dict(self.error_model), "grid": dict(self.grid), "search": dict(self.search),
            "anatomy": dict(self.anatomy), "warnings": list(self.warnings), "created_utc": self.created_utc, "disclaimer": self.disclaimer,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON atomically (never a partial file); returns the path."""
        target = Path(path)
        text = self.to_json()
        with atomic_output(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return target

    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> "Plan":
        if not isinstance(d, Mapping):
            raise PlanError(f"{source}: a plan must be a JSON object, got {type(d).__name__}")
        if d.get("version") != PLAN_VERSION:
            raise PlanError(f"{source}: unknown plan version {d.get('version')!r}; this software reads version "
                            f"{PLAN_VERSION} (upgrade plexus-planner or re-plan the case)")
        missing = [k for k in REQUIRED_PLAN_KEYS if k not in d]
        if missing:
            raise PlanError(f"{source}: malformed plan, missing {', '.join(missing)}")
        if not isinstance(d["bilateral"], bool):
            raise PlanError(f"{source}: bilateral must be true or false")
        if d["celiac_axis_encased"] is not None and not isinstance(d["celiac_axis_encased"], bool):
            raise PlanError(f"{source}: celiac_axis_encased must be true, false or null")
        spread = d["spread"]
        if (not isinstance(spread, Mapping) or isinstance(spread.get("quadrants"), bool)
                or not isinstance(spread.get("quadrants"), int) or not isinstance(spread.get("rule"), str)):
            raise PlanError(f"{source}: spread must be an object with an integer 'quadrants' and a string 'rule'")
        if not isinstance(d["trajectories"], list):
            raise PlanError(f"{source}: trajectories must be a list")
        trajectories = tuple(Trajectory.from_dict(t, f"{source}: trajectories[{i}]")
                             for i, t in enumerate(d["trajectories"]))
        for key in ("case", "procedure", "approach", "disclaimer"):
            if not isinstance(d[key], str):
                raise PlanError(f"{source}: {key} must be a string")
        for key in ("software", "models", "preset", "error_model", "grid", "search", "anatomy"):
            if key in d and not isinstance(d[key], Mapping):
                raise PlanError(f"{source}: {key} must be an object")
        return cls(case=d["case"], procedure=d["procedure"], approach=d["approach"], bilateral=d["bilateral"],
                   celiac_axis_encased=d["celiac_axis_encased"], spread=dict(spread), trajectories=trajectories,
                   software=dict(d["software"]), models=dict(d.get("models", {})), disclaimer=d["disclaimer"],
                   target=str(d.get("target", "")), preset=dict(d.get("preset", {})),
                   error_model=dict(d.get("error_model", {})), grid=dict(d.get("grid", {})),
                   search=dict(d.get("search", {})), anatomy=dict(d.get("anatomy", {})), warnings=tuple(str(w) for w in d.get("warnings", [])),
                   created_utc=str(d.get("created_utc", "")), version=PLAN_VERSION)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read and validate a plan file.

        Raises:
            PlanError: unreadable file, invalid JSON, unknown version or malformed content.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise PlanError(f"{p}: cannot read the plan file ({exc.strerror or exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{p}: not a valid JSON plan ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, source=str(p))


def grid_of(volume: Volume) -> dict[str, Any]:
    """The image grid a plan was made on (so a viewer can check it opens the same image)."""
    return {"shape_zyx": list(volume.shape), "spacing_zyx_mm": [round(s, 6) for s in volume.spacing],
            "origin_lps_mm": [round(o, 4) for o in volume.origin],
            "direction": [[round(v, 6) for v in row] for row in volume.direction.tolist()],
            "series_instance_uid": volume.source.series_instance_uid if volume.source else None}


def _with_targets(labels: Volume, target: str) -> Volume:
    """Labels holding the target region, derived by ``planner.targets`` when absent."""
    from planner.anatomy import structure

    if (labels.array == structure(target).label).any():
        return labels
    try:
        from planner.targets import add_targets  # type: ignore[attr-defined]
    except ImportError:
        raise PlanError(f"the label map has no {target!r} region and planner.targets is not available "
                        "to derive it") from None
    from planner.errors import LabelMapError

    try:
        derived = add_targets(labels, which=[target])
    except LabelMapError as exc:
        raise PlanError(f"the target region {target!r} is empty: the label map does not contain it and it "
                        f"cannot be derived ({exc})") from None
    if not (derived.array == structure(target).label).any():
        raise PlanError(f"the target region {target!r} is empty in the label map and after derivation")
    return derived


def build_plan(image: Volume, labels: Volume, procedure: str, case: str = "case", top_k: int = 5,
               seed: int = 0, models: Mapping[str, Any] | None = None, error_model: Any = None,
               n_targets: int = 24) -> Plan:
    """Plan a procedure on one case: search, rank, pair (bilateral), robustness, spread.

    Args:
        image: the image (CT or ultrasound) the labels belong to.
        labels: label map in the anatomy vocabulary on the image grid.
        procedure: preset name (``planner.presets.preset_names()``).
        case: case name stored in the plan.
        top_k: trajectories kept per side.
        seed: seeds target sampling (and nothing else random).
        models: what produced the labels (segmentation model name/version or imported file).

    Raises:
        PlanError: unknown preset, labels on another grid, empty target, target out of reach.
    """
    import time

    from planner.distance import CaseGeometry, check_same_grid
    from planner.presets import get_preset
    from planner.spread import (ENCASED_CONTACT_FRACTION, celiac_axis_encased, celiac_contact_fraction,
                                celiac_origin_lps, estimate_spread)
    from planner.trajectory import PathPlanner, PlacementError, sides_for, single_frame, target_frame

    preset = get_preset(procedure)
    check_same_grid(image, labels)
    labels = _with_targets(labels, preset.target)
    frame_note: dict[str, Any] = {}
    if preset.in_plane and labels.shape[0] > 1:  # a cine: plan in the frame showing most of the target
        frame = target_frame(labels, preset.target)
        image, labels = single_frame(image, frame), single_frame(labels, frame)
        frame_note = {"frame": frame}
    t0 = time.perf_counter()
    geometry = CaseGeometry(labels=labels, image=image)
    planner = PathPlanner(geometry, preset, error_model=error_model or PlacementError(), seed=seed)
    per_side: dict[str, list[Any]] = {}
    stats: dict[str, Any] = {"sides": {}}
    for side in sides_for(preset):
        paths, cands = planner.best_paths(side, k=top_k, n_targets=n_targets)
        per_side[side] = paths
        stats["sides"][side] = {"candidate_paths": cands.n_paths, "entries": cands.n_entries,
                                "targets": cands.n_targets, "sampled_paths": cands.n_sampled,
                                "samples": cands.n_samples, "seconds": round(cands.elapsed_s, 3),
                                "reasons": cands.reason_counts()}
    warnings: list[str] = []
    primary: list[tuple[str, int]] = []
    if preset.bilateral:
        left, right = per_side["left"], per_side["right"]
        pair = planner.best_pair(left, right)
        if pair is not None:
            primary = [("left", pair[0]), ("right", pair[1])]
        else:
            for side in ("left", "right"):
                feas = [i for i, m in enumerate(per_side[side]) if m.feasible]
                if feas:
                    primary.append((side, feas[0]))
            warnings.append("no non-clashing feasible left/right pair: "
                            + ("unilateral plan only" if primary else "no feasible path on either side"))
    else:
        side = sides_for(preset)[0]
        feas = [i for i, m in enumerate(per_side[side]) if m.feasible]
        if feas:
            primary = [(side, feas[0])]
    if not primary:
        warnings.append("no feasible trajectory: the listed paths are the closest candidates, each with the "
                        "reasons it fails")
    trajectories: list[Trajectory] = []
    chosen = set(primary)
    for side, i in primary:
        trajectories.append(Trajectory.from_metrics(per_side[side][i], rank=1, role="primary"))
    for side, paths in per_side.items():
        rank = 2
        for i, m in enumerate(paths):
            if (side, i) in chosen:
                continue
            role = "alternative" if m.feasible else "infeasible"
            trajectories.append(Trajectory.from_metrics(m, rank=rank, role=role))
            rank += 1
    tips = [t.target_lps_mm for t in trajectories if t.role == "primary"]
    spread = estimate_spread(geometry, tips, target=preset.target) if preset.modality == "CT" else None
    spread_dict = spread.to_dict() if spread else {"quadrants": 0, "rule": "not applicable to this procedure"}
    fraction = celiac_contact_fraction(geometry)
    origin = celiac_origin_lps(geometry)
    anatomy = {"midline_x_mm": round(planner.midline_x, 2),
               "celiac_origin_lps_mm": None if origin is None else [round(float(v), 2) for v in origin],
               "celiac_tumour_contact_fraction": None if fraction is None else round(fraction, 3),
               "celiac_tumour_contact_deg": None if fraction is None else round(360.0 * fraction, 1),
               "celiac_axis_encased_rule": f"tumour contact >= {ENCASED_CONTACT_FRACTION:g} of the celiac trunk "
                                           "circumference (stricter radiological encasement: > 0.5)"}
    stats["seconds_total"] = round(time.perf_counter() - t0, 3)
    stats.update(frame_note)
    return Plan(
        case=case, procedure=preset.name, approach=preset.approach, bilateral=preset.bilateral,
        celiac_axis_encased=celiac_axis_encased(geometry), spread=spread_dict,
        trajectories=tuple(trajectories), models=dict(models or {}),
        target=preset.target, preset=preset.to_dict(), error_model=planner.error_model.to_dict(),
        grid=grid_of(image), search=stats, anatomy=anatomy,
        warnings=tuple(warnings),
    )


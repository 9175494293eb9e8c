"""Procedure presets, read from ``planner/data/presets.json`` (data, not code).

A preset says what the planner may and may not do for one procedure and approach: the
target region, which structures the needle may cross (the crus for a transcrural route,
the aorta only for the transaortic one), the hard margin per structure (defaults from
:mod:`planner.anatomy`), the needle lengths, the largest gantry (axial-plane) and skin
angles, the patient position (a prone patient allows only posterior entries) and whether
the plan is bilateral. Adding a procedure means adding one JSON entry.

Example:
    >>> from planner.presets import get_preset
    >>> p = get_preset("celiac_transcrural")
    >>> "diaphragm_crura" in p.crossable and p.bilateral
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from planner.anatomy import structure
from planner.errors import LabelMapError, PlanError

PRESETS_FILE = Path(__file__).resolve().parent / "data" / "presets.json"
PRESETS_VERSION = 1
SIDES = ("both", "left", "right")
POSITIONS = ("prone", "supine", "lateral")


@dataclass(frozen=True)
class Preset:
    """One procedure preset (see ``planner/data/presets.json`` for the meaning of fields)."""

    name: str
    display_name: str
    procedure: str
    approach: str
    target: str
    modality: str = "CT"
    bilateral: bool = False
    side: str = "both"
    patient_position: str = "prone"
    entry_direction_lps: tuple[float, float, float] = (0.0, 1.0, 0.0)
    entry_cone_deg: float = 50.0
    entry_from_midline_mm: tuple[float, float] | None = None
    sagittal_angle_deg: tuple[float, float] | None = None
    split_tips_at: str = "midline"
    crossable: tuple[str, ...] = ()
    margins_mm: Mapping[str, float] = field(default_factory=dict)
    needle_lengths_mm: tuple[float, ...] = (100.0, 150.0, 200.0)
    needle_reserve_mm: float = 10.0
    max_gantry_angle_deg: float | None = 25.0
    max_skin_angle_deg: float | None = 60.0
    preferred_clearance_mm: float = 15.0
    needle_clash_mm: float = 5.0
    min_entry_separation_mm: float = 10.0
    sample_step_mm: float = 1.0
    weights: Mapping[str, float] = field(default_factory=lambda: {"risk": 1.0, "length": 0.3, "angle": 0.3})
    in_plane: bool = False
    probe_edge_mm: float = 3.0
    max_in_plane_angle_deg: float | None = None
    visibility_angles_deg: tuple[float, float] = (30.0, 60.0)
    expected: Mapping[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ()

    def margin(self, name: str) -> float:
        """Hard margin (mm) for a structure: the preset's value, else the vocabulary default."""
        if name in self.margins_mm:
            return float(self.margins_mm[name])
        return float(structure(name).margin_mm)

    def is_crossable(self, name: str) -> bool:
        return name in self.crossable

    @property
    def max_path_mm(self) -> float:
        """Longest skin-to-target path the longest needle reaches (needle minus hub reserve)."""
        return max(self.needle_lengths_mm) - self.needle_reserve_mm

    def needle_for(self, length_mm: float) -> float | None:
        """Shortest needle that reaches a path of ``length_mm``, or ``None``."""
        for needle in sorted(self.needle_lengths_mm):
            if length_mm <= needle - self.needle_reserve_mm:
                return float(needle)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot (stored in plans so a plan shows the rules it was made with)."""
        return {
            "name": self.name, "display_name": self.display_name, "procedure": self.procedure,
            "approach": self.approach, "target": self.target, "modality": self.modality,
            "bilateral": self.bilateral, "side": self.side, "patient_position": self.patient_position,
            "entry_from_midline_mm": None if self.entry_from_midline_mm is None else list(self.entry_from_midline_mm),
            "sagittal_angle_deg": None if self.sagittal_angle_deg is None else list(self.sagittal_angle_deg),
            "crossable": list(self.crossable), "margins_mm": dict(self.margins_mm),
            "needle_lengths_mm": list(self.needle_lengths_mm), "needle_reserve_mm": self.needle_reserve_mm,
            "max_gantry_angle_deg": self.max_gantry_angle_deg, "max_skin_angle_deg": self.max_skin_angle_deg,
            "preferred_clearance_mm": self.preferred_clearance_mm, "needle_clash_mm": self.needle_clash_mm,
            "in_plane": self.in_plane,
        }


def _validate(name: str, raw: Mapping[str, Any]) -> Preset:
    try:
        preset = Preset(
            name=name,
            display_name=str(raw.get("display_name", name)),
            procedure=str(raw["procedure"]),
            approach=str(raw["approach"]),
            target=str(raw["target"]),
            modality=str(raw["modality"]),
            bilateral=bool(raw["bilateral"]),
            side=str(raw["side"]),
            patient_position=str(raw["patient_position"]),
            entry_direction_lps=tuple(float(v) for v in raw["entry_direction_lps"]),  # type: ignore[arg-type]
            entry_cone_deg=float(raw["entry_cone_deg"]),
            split_tips_at=str(raw.get("split_tips_at", "midline")),
            entry_from_midline_mm=(None if raw.get("entry_from_midline_mm") is None
                                   else tuple(float(v) for v in raw["entry_from_midline_mm"])),  # type: ignore[arg-type]
            sagittal_angle_deg=(None if raw.get("sagittal_angle_deg") is None
                                else tuple(float(v) for v in raw["sagittal_angle_deg"])),  # type: ignore[arg-type]
            crossable=tuple(str(v) for v in raw["crossable"]),
            margins_mm={str(k): float(v) for k, v in raw["margins_mm"].items()},
            needle_lengths_mm=tuple(sorted(float(v) for v in raw["needle_lengths_mm"])),
            needle_reserve_mm=float(raw["needle_reserve_mm"]),
            max_gantry_angle_deg=None if raw["max_gantry_angle_deg"] is None else float(raw["max_gantry_angle_deg"]),
            max_skin_angle_deg=None if raw["max_skin_angle_deg"] is None else float(raw["max_skin_angle_deg"]),
            preferred_clearance_mm=float(raw["preferred_clearance_mm"]),
            needle_clash_mm=float(raw["needle_clash_mm"]),
            min_entry_separation_mm=float(raw["min_entry_separation_mm"]),
            sample_step_mm=float(raw["sample_step_mm"]),
            weights={str(k): float(v) for k, v in raw["weights"].items()},
            in_plane=bool(raw["in_plane"]),
            probe_edge_mm=float(raw.get("probe_edge_mm", 3.0)),
            max_in_plane_angle_deg=(None if raw.get("max_in_plane_angle_deg") is None
                                    else float(raw["max_in_plane_angle_deg"])),
            visibility_angles_deg=tuple(float(v) for v in raw.get("visibility_angles_deg", (30.0, 60.0))),  # type: ignore[arg-type]
            expected=dict(raw.get("expected", {})),
            references=tuple(str(v) for v in raw.get("references", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{PRESETS_FILE}: preset {name!r} is malformed ({type(exc).__name__}: {exc})") from None
    try:
        for n in (preset.target, *preset.crossable, *preset.margins_mm):
            structure(n)
    except LabelMapError as exc:
        raise PlanError(f"{PRESETS_FILE}: preset {name!r} names an unknown structure: {exc}") from None
    problems = []
    if preset.side not in SIDES:
        problems.append(f"side {preset.side!r} not in {SIDES}")
    if preset.split_tips_at not in ("midline", "aorta"):
        problems.append(f"split_tips_at {preset.split_tips_at!r} not in ('midline', 'aorta')")
    if preset.patient_position not in POSITIONS:
        problems.append(f"patient_position {preset.patient_position!r} not in {POSITIONS}")
    if not preset.needle_lengths_mm or min(preset.needle_lengths_mm) <= preset.needle_reserve_mm:
        problems.append("needle_lengths_mm must be longer than needle_reserve_mm")
    if preset.sagittal_angle_deg is not None and not (
            len(preset.sagittal_angle_deg) == 2 and 0 <= preset.sagittal_angle_deg[0] < preset.sagittal_angle_deg[1] <= 90):
        problems.append(f"sagittal_angle_deg {list(preset.sagittal_angle_deg)} must be [low, high] within 0-90 deg")
    if not 0 < preset.sample_step_mm <= 1.0:
        problems.append("sample_step_mm must be in (0, 1] mm")
    if problems:
        raise PlanError(f"{PRESETS_FILE}: preset {name!r}: " + "; ".join(problems))
    return preset


def load_presets(path: str | Path = PRESETS_FILE) -> dict[str, Preset]:
    """Read and validate a presets file (defaults merged into each preset)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{p}: cannot read the presets file ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != PRESETS_VERSION:
        raise PlanError(f"{p}: presets file version {data.get('version') if isinstance(data, dict) else None!r} "
                        f"is not the supported version {PRESETS_VERSION}")
    defaults = dict(data.get("defaults", {}))
    return {name: _validate(name, {**defaults, **raw}) for name, raw in data.get("presets", {}).items()}


@lru_cache(maxsize=1)
def _bundled() -> dict[str, Preset]:
    return load_presets(PRESETS_FILE)


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(_bundled()))


def get_preset(name: str | Preset) -> Preset:
    """A bundled preset by name (a :class:`Preset` passes through).

    Raises:
        PlanError: for an unknown name, listing the known ones.
    """
    if isinstance(name, Preset):
        return name
    found = _bundled().get(str(name))
    if found is None:
        raise PlanError(f"unknown procedure preset {name!r}; known presets: {', '.join(preset_names())}")
    return found

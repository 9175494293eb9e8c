"""The planning session behind the dock widget (pure: no napari or Qt import).

It holds the case (image, labels), the procedure preset, the ranked plan and the path the
physician is adjusting, and converts between napari world ``[z, y, x]`` mm and patient LPS
mm. Every number it returns is computed by ``planner`` (:mod:`planner.trajectory`,
:mod:`planner.plan`, :mod:`planner.analgesia`); this module only routes and formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from planner.errors import LabelMapError, PlanError, PlannerError
from planner.volume import Volume

ProgressCallback = Callable[[float, str], None]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of a planner result."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def fmt_mm(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if not np.isfinite(value):
        return "> max" if value > 0 else "inside"
    return f"{value:.1f}"


@dataclass
class PlanningSession:
    """One case being planned: image, labels, preset, plan and the adjusted path."""

    image: Volume
    labels: Volume | None = None
    preset: str | None = None
    plan: Any = None
    selected: int | None = None
    current: Any = None
    _planner: Any = field(default=None, repr=False)

    # ------------------------------------------------------------- case and labels
    def set_labels(self, labels: Volume) -> None:
        """Use ``labels`` (checked to lie on the image grid); drops any plan made before."""
        from planner.distance import check_same_grid

        check_same_grid(self.image, labels)
        self.labels = labels
        self._planner = None
        self.plan = None
        self.selected = None
        self.current = None

    def set_preset(self, name: str) -> None:
        if name != self.preset:
            self.preset = name
            self._planner = None

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
    def _require_labels(self) -> Volume:
        if self.labels is None:
            raise PlanError("no label map yet: segment the image or load a label map first")
        if self.preset is None:
            raise PlanError("no procedure preset chosen")
        return self.labels

    @property
    def trajectories(self) -> Sequence[Any]:
        return list(_get(self.plan, "trajectories", []) or []) if self.plan is not None else []

    def plan_now(self, progress: ProgressCallback | None = None) -> Any:
        """Run the ranked search (planner.plan) for the preset on the labels; keeps the plan."""
        labels = self._require_labels()
        from planner.plan import make_plan

        self.plan = make_plan(self.image, labels, self.preset)
        self.selected = None
        self.current = None
        return self.plan

    def select(self, index: int) -> Any:
        """Make ranked trajectory ``index`` the path being shown and adjusted."""
        trajectories = self.trajectories
        if not 0 <= index < len(trajectories):
            raise PlanError(f"no trajectory {index + 1}: the plan has {len(trajectories)}")
        self.selected = index
        self.current = trajectories[index]
        return self.current

    def evaluate_world(self, entry_zyx: np.ndarray, target_zyx: np.ndarray) -> Any:
        """Every metric of the straight path between two napari points (planner.trajectory)."""
        raise NotImplementedError

    @staticmethod
    def is_feasible(trajectory: Any) -> bool:
        return bool(_get(trajectory, "feasible", False))


# ------------------------------------------------------------------ choices for the widget
def available_presets() -> list[tuple[str, str]]:
    """``(name, display name)`` of every bundled procedure preset (planner.presets)."""
    from planner.presets import get_preset, preset_names

    return [(name, get_preset(name).display_name) for name in preset_names()]


def available_bundles() -> list[tuple[str, Path]]:
    """``(name, folder)`` of every MONAI bundle shipped in ``models/`` (metadata only, no torch)."""
    from planner.resources import models_dir
    from segmentation.bundle import METADATA

    try:
        root = models_dir()
    except PlannerError:
        return []
    return [(p.name, p) for p in sorted(root.iterdir()) if (p / METADATA).is_file()] if root.is_dir() else []


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

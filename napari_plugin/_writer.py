"""npe2 writers: a Labels layer to NIfTI or DICOM SEG, a plan layer to plan JSON.

Each writer rebuilds the :class:`planner.volume.Volume` the layer shows (its grid is kept
in ``metadata["volume"]``, see :mod:`napari_plugin._layers`) and calls ``planner`` to
write, so files are written atomically and match what the CLI writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_plugin._layers import PLAN_KEY, volume_from_layer
from planner.errors import PlannerError


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Labels layer -> ``.nii``/``.nii.gz`` on the layer's grid (LPS geometry preserved)."""
    from planner.volume import save_nifti

    labels = volume_from_layer(np.asarray(data).astype(np.uint8), meta)
    return [str(save_nifti(labels, path))]


def write_labels_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Labels layer -> DICOM SEG referencing the source series (needs a DICOM-loaded image)."""
    from planner.dicom_seg import write_seg

    labels = volume_from_layer(np.asarray(data).astype(np.uint8), meta)
    if labels.source is None:
        raise PlannerError(f"{path}: a DICOM SEG must reference a DICOM series; these labels lie on a "
                           "grid that was not loaded from DICOM - save them as NIfTI (.nii.gz) instead")
    return [str(write_seg(labels, None, path))]


def write_plan(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """A plan layer (made by the planning widget or the plan reader) -> plan JSON."""
    plan = (meta.get("metadata") or {}).get(PLAN_KEY)
    if plan is None:
        raise PlannerError(f"{path}: layer {meta.get('name')!r} carries no plan; select the needle layer "
                           "made by the planning widget")
    return [str(plan.save(Path(path)))]

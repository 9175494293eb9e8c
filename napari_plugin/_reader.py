"""npe2 reader: DICOM folders and files, NIfTI images and label maps, plan JSON.

:func:`get_reader` only looks (file name, a few bytes); it returns ``None`` for anything
it does not take and never raises. The returned reader loads through ``planner`` and
places every layer in mm (see :mod:`napari_plugin._layers`). Errors that the user can
fix arrive as :class:`planner.errors.PlannerError` with the file named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from napari_plugin._layers import LayerData, image_layer_data, labels_layer_data

#: how many entries of a folder are looked at before deciding it holds no DICOM
_FOLDER_SCAN_LIMIT = 500
#: the first bytes of a plan file must mention this key (see planner.plan)
_PLAN_MARKERS = (b'"trajectories"',)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _folder_has_dicom(path: Path) -> bool:
    seen = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            seen += 1
            if seen > _FOLDER_SCAN_LIMIT:
                return False
            candidate = Path(root) / name
            if name.lower().endswith(".dcm") or _is_dicom_file(candidate):
                return True
    return False


def _is_plan_json(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and any(m in head for m in _PLAN_MARKERS)


def _single_path(path: str | list[str]) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    return Path(path)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for ``path``, or ``None`` when it is not a DICOM, NIfTI or plan file."""
    try:
        from planner.volume import is_nifti

        p = _single_path(path)
        if p is None or not p.exists():
            return None
        if p.is_dir():
            return read_volume if _folder_has_dicom(p) else None
        if is_nifti(p):
            return read_volume
        if _is_plan_json(p):
            return read_plan
        if p.suffix.lower() == ".dcm" or _is_dicom_file(p):
            # a SEG has no grid of its own here: load it with the planning widget on its image
            return None if _is_dicom_seg(p) else read_volume
        return None
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return None


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def looks_like_label_map(array: np.ndarray) -> bool:
    """An integer array whose values are all vocabulary labels (not an image in HU)."""
    from planner import anatomy

    if array.dtype.kind not in "iub":
        return False
    values = np.unique(array)
    known = {s.label for s in anatomy.STRUCTURES} | {anatomy.BACKGROUND}
    return len(values) <= len(known) and set(int(v) for v in values) <= known and len(values) > 1


def _is_dicom_seg(path: Path) -> bool:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.66.4"
    except Exception:  # noqa: BLE001 - not a readable DICOM: the volume loader will say why
        return False


def read_volume(path: str | list[str]) -> list[LayerData]:
    """A DICOM series or NIfTI file as an Image layer (a NIfTI label map as Labels) in mm."""
    from planner.volume import load

    p = _single_path(path)
    assert p is not None
    volume = load(p)
    if p.is_file() and looks_like_label_map(np.asarray(volume.array)):
        return [labels_layer_data(volume, _layer_name(p))]
    return [image_layer_data(volume, _layer_name(p))]


def read_plan(path: str | list[str]) -> list[LayerData]:
    """A plan JSON as the needle paths (Shapes) with the plan in ``metadata["plan"]``."""
    from napari_plugin._layers import plan_layer_data
    from planner.plan import Plan

    p = _single_path(path)
    assert p is not None
    plan = Plan.load(p)
    return plan_layer_data(plan, name=_layer_name(p))


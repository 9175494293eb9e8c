"""npe2 reader: DICOM folders and files, NIfTI. Never raises for files it does not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from planner.volume import Volume

LayerData = tuple[Any, dict[str, Any], str]


def _looks_readable(path: Path) -> bool:
    from planner.volume import is_nifti

    if path.is_dir() or is_nifti(path) or path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_volume` when ``path`` looks like an image we read, else ``None``."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_volume if _looks_readable(Path(path)) else None


def volume_layer_data(volume: Volume, name: str) -> LayerData:
    """Image layer placed in mm: napari ``scale``/``translate`` from the Volume grid."""
    meta: dict[str, Any] = {
        "name": name,
        "scale": volume.spacing,
        "translate": volume.origin_zyx,
        "metadata": {"modality": volume.modality, "warnings": list(volume.warnings)},
    }
    if volume.modality == "CT":
        meta["contrast_limits"] = (-160.0, 240.0)
    return (volume.array, meta, "image")


def read_volume(path: str | list[str]) -> list[LayerData]:
    from planner.volume import load

    p = Path(path[0] if isinstance(path, list) else path)
    volume = load(p)
    return [volume_layer_data(volume, p.name.replace(".nii.gz", "").replace(".nii", ""))]

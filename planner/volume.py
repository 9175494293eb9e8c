"""The image volume every module shares, and loading it from DICOM or NIfTI.

``Volume.array`` is indexed ``[z, y, x]``; ``spacing`` is in mm in the same order;
``origin`` is the patient LPS position (x, y, z in mm) of voxel ``[0, 0, 0]``;
``direction`` is the ITK 3x3 direction matrix whose *columns* are the LPS directions of
the x, y and z index axes. So for an index ``(z, y, x)``::

    lps = origin + direction @ ((x, y, z) * spacing[::-1])

napari works in ``[z, y, x]`` millimetres with ``scale=spacing`` and
``translate=origin_zyx``; :meth:`Volume.napari_to_lps` and :meth:`Volume.lps_to_napari`
convert between that space and patient LPS, so rotated grids stay exact.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from planner.errors import PlannerError, VolumeError

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class DicomSource:
    """What is needed to write DICOM (SEG, RTSTRUCT) that references the source series.

    ``files`` and ``sop_instance_uids`` are in the volume's z order (one per slice, or a
    single multi-frame file).
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[str, ...]
    series_description: str = ""
    body_part_examined: str = ""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image on a regular grid in patient space (see module docstring)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = "OT"
    source: DicomSource | None = None
    warnings: tuple[str, ...] = ()
    #: colour frames ``[z, y, x, 3]`` uint8 for display (ultrasound); ``array`` is greyscale
    display_rgb: np.ndarray | None = None
    #: False when the in-plane spacing is a 1 mm placeholder because the file carries no
    #: physical calibration (ultrasound without regions or PixelSpacing, a PNG frame)
    calibrated: bool = True

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise VolumeError(f"a Volume needs a 3D [z, y, x] array, got shape {self.array.shape}")
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise VolumeError(f"spacing must be three positive mm values, got {self.spacing}")
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise VolumeError(f"origin must be three finite LPS mm values, got {self.origin}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise VolumeError(f"direction must be orthonormal, got {direction.tolist()}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "warnings", tuple(self.warnings))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def origin_zyx(self) -> tuple[float, float, float]:
        """Origin in ``[z, y, x]`` order: napari's ``translate``."""
        return (self.origin[2], self.origin[1], self.origin[0])

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def is_axis_aligned(self) -> bool:
        """True when the grid axes are the patient axes (napari scale/translate is exact)."""
        return bool(np.allclose(self.direction, np.eye(3), atol=1e-6))

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(x, y, z, 1)`` index to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing_xyz)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def index_to_lps(self, index_zyx: np.ndarray | Any) -> np.ndarray:
        """Continuous ``[..., (z, y, x)]`` voxel index to ``[..., (x, y, z)]`` LPS mm."""
        idx = np.asarray(index_zyx, dtype=float)
        xyz = idx[..., ::-1] * np.asarray(self.spacing_xyz)
        return xyz @ self.direction.T + np.asarray(self.origin)

    def lps_to_index(self, lps_xyz: np.ndarray | Any) -> np.ndarray:
        """``[..., (x, y, z)]`` LPS mm to continuous ``[..., (z, y, x)]`` voxel index."""
        p = np.asarray(lps_xyz, dtype=float) - np.asarray(self.origin)
        xyz = (p @ self.direction) / np.asarray(self.spacing_xyz)
        return xyz[..., ::-1]

    def index_to_napari(self, index_zyx: np.ndarray | Any) -> np.ndarray:
        """Voxel index to napari world ``[z, y, x]`` mm (``index * scale + translate``)."""
        return np.asarray(index_zyx, dtype=float) * np.asarray(self.spacing) + np.asarray(self.origin_zyx)

    def napari_to_index(self, world_zyx: np.ndarray | Any) -> np.ndarray:
        return (np.asarray(world_zyx, dtype=float) - np.asarray(self.origin_zyx)) / np.asarray(self.spacing)

    def napari_to_lps(self, world_zyx: np.ndarray | Any) -> np.ndarray:
        return self.index_to_lps(self.napari_to_index(world_zyx))

    def lps_to_napari(self, lps_xyz: np.ndarray | Any) -> np.ndarray:
        return self.index_to_napari(self.lps_to_index(lps_xyz))

    def same_grid(self, other: "Volume", tol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol_mm)
            and np.allclose(self.origin, other.origin, atol=tol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-6)
        )

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A volume on the same grid with another array (a label map, a probability map)."""
        if tuple(array.shape[:3]) != self.shape:
            raise VolumeError(f"array shape {array.shape} does not match the grid {self.shape}")
        return dataclasses.replace(self, array=array, display_rgb=None, **changes)

    # ------------------------------------------------------------------ conversions
    def to_sitk(self) -> "sitk.Image":
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: "sitk.Image", **metadata: Any) -> "Volume":
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise VolumeError(f"expected a 3D image, got {image.GetDimension()}D")
        array = sitk.GetArrayFromImage(image)
        if image.GetNumberOfComponentsPerPixel() > 1:
            raise VolumeError("multi-component (colour/vector) images are not volumes; convert to greyscale first")
        spacing = tuple(reversed(image.GetSpacing()))
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls(array=array, spacing=spacing, origin=image.GetOrigin(), direction=direction, **metadata)  # type: ignore[arg-type]

    def to_nibabel(self) -> Any:
        """A ``nibabel.Nifti1Image`` (RAS affine, array in x, y, z order)."""
        import nibabel as nib

        lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
        affine = lps_to_ras @ self.affine_lps()
        return nib.Nifti1Image(np.ascontiguousarray(self.array.transpose(2, 1, 0)), affine)

    @classmethod
    def from_nibabel(cls, image: Any, **metadata: Any) -> "Volume":
        affine_ras = np.asarray(image.affine, dtype=float)
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
        columns = affine[:3, :3]
        spacing_xyz = np.linalg.norm(columns, axis=0)
        direction = columns / spacing_xyz[None, :]
        data = np.asarray(image.dataobj)
        if data.ndim != 3:
            raise VolumeError(f"expected a 3D NIfTI image, got shape {data.shape}")
        return cls(array=data.transpose(2, 1, 0), spacing=tuple(spacing_xyz[::-1]),
                   origin=tuple(affine[:3, 3]), direction=direction, **metadata)


# ---------------------------------------------------------------------- file I/O
def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load(path: str | os.PathLike[str], series: str | None = None) -> Volume:
    """Load a DICOM folder (searched recursively), a DICOM file, or a NIfTI file.

    Args:
        path: folder or file.
        series: SeriesInstanceUID (or a unique prefix of it) to pick when a folder holds
            several image series; without it such a folder is an error listing them.

    Raises:
        PlannerError (a subclass): with the file and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise PlannerError(f"{p}: no such file or folder")
    if p.is_file() and is_nifti(p):
        return load_nifti(p)
    from planner.dicom_series import load_dicom

    return load_dicom(p, series=series)


def load_nifti(path: str | os.PathLike[str], modality: str = "OT") -> Volume:
    """Read a NIfTI file through SimpleITK (which converts its RAS affine to LPS)."""
    import SimpleITK as sitk

    p = Path(path)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise VolumeError(f"{p}: not a readable NIfTI file ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise VolumeError(f"{p}: expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    return Volume.from_sitk(image, modality=modality)


def atomic_output(path: str | os.PathLike[str]) -> "_AtomicOutput":
    """Context manager yielding a temporary path next to ``path``; renamed on success.

    Never leaves a partial file at ``path``: on an exception the temporary is removed.
    """
    return _AtomicOutput(Path(path))


class _AtomicOutput:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(self.target.suffixes) or ".tmp"
        fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=suffix, dir=self.target.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.tmp is not None
        if exc_type is None:
            # mkstemp makes owner-only files; give the result the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            if self.tmp.exists():
                os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def save_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` as NIfTI (.nii or .nii.gz) atomically; returns the path."""
    import SimpleITK as sitk

    target = Path(path)
    if not is_nifti(target):
        raise VolumeError(f"{target}: NIfTI output must end in .nii or .nii.gz")
    with atomic_output(target) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=str(target).endswith(".gz"))
    return target

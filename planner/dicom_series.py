"""DICOM discovery and loading with exact geometry (pydicom).

What this module guarantees, because a mis-placed slice would mis-place a needle:

* **Discovery.** Folders are searched recursively (hidden files and folders skipped).
  Headers are read once with the pixel data deferred; empty, non-DICOM, truncated and
  non-image files (SEG, RTSTRUCT, SR, DICOMDIR, presentation states, ...) are skipped with
  a reason, and files are grouped by SeriesInstanceUID. Several image series in one folder
  are an error listing them unless ``series=`` (a UID or a unique prefix) picks one.
* **Geometry from ImagePositionPatient only.** Slices (or Enhanced multi-frame frames) are
  ordered by their position projected on the slice normal ``row x column`` of
  ImageOrientationPatient; the z spacing comes from those positions, never from
  SliceThickness, InstanceNumber or file names. The grid is ``origin`` = first slice's
  position, ``direction`` = (row, column, normal), exactly as ITK's ImageSeriesReader.
* **Irregular series are resampled, never silently mis-placed** (choice documented here):

  - Non-uniform steps or missing slices: the slices are interpolated linearly along z onto
    a uniform grid whose step is the median step (adjusted so the first and last slices lie
    on the grid), with a warning listing the steps. dcm2niix keeps such data on a wrong
    grid with a warning and ITK reads it with a spacing that is wrong for some slices;
    interpolating keeps every voxel where it was in the patient.
  - Gantry tilt (slice positions not on the slice normal): each slice is shifted in-plane
    (bilinear) onto an orthogonal grid spanned by the row, column and normal directions,
    the correction dcm2niix applies; the grid is widened so no tissue is cropped. Each
    original slice's ImagePositionPatient keeps its patient position.
  - Exact duplicate slices (same position and pixels) are dropped with a warning;
    different images at one position, mixed orientation or matrix size, and a slice
    without position tags are errors naming the files.
* **Values.** RescaleSlope/Intercept are applied (CT in HU): int16 when exact and in range,
  the stored type when there is no rescale, float32 otherwise (and after resampling).
* **Single files.** Enhanced multi-frame (per-frame functional groups), single slices (z
  spacing from SliceThickness, with a warning), compressed transfer syntaxes through
  pydicom's pixel-data plugins (pylibjpeg, Pillow).
* **Ultrasound and other 2D images** without a patient position: frames become z with
  spacing 1 (a warning says z is time/frame); colour (RGB, YBR, PALETTE COLOR) is kept in
  ``Volume.display_rgb`` and ``array`` holds the luminance; pixel spacing comes from
  SequenceOfUltrasoundRegions (cm -> mm), else PixelSpacing, else 1 mm with a warning.

``Volume.source`` lists the files (and SOP Instance UIDs) in z order; after resampling
(tilt, gaps, non-uniform steps) slices no longer correspond one-to-one to those files.
Public API: :func:`load_dicom` (also reached through ``planner.volume.load``),
:func:`list_series`, :func:`scan_series`, :func:`count_image_series`.

Patient names and IDs seen in headers are registered with :mod:`planner.logs` so logs
redact them; they are never put into messages.
"""

from __future__ import annotations

import os
import warnings as py_warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from planner.errors import DicomSeriesError
from planner.logs import get_logger, register_identifier
from planner.volume import DicomSource, Volume, is_nifti

log = get_logger("dicom")

#: Positions within this distance (mm) of a uniform grid are taken as uniform (no resampling).
UNIFORM_TOLERANCE_MM = 0.05
#: In-plane offsets of slice positions above this (mm) mean a gantry tilt or shifted slices.
TILT_TOLERANCE_MM = 0.05
#: Two slices closer than this along the normal (mm) share one position.
DUPLICATE_TOLERANCE_MM = 0.01
#: Gaps wider than this many median steps (over two slices missing in a row) are refused:
#: interpolating across them would invent anatomy.
MAX_GAP_STEPS = 3.0
#: Orientation cosines and pixel spacings must agree within this across a series.
ORIENTATION_TOLERANCE = 1e-4

PIXEL_DATA_TAG = 0x7FE00010
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
JPEG_BASELINE_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}

#: Modalities of objects that are not images to load as volumes.
NON_IMAGE_MODALITIES = {
    "SEG": "DICOM SEG segmentation",
    "RTSTRUCT": "RT structure set",
    "RTPLAN": "RT plan",
    "RTDOSE": "RT dose grid",
    "RTRECORD": "RT treatment record",
    "SR": "structured report",
    "KO": "key object selection",
    "PR": "presentation state",
    "REG": "spatial registration",
    "FID": "fiducials",
    "DOC": "encapsulated document",
    "PLAN": "plan",
}
#: SOP Class UID prefixes of non-image objects (checked when Modality is absent or odd).
NON_IMAGE_SOP_PREFIXES = {
    DICOMDIR_SOP_CLASS: "DICOMDIR (media directory index)",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG segmentation",
    "1.2.840.10008.5.1.4.1.1.66": "registration / fiducials / surface object",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose grid",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT treatment record",
}


# ---------------------------------------------------------------------- public types
@dataclass(frozen=True)
class SkippedFile:
    """A file found but not used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SeriesSummary:
    """One image series found in a folder (what ``list_series`` returns)."""

    uid: str
    modality: str
    description: str
    series_number: str
    n_files: int
    n_frames: int
    first_file: Path
    body_part: str = ""

    def describe(self) -> str:
        """One short phrase: ``UID (CT, 'desc', 41 slices)``."""
        desc = f", '{self.description}'" if self.description else ""
        files = f" in {self.n_files} files" if self.n_files not in (1, self.n_frames) else ""
        kind = "slices" if self.n_files > 1 else ("frames" if self.n_frames > 1 else "image")
        return f"{self.uid} ({self.modality or '?'}{desc}, {self.n_frames} {kind}{files})"


@dataclass
class _Instance:
    """One image file: its header (pixel data deferred) and frame count."""

    path: Path
    ds: Any
    n_frames: int

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class _Frame:
    """One 2D frame with the geometry and rescale that apply to it."""

    instance: _Instance
    index: int  # frame index inside the file (0 for single-frame files)
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None  # (row spacing dy, column spacing dx)
    thickness: float | None
    slope: float
    intercept: float

    @property
    def label(self) -> str:
        return self.instance.name if self.instance.n_frames == 1 else f"{self.instance.name} frame {self.index + 1}"


@dataclass
class _Scan:
    """Result of discovery: image instances grouped by series key, plus skipped files."""

    root: Path
    series: dict[str, list[_Instance]] = field(default_factory=dict)
    skipped: list[SkippedFile] = field(default_factory=list)


# ---------------------------------------------------------------------- discovery
def _iter_files(path: Path) -> Iterable[Path]:
    """Files under ``path`` (or ``path`` itself), sorted, hidden files and folders skipped."""
    if path.is_file():
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _non_image_reason(ds: Any) -> str | None:
    """Why a parsed DICOM dataset is not an image to load, or None when it is one."""
    sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    if sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return NON_IMAGE_SOP_PREFIXES[DICOMDIR_SOP_CLASS]
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{NON_IMAGE_MODALITIES[modality]} (Modality {modality}), not an image"
    for prefix, what in NON_IMAGE_SOP_PREFIXES.items():
        if sop.startswith(prefix):
            return f"{what} (SOP Class {sop}), not an image"
    if PIXEL_DATA_TAG not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        name = _sop_name(sop)
        return f"no pixel data ({name or 'SOP Class ' + (sop or 'unknown')})"
    return None


def _sop_name(sop: str) -> str:
    from pydicom.uid import UID

    name = UID(sop).name if sop else ""
    return "" if name == sop else name


def _truncation_reason(path: Path, ds: Any, size: int) -> str | None:
    """A reason when the file ends before its (deferred) pixel data does."""
    from pydicom.dataelem import RawDataElement

    elem = ds.get_item(PIXEL_DATA_TAG, keep_deferred=True) if PIXEL_DATA_TAG in ds else None
    if isinstance(elem, RawDataElement) and elem.value is None and elem.length != 0xFFFFFFFF:
        end = elem.value_tell + elem.length
        if end > size:
            return f"truncated: pixel data needs {end} bytes, the file has {size}"
    return None


def _read_header(path: Path) -> _Instance | SkippedFile:
    """Parse one file's header (pixel data deferred), or say why it is skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        size = path.stat().st_size
    except OSError as exc:
        return SkippedFile(path, f"unreadable ({exc.strerror})")
    if size == 0:
        return SkippedFile(path, "empty file (0 bytes)")
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        try:  # old files without the 128-byte preamble: accept only if they look like DICOM
            ds = pydicom.dcmread(path, defer_size=1024, force=True)
            if "SOPClassUID" not in ds and PIXEL_DATA_TAG not in ds:
                return SkippedFile(path, "not a DICOM file")
        except Exception:
            return SkippedFile(path, "not a DICOM file")
    except Exception as exc:  # pydicom raises many types on corrupt/truncated headers
        return SkippedFile(path, f"corrupt or truncated DICOM header ({type(exc).__name__})")
    try:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"):
            register_identifier(ds.get(keyword, ""))
        reason = _non_image_reason(ds) or _truncation_reason(path, ds, size)
    except Exception as exc:
        return SkippedFile(path, f"corrupt DICOM header ({type(exc).__name__})")
    if reason:
        return SkippedFile(path, reason)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        int(ds.Rows), int(ds.Columns)
    except Exception:
        return SkippedFile(path, "image without valid Rows/Columns/NumberOfFrames")
    return _Instance(path=path, ds=ds, n_frames=max(n_frames, 1))


def _series_key(instance: _Instance) -> str:
    """SeriesInstanceUID, or a stand-in when an anonymiser emptied it."""
    uid = str(instance.ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid
    return f"no-uid:{instance.path.parent.name}:{instance.ds.get('SeriesNumber', '') or ''}"


def _scan(path: str | os.PathLike[str]) -> _Scan:
    """Read every header under ``path`` and group image files by series."""
    root = Path(path)
    if not root.exists():
        raise DicomSeriesError(f"{root}: no such file or folder")
    scan = _Scan(root=root)
    for file in _iter_files(root):
        result = _read_header(file)
        if isinstance(result, SkippedFile):
            log.debug("skipping %s: %s", result.path, result.reason)
            scan.skipped.append(result)
        else:
            scan.series.setdefault(_series_key(result), []).append(result)
    return scan


@contextmanager
def _pydicom_warnings_to_debug_log() -> Iterator[None]:
    """pydicom warns about odd values (invalid UIDs, VR mismatches): log them, don't print."""
    with py_warnings.catch_warnings(record=True) as caught:
        py_warnings.simplefilter("always")
        yield
    for item in caught:
        log.debug("pydicom: %s", item.message)


def _summary(uid: str, instances: Sequence[_Instance]) -> SeriesSummary:
    ds = instances[0].ds
    return SeriesSummary(
        uid=uid,
        modality=str(ds.get("Modality", "") or ""),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        series_number=str(ds.get("SeriesNumber", "") or ""),
        n_files=len(instances),
        n_frames=sum(i.n_frames for i in instances),
        first_file=instances[0].path,
        body_part=str(ds.get("BodyPartExamined", "") or "").strip(),
    )


def _summarise_skipped(skipped: Sequence[SkippedFile], limit: int = 6) -> str:
    """``3 files skipped: 2 x not a DICOM file (a.txt, b.txt); 1 x empty file (c.dcm)``."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        # group truncation/size messages by their leading phrase
        key = item.reason.split(":")[0] if item.reason.startswith("truncated") else item.reason
        by_reason.setdefault(key, []).append(item.path.name)
    parts = []
    for reason, names in list(by_reason.items())[:limit]:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        parts.append(f"{len(names)} x {reason} ({shown})")
    if len(by_reason) > limit:
        parts.append(f"{len(by_reason) - limit} more reasons")
    return f"{len(skipped)} file(s) skipped: " + "; ".join(parts)


def list_series(path: str | os.PathLike[str]) -> list[SeriesSummary]:
    """The image series under ``path`` (non-image and unreadable files are left out)."""
    with _pydicom_warnings_to_debug_log():
        scan = _scan(path)
        return [_summary(uid, inst) for uid, inst in scan.series.items()]


def scan_series(path: str | os.PathLike[str]) -> tuple[list[tuple[SeriesSummary, tuple[Path, ...]]],
                                                      list[SkippedFile]]:
    """Every image series under ``path`` with its files, and every skipped file with its reason.

    One pass over the headers (what a batch runner needs to select, hash and report).
    """
    with _pydicom_warnings_to_debug_log():
        scan = _scan(path)
    found = [(_summary(uid, inst), tuple(i.path for i in inst)) for uid, inst in scan.series.items()]
    return found, list(scan.skipped)


def count_image_series(path: str | os.PathLike[str]) -> int:
    """How many image series ``path`` holds (a NIfTI file counts as one)."""
    if Path(path).is_file() and is_nifti(path):
        return 1
    return len(list_series(path))


def _select(scan: _Scan, series: str | None) -> tuple[str, list[_Instance]]:
    """The one image series to load, or an error that lists what is there."""
    where = scan.root
    if not scan.series:
        what = "file" if where.is_file() else "folder"
        if not scan.skipped:
            raise DicomSeriesError(f"{where}: empty {what}, no files found; point at the DICOM series folder")
        if where.is_file():
            raise DicomSeriesError(f"{where}: {scan.skipped[0].reason}; nothing to load as an image")
        raise DicomSeriesError(f"{where}: no DICOM image series found in this {what}; {_summarise_skipped(scan.skipped)}")
    summaries = {uid: _summary(uid, inst) for uid, inst in scan.series.items()}
    listing = "; ".join(s.describe() for s in summaries.values())
    if series:
        matches = [uid for uid in scan.series if uid.startswith(series)]
        if not matches:
            raise DicomSeriesError(f"{where}: no image series matches '{series}'; found: {listing}")
        if len(matches) > 1:
            raise DicomSeriesError(f"{where}: '{series}' matches {len(matches)} series, give more of the UID; found: {listing}")
        return matches[0], scan.series[matches[0]]
    if len(scan.series) > 1:
        raise DicomSeriesError(
            f"{where}: holds {len(scan.series)} image series; choose one with series= / --series UID (or a unique prefix): {listing}"
        )
    uid = next(iter(scan.series))
    return uid, scan.series[uid]


# ---------------------------------------------------------------------- frames and geometry
def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _float(value: Any, default: float | None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _frames(instance: _Instance) -> list[_Frame]:
    """Per-frame geometry: from functional groups (Enhanced) or the top-level tags."""
    ds = instance.ds
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None

    def group(i: int, name: str) -> Any:
        for source in ((per_frame[i] if per_frame and i < len(per_frame) else None), shared):
            if source is not None and source.get(name):
                return source.get(name)[0]
        return None

    frames = []
    for i in range(instance.n_frames):
        if per_frame is not None or shared is not None:
            pos = group(i, "PlanePositionSequence")
            ori = group(i, "PlaneOrientationSequence")
            meas = group(i, "PixelMeasuresSequence")
            trans = group(i, "PixelValueTransformationSequence")
        else:
            pos = ori = meas = trans = ds
        if instance.n_frames > 1 and per_frame is None:
            pos = None  # legacy multi-frame (cine): one position for all frames is not a stack
        position = _floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None
        orientation = _floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None
        spacing = _floats(meas.get("PixelSpacing"), 2) if meas is not None else None
        thickness = _float(meas.get("SliceThickness"), None) if meas is not None else None
        slope = _float(trans.get("RescaleSlope"), 1.0) if trans is not None else 1.0
        intercept = _float(trans.get("RescaleIntercept"), 0.0) if trans is not None else 0.0
        frames.append(_Frame(
            instance=instance, index=i, position=position, orientation=orientation,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None and min(spacing) > 0 else None,
            thickness=thickness if thickness and thickness > 0 else None,
            slope=slope or 1.0, intercept=intercept or 0.0,
        ))
    return frames


def _check_consistent(uid: str, frames: Sequence[_Frame]) -> None:
    """Mixed matrix size, orientation or pixel spacing inside one series is an error."""
    def first_difference(values: Sequence[Any], same: Any) -> tuple[_Frame, _Frame] | None:
        for frame, value in zip(frames[1:], values[1:]):
            if not same(values[0], value):
                return frames[0], frame
        return None

    sizes = [(int(f.instance.ds.Rows), int(f.instance.ds.Columns)) for f in frames]
    pair = first_difference(sizes, lambda a, b: a == b)
    if pair:
        counts = {s: sizes.count(s) for s in sizes}
        listing = ", ".join(f"{r}x{c} ({n} frames)" for (r, c), n in counts.items())
        raise DicomSeriesError(
            f"series {uid} mixes matrix sizes {listing}, e.g. {pair[0].label} and {pair[1].label}; "
            "remove the odd files (localizer?) or export the series again"
        )
    orients = [f.orientation for f in frames]
    pair = first_difference(orients, lambda a, b: np.allclose(a, b, atol=ORIENTATION_TOLERANCE))
    if pair:
        raise DicomSeriesError(
            f"series {uid} mixes slice orientations: {pair[0].label} has ImageOrientationPatient "
            f"{np.round(pair[0].orientation, 4).tolist()}, {pair[1].label} has {np.round(pair[1].orientation, 4).tolist()}; "
            "remove the odd files (localizer?) or load them as separate series"
        )
    spacings = [f.pixel_spacing for f in frames]
    pair = first_difference(spacings, lambda a, b: a == b or (a and b and np.allclose(a, b, atol=ORIENTATION_TOLERANCE)))
    if pair:
        raise DicomSeriesError(
            f"series {uid} mixes pixel spacings {pair[0].pixel_spacing} ({pair[0].label}) and "
            f"{pair[1].pixel_spacing} ({pair[1].label}); export the series again"
        )


# ---------------------------------------------------------------------- pixel data
def _decode(instance: _Instance, as_rgb: bool = True) -> np.ndarray:
    """Pixel data of one file as stored (frames first when multi-frame)."""
    from pydicom.pixels import pixel_array

    ds = instance.ds
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        if syntax in JPEG_BASELINE_SYNTAXES:
            try:  # Pillow decodes baseline JPEG several times faster than libjpeg here
                return pixel_array(ds, decoding_plugin="pillow", as_rgb=as_rgb)
            except Exception:
                pass
        return pixel_array(ds, as_rgb=as_rgb)
    except Exception as exc:
        from pydicom.uid import UID

        name = UID(syntax).name if syntax else "unknown transfer syntax"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DicomSeriesError(
            f"{instance.path}: cannot decode pixel data ({name}): {detail}; the file may be corrupt or "
            "need a pydicom pixel-data plugin (pylibjpeg-openjpeg, pylibjpeg-libjpeg, pylibjpeg-rle)"
        ) from None


def _decode_all(instances: Sequence[_Instance]) -> dict[int, np.ndarray]:
    """Decode files in a small thread pool (decoders release the GIL); keyed by id()."""
    workers = min(len(instances), os.cpu_count() or 1, 4)
    if workers <= 1:
        return {id(i): _decode(i) for i in instances}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(_decode, instances))
    return {id(i): a for i, a in zip(instances, arrays)}


def _frame_pixels(decoded: dict[int, np.ndarray], frame: _Frame) -> np.ndarray:
    array = decoded[id(frame.instance)]
    if frame.instance.n_frames > 1:
        array = array[frame.index]
    if array.ndim != 2:
        raise DicomSeriesError(
            f"{frame.instance.path}: colour pixel data ({frame.instance.ds.get('PhotometricInterpretation')}) "
            "in a positioned CT/MR-style series is not supported; load a greyscale series"
        )
    return array


def _rescaled_stack(raws: Sequence[np.ndarray], slopes: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """Stack 2D frames and apply RescaleSlope/Intercept: int16 when exact, else float32."""
    stack = np.stack(raws)
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return stack
    if np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)) and stack.dtype.kind in "iu":
        low = float(stack.min()) + float(intercepts.min())
        high = float(stack.max()) + float(intercepts.max())
        int16 = np.iinfo(np.int16)
        if low >= int16.min and high <= int16.max:
            # every result fits int16, so int16 arithmetic is exact once the raw values fit too
            wide = np.int32 if float(stack.max()) > int16.max or float(stack.min()) < int16.min else np.int16
            out = stack.astype(wide)
            out += intercepts.astype(wide)[:, None, None]
            return out.astype(np.int16, copy=False)
    out = stack.astype(np.float32)
    out *= slopes.astype(np.float32)[:, None, None]
    out += intercepts.astype(np.float32)[:, None, None]
    return out


# ---------------------------------------------------------------------- positioned series
def _run_lengths(values: np.ndarray, tol: float) -> str:
    """``4.00 mm x13, 1.08 mm x1, 7.00 mm x13`` (consecutive runs of equal steps)."""
    runs: list[list[float]] = []
    for v in values:
        if runs and abs(v - np.mean(runs[-1])) <= tol:
            runs[-1].append(float(v))
        else:
            runs.append([float(v)])
    return ", ".join(f"{np.mean(r):.2f} mm x{len(r)}" for r in runs)


def _drop_duplicates(frames: list[_Frame], d: np.ndarray, decoded: dict[int, np.ndarray],
                     warnings: list[str]) -> tuple[list[_Frame], np.ndarray]:
    """Drop exact duplicate slices (same position and pixels); other clashes are errors."""
    keep = [0]
    dropped = []
    for k in range(1, len(frames)):
        j = keep[-1]
        if abs(d[k] - d[j]) > DUPLICATE_TOLERANCE_MM:
            keep.append(k)
            continue
        a, b = frames[j], frames[k]
        same_sop = (a.instance.ds.get("SOPInstanceUID") == b.instance.ds.get("SOPInstanceUID") and a.index == b.index)
        same_pixels = np.array_equal(_frame_pixels(decoded, a), _frame_pixels(decoded, b)) and \
            (a.slope, a.intercept) == (b.slope, b.intercept)
        if same_sop or same_pixels:
            dropped.append(b.label)
            continue
        raise DicomSeriesError(
            f"{a.label} and {b.label} are different images at the same position "
            f"({d[k]:.2f} mm along the slice normal) in one series: several phases, echoes or "
            "reconstructions are mixed; split the series (e.g. by AcquisitionNumber) or remove the extra files"
        )
    if dropped:
        shown = ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else "")
        warnings.append(f"{len(dropped)} duplicate slice(s) at an already-seen position dropped: {shown}")
    return [frames[k] for k in keep], d[keep]


def _resample_inplane(stack: np.ndarray, offsets_px: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Shift each slice by its (row, column) pixel offset onto one widened grid (bilinear).

    Returns the new stack and the (row, column) index of slice 0's first pixel on it.
    """
    from scipy import ndimage

    n, rows, cols = stack.shape
    low = np.floor(offsets_px.min(axis=0) + 1e-6)
    high = np.ceil(offsets_px.max(axis=0) - 1e-6)
    out_shape = (int(rows + high[0] - low[0]), int(cols + high[1] - low[1]))
    out = np.empty((n, *out_shape), dtype=np.float32)
    for k in range(n):
        # output pixel o samples input pixel o + low - offset_k
        shift = low - offsets_px[k]
        ndimage.affine_transform(stack[k].astype(np.float32), np.eye(2), offset=shift, output_shape=out_shape,
                                 output=out[k], order=1, mode="constant", cval=fill)
    return out, -low


def _resample_z(stack: np.ndarray, d: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """Linear interpolation along z from positions ``d`` onto a uniform grid of ``step``."""
    span = float(d[-1] - d[0])
    n_out = int(round(span / step)) + 1
    new_step = span / (n_out - 1)
    targets = d[0] + new_step * np.arange(n_out)
    out = np.empty((n_out, *stack.shape[1:]), dtype=np.float32)
    for j, t in enumerate(targets):
        k = int(np.clip(np.searchsorted(d, t, side="right") - 1, 0, len(d) - 2))
        w = (t - d[k]) / (d[k + 1] - d[k])
        if w <= 1e-6:
            out[j] = stack[k]
        elif w >= 1 - 1e-6:
            out[j] = stack[k + 1]
        else:
            np.add(stack[k] * np.float32(1 - w), stack[k + 1] * np.float32(w), out=out[j])
    return out, new_step


def _single_slice_step(frame: _Frame, warnings: list[str]) -> float:
    ds = frame.instance.ds
    thickness = frame.thickness
    if thickness:
        warnings.append(f"single slice: z spacing {thickness:g} mm taken from SliceThickness")
        return thickness
    between = _float(ds.get("SpacingBetweenSlices"), None)
    if between and between > 0:
        warnings.append(f"single slice: z spacing {between:g} mm taken from SpacingBetweenSlices")
        return between
    warnings.append("single slice without SliceThickness: z spacing set to 1 mm")
    return 1.0


def _positioned_volume(uid: str, frames: list[_Frame], warnings: list[str]) -> Volume:
    """Build the volume of a series whose every frame has position and orientation."""
    _check_consistent(uid, frames)
    orientation = frames[0].orientation
    assert orientation is not None
    row, col = orientation[:3] / np.linalg.norm(orientation[:3]), orientation[3:] / np.linalg.norm(orientation[3:])
    if abs(float(row @ col)) > 1e-3:
        raise DicomSeriesError(f"{frames[0].label}: ImageOrientationPatient rows are not orthogonal ({orientation.tolist()})")
    col = col - (row @ col) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.stack([f.position for f in frames])  # type: ignore[misc]
    d = positions @ normal
    single_file = len({id(f.instance) for f in frames}) == 1
    if single_file and len(frames) > 1 and d[1] < d[0]:
        normal, d = -normal, -d  # keep a multi-frame file's frame order, as GDCM/ITK do
    order = np.argsort(d, kind="stable")
    frames = [frames[k] for k in order]
    positions, d = positions[order], d[order]

    if frames[0].pixel_spacing is None:
        warnings.append("no PixelSpacing: in-plane spacing set to 1 mm")
    if str(frames[0].instance.ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        warnings.append("MONOCHROME1: values kept as stored (low values are meant to display white)")
    dy, dx = frames[0].pixel_spacing or (1.0, 1.0)

    decoded = _decode_all(list({id(f.instance): f.instance for f in frames}.values()))
    frames, d = _drop_duplicates(frames, d, decoded, warnings)
    positions = np.stack([f.position for f in frames])  # type: ignore[misc]
    stack = _rescaled_stack([_frame_pixels(decoded, f) for f in frames],
                            np.array([f.slope for f in frames]), np.array([f.intercept for f in frames]))
    origin = positions[0].copy()

    if len(frames) == 1:
        step = _single_slice_step(frames[0], warnings)
    else:
        rel = positions - positions[0]
        offsets_mm = np.stack([rel @ col, rel @ row], axis=1)  # (row index axis, column index axis)
        steps = np.diff(d)
        distances = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        tilted = float(np.abs(offsets_mm).max()) > TILT_TOLERANCE_MM
        uniform_step = (d[-1] - d[0]) / (len(d) - 1)
        deviation = float(np.abs(d - d[0] - uniform_step * np.arange(len(d))).max())
        step = float(uniform_step)
        fill = float(stack.min())
        if tilted:
            stacking = positions[-1] - positions[0]
            angle = float(np.degrees(np.arccos(min(1.0, abs(stacking @ normal) / np.linalg.norm(stacking)))))
            header = _float(frames[0].instance.ds.get("GantryDetectorTilt"), None)
            said = f", GantryDetectorTilt {header:+g} deg" if header else ""
            stack, first_px = _resample_inplane(stack, offsets_mm / np.array([dy, dx]), fill)
            origin = origin - first_px[0] * dy * col - first_px[1] * dx * row
            warnings.append(
                f"gantry tilt / sheared slices: slice positions are {angle:.1f} deg off the slice normal{said}; "
                f"slices shifted in-plane (up to {np.abs(offsets_mm).max():.1f} mm) onto an orthogonal grid "
                f"(as dcm2niix does), matrix now {stack.shape[1]}x{stack.shape[2]}"
            )
        if deviation > UNIFORM_TOLERANCE_MM:
            median = float(np.median(steps))
            widest = int(np.argmax(steps))
            if steps[widest] > MAX_GAP_STEPS * median + UNIFORM_TOLERANCE_MM:
                raise DicomSeriesError(
                    f"series {uid} has a gap of {steps[widest]:.1f} mm between {frames[widest].label} and "
                    f"{frames[widest + 1].label} (usual step {median:.2f} mm, about "
                    f"{int(round(steps[widest] / median)) - 1} slices missing): the series is incomplete; "
                    "export all its slices, or copy each contiguous part to its own folder"
                )
            missing = np.all(np.abs(steps / median - np.round(steps / median)) < 0.05) and steps.max() > 1.5 * median
            along = "" if not tilted else f" ({_run_lengths(distances, 0.05)} between positions, along the table)"
            if missing:
                gaps = [f"{d[k]:.1f}..{d[k + 1]:.1f} mm" for k in np.flatnonzero(steps > 1.5 * median)]
                n_missing = int(np.sum(np.round(steps / median) - 1))
                what = f"{n_missing} missing slice(s) (gaps at {', '.join(gaps[:5])} along the normal, step {median:.2f} mm)"
            else:
                what = f"non-uniform slice steps {_run_lengths(steps, 0.05)} along the slice normal{along}"
            stack, step = _resample_z(stack, d, median)
            warnings.append(f"{what}: resampled by linear interpolation along z onto a uniform {step:.3f} mm grid "
                            f"({stack.shape[0]} slices)")
    ds = frames[0].instance.ds
    seen: dict[int, _Instance] = {}
    for f in frames:
        seen.setdefault(id(f.instance), f.instance)
    instances = list(seen.values())
    return Volume(
        array=stack,
        spacing=(step, dy, dx),
        origin=tuple(origin),  # type: ignore[arg-type]
        direction=np.column_stack([row, col, normal]) + 0.0,  # + 0.0 turns -0.0 into 0.0
        modality=str(ds.get("Modality", "") or "OT"),
        source=_source(uid, instances),
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------- 2D images and cines
def _ultrasound_spacing(ds: Any, warnings: list[str]) -> tuple[float, float] | None:
    """(dy, dx) mm from SequenceOfUltrasoundRegions: 2D tissue regions calibrated in cm."""
    regions = []
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if (int(region.get("RegionSpatialFormat", 0) or 0) == 1
                and int(region.get("PhysicalUnitsXDirection", 0) or 0) == 3
                and int(region.get("PhysicalUnitsYDirection", 0) or 0) == 3):
            dx, dy = _float(region.get("PhysicalDeltaX"), 0.0), _float(region.get("PhysicalDeltaY"), 0.0)
            if dx and dy and dx > 0 and dy > 0:
                area = (int(region.get("RegionLocationMaxX1", 0)) - int(region.get("RegionLocationMinX0", 0))) * \
                       (int(region.get("RegionLocationMaxY1", 0)) - int(region.get("RegionLocationMinY0", 0)))
                regions.append((area, abs(dy) * 10.0, abs(dx) * 10.0))
    if not regions:
        return None
    regions.sort(reverse=True)
    if any(not np.allclose(r[1:], regions[0][1:], rtol=1e-6) for r in regions[1:]):
        warnings.append(f"{len(regions)} ultrasound regions with different calibration: using the largest "
                        f"({regions[0][2]:.4f} x {regions[0][1]:.4f} mm/pixel); measurements outside it are wrong")
    return regions[0][1], regions[0][2]


def _ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """YBR_FULL (JPEG YCbCr, ITU-R BT.601 full range) to RGB uint8, in float32 frame by frame."""
    frames = ybr.reshape(-1, *ybr.shape[-3:])
    out = np.empty(frames.shape, dtype=np.uint8)
    matrix = np.array([[1.0, 1.0, 1.0], [0.0, -0.344136, 1.772], [1.402, -0.714136, 0.0]], dtype=np.float32)
    for k, frame in enumerate(frames):
        f = frame.astype(np.float32)
        f[..., 1:] -= 128.0
        np.clip(f @ matrix, 0, 255, out=f)
        out[k] = np.round(f)
    return out.reshape(ybr.shape)


def _to_display(instance: _Instance) -> tuple[np.ndarray, np.ndarray | None]:
    """(greyscale array [z, y, x], display RGB uint8 [z, y, x, 3] or None) of one file."""
    ds = instance.ds
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    single = instance.n_frames == 1
    if samples == 3 and photometric in ("YBR_FULL", "YBR_FULL_422"):
        ybr = _decode(instance, as_rgb=False)
        ybr = ybr[None] if single else ybr
        return np.ascontiguousarray(ybr[..., 0]), _ybr_full_to_rgb(ybr)  # Y is the luminance
    pixels = _decode(instance)
    rgb = None
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(pixels, ds)
        if rgb.dtype != np.uint8:
            rgb = (rgb >> 8).astype(np.uint8) if rgb.max() > 255 else rgb.astype(np.uint8)
    elif samples == 3:
        rgb = pixels
        if rgb.dtype != np.uint8:
            rgb = (rgb.astype(np.float32) * (255.0 / max(float(rgb.max()), 1.0))).round().astype(np.uint8)
    if rgb is None:
        return (pixels[None] if single else pixels), None
    rgb = rgb[None] if single else rgb
    luminance = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(luminance).astype(np.uint8), np.ascontiguousarray(rgb)


def _image_volume(uid: str, instance: _Instance, frames: list[_Frame], warnings: list[str]) -> Volume:
    """A 2D image or cine without slice positions: frames become z."""
    ds = instance.ds
    modality = str(ds.get("Modality", "") or "OT")
    grey, rgb = _to_display(instance)
    slope, intercept = frames[0].slope, frames[0].intercept
    if (slope, intercept) != (1.0, 0.0) and rgb is None:
        grey = _rescaled_stack(list(grey), np.full(len(grey), slope), np.full(len(grey), intercept))
    spacing = _ultrasound_spacing(ds, warnings)
    calibrated = True
    if spacing is None:
        ps = frames[0].pixel_spacing or (_floats(ds.get("ImagerPixelSpacing"), 2) if "ImagerPixelSpacing" in ds else None)
        if ps is not None and min(ps) > 0:
            spacing = (float(ps[0]), float(ps[1]))
        else:
            spacing = (1.0, 1.0)
            calibrated = False
            warnings.append("no physical calibration (SequenceOfUltrasoundRegions or PixelSpacing): "
                            "pixel spacing set to 1 mm, distances are in pixels")
    n = grey.shape[0]
    if n > 1:
        frame_time = _float(ds.get("FrameTime"), None)
        timing = f", FrameTime {frame_time:g} ms" if frame_time else ""
        warnings.append(f"z is time (frame number) in this {n}-frame cine{timing}, not space: z spacing set to 1")
    else:
        warnings.append("single 2D image: z spacing set to 1 mm")
    orientation = frames[0].orientation
    position = _floats(ds.get("ImagePositionPatient"), 3)
    if orientation is not None and abs(float(orientation[:3] @ orientation[3:])) < 1e-3:
        row, col = orientation[:3] / np.linalg.norm(orientation[:3]), orientation[3:] / np.linalg.norm(orientation[3:])
        direction = np.column_stack([row, col, np.cross(row, col)])
    else:
        direction = np.eye(3)
    if position is None or orientation is None:
        warnings.append("no patient position/orientation: image coordinates (origin 0, identity direction)")
    return Volume(
        array=grey,
        spacing=(1.0, spacing[0], spacing[1]),
        origin=tuple(position) if position is not None else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
        direction=direction,
        modality=modality,
        source=_source(uid, [instance]),
        warnings=tuple(warnings),
        display_rgb=rgb,
        calibrated=calibrated,
    )


# ---------------------------------------------------------------------- entry point
def _source(uid: str, instances: Sequence[_Instance]) -> DicomSource:
    ds = instances[0].ds
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return DicomSource(
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "") or uid,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        sop_class_uid=sop_class,
        sop_instance_uids=tuple(str(i.ds.get("SOPInstanceUID", "") or "") for i in instances),
        files=tuple(str(i.path) for i in instances),
        series_description=str(ds.get("SeriesDescription", "") or "").strip(),
        body_part_examined=str(ds.get("BodyPartExamined", "") or "").strip(),
    )


def load_dicom(path: str | os.PathLike[str], series: str | None = None) -> Volume:
    """Load one DICOM image series from a folder (recursively) or a single file.

    Args:
        path: a folder holding the series (other series and non-image files may be there
            too) or one DICOM file (single slice, multi-frame, ultrasound cine).
        series: SeriesInstanceUID or a unique prefix of it, needed when the folder holds
            several image series.

    Returns:
        A :class:`planner.volume.Volume`; ``warnings`` lists everything that was odd and
        how it was handled (see the module docstring).

    Raises:
        DicomSeriesError: one line naming the folder or file, what is wrong, and what to do.
    """
    with _pydicom_warnings_to_debug_log():
        return _load(path, series)


def _load(path: str | os.PathLike[str], series: str | None) -> Volume:
    scan = _scan(path)
    uid, instances = _select(scan, series)
    warnings: list[str] = []
    if scan.skipped:
        warnings.append(_summarise_skipped(scan.skipped))
    frames = [frame for instance in instances for frame in _frames(instance)]
    unplaced = [f for f in frames if f.position is None or f.orientation is None]
    if not unplaced:
        return _positioned_volume(uid, frames, warnings)
    if len(instances) == 1:
        return _image_volume(uid, instances[0], frames, warnings)
    if len(unplaced) == len(frames):
        raise DicomSeriesError(
            f"series {uid} has {len(instances)} files without ImagePositionPatient/ImageOrientationPatient: "
            f"they are separate 2D images, not a volume; load one file at a time (e.g. {instances[0].path})"
        )
    bad = unplaced[0]
    missing = "ImagePositionPatient" if bad.position is None else "ImageOrientationPatient"
    raise DicomSeriesError(
        f"{bad.instance.path}: no {missing} tag, so this slice cannot be placed in series {uid}; "
        "remove the file or export the series again"
    )

"""Label maps as DICOM Segmentation objects (highdicom), in both directions.

:func:`write_seg` writes one binary segment per vocabulary label present in a label map,
coded with the structure's SNOMED CT category and type from :mod:`planner.anatomy`,
referencing the source CT instances; reference labels are ``MANUAL``, model outputs
``AUTOMATIC`` with an algorithm identification (pass :class:`Algorithm`).

:func:`read_seg` reads any SEG (ours or another tool's) back onto a reference image grid
as a vocabulary label map: a segment maps to a structure by its SegmentLabel (vocabulary
name, another tool's class name, or display name), else by a SNOMED type code that only
one structure has. Segments that map to nothing are skipped with a warning on the
returned Volume.

Limitation: highdicom cannot write a SEG for a multi-frame source without a frame of
reference (an ultrasound cine), so ultrasound labels are kept as NIfTI only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from planner import __version__
from planner.anatomy import CATEGORY_MEANINGS, STRUCTURES, Structure, from_external_name, structure
from planner.dicom_write import MANUFACTURER, STUDY_DATE, STUDY_TIME, make_uid
from planner.errors import LabelMapError, PlannerError
from planner.volume import DicomSource, Volume, atomic_output

#: in-plane / slice-position tolerance when matching label slices to source instances (mm)
POSITION_TOL_MM = 0.01


@dataclass(frozen=True)
class Algorithm:
    """Identification of the model that produced an automatic segmentation."""

    name: str
    version: str
    source: str | None = None


def _codes(s: Structure) -> tuple[object, object]:
    from pydicom.sr.coding import Code

    category = Code(s.category.value, "SCT", CATEGORY_MEANINGS[s.category])
    prop_type = Code(s.snomed_code, "SCT", s.snomed_meaning)
    return category, prop_type


def _source_datasets(source: DicomSource | Sequence[Dataset | str | os.PathLike[str]]) -> list[Dataset]:
    files: Sequence[Dataset | str | os.PathLike[str]] = source.files if isinstance(source, DicomSource) else source
    datasets = []
    for item in files:
        if isinstance(item, Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(item))
        except Exception as exc:  # pydicom raises several types for unreadable files
            raise PlannerError(f"{item}: not a readable DICOM source image ({exc})") from None
    if not datasets:
        raise LabelMapError("a DICOM SEG needs the source image instances it segments; none were given")
    return datasets


def _slice_order(labels: Volume, datasets: list[Dataset]) -> list[int]:
    """For each source dataset, the z index of ``labels`` it coincides with."""
    order = []
    for ds in datasets:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1 or "ImagePositionPatient" not in ds:
            raise LabelMapError(
                f"source instance {ds.SOPInstanceUID} is not a single-frame image with a position; "
                "DICOM SEG is written for CT/MR slice series only (ultrasound labels: use NIfTI)"
            )
        if (int(ds.Rows), int(ds.Columns)) != labels.shape[1:]:
            raise LabelMapError(
                f"source slice size {ds.Rows}x{ds.Columns} does not match the label map's {labels.shape[1:]}"
            )
        index = labels.lps_to_index(np.asarray(ds.ImagePositionPatient, dtype=float))
        k = int(round(index[0]))
        if not (0 <= k < labels.shape[0]) or not np.allclose(index, (k, 0, 0), atol=POSITION_TOL_MM):
            raise LabelMapError(
                f"source slice at {list(ds.ImagePositionPatient)} mm is not a slice of the label map's grid; "
                "write the SEG against the series the labels were made on"
            )
        order.append(k)
    return order


def write_seg(labels: Volume, source: DicomSource | Sequence[Dataset | str | os.PathLike[str]] | None,
              path: str | os.PathLike[str], *, algorithm: Algorithm | None = None,
              series_description: str = "Reference labels", series_number: int = 100,
              uid_seed: str | None = None, deflate: bool = True) -> Path:
    """Write the label map ``labels`` as a binary DICOM SEG at ``path`` (atomically).

    Args:
        labels: vocabulary label map on the grid of the source series.
        source: the source CT instances (a ``DicomSource``, file paths or datasets);
            ``None`` uses ``labels.source``.
        path: output file.
        algorithm: ``None`` for reference (manual) labels, else the model that made them.
        uid_seed: text to derive reproducible UIDs from (and fixed dates); ``None`` =
            random UIDs, current dates.
        deflate: write with the Deflated Explicit VR Little Endian transfer syntax.

    Raises:
        LabelMapError: for labels outside the vocabulary, an empty map, or a source
            series that does not match the label grid.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if source is None:
        if labels.source is None:
            raise LabelMapError("the label map has no DICOM source; pass the source series instances")
        source = labels.source
    datasets = _source_datasets(source)
    order = _slice_order(labels, datasets)
    values = [int(v) for v in np.unique(labels.array) if int(v) != 0]
    if not values:
        raise LabelMapError("the label map is empty: a DICOM SEG needs at least one segment")
    present = [structure(v) for v in values]  # raises LabelMapError for unknown labels
    lookup = np.zeros(max(values) + 1, dtype=np.uint16)
    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version, source=algorithm.source)
    descriptions = []
    for number, s in enumerate(present, start=1):
        lookup[s.label] = number
        category, prop_type = _codes(s)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=s.name, segmented_property_category=category,
            segmented_property_type=prop_type,
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=identification, tracking_id=s.name,
            tracking_uid=make_uid(uid_seed, "tracking", s.name),
            display_color=hd.color.CIELabColor.from_rgb(*s.color)))
    segment_map = lookup[np.asarray(labels.array, dtype=np.int64)]
    pixel_array = np.ascontiguousarray(segment_map[order]).astype(np.uint16)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixel_array, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=make_uid(uid_seed, "seg-series"),
        series_number=series_number, sop_instance_uid=make_uid(uid_seed, "seg-instance"),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="plexus-planner",
        software_versions=__version__, device_serial_number="0",
        content_label="LABELS", content_description=series_description[:64],
        series_description=series_description[:64],
    )
    if uid_seed is not None:  # reproducible file: no wall-clock dates either
        for keyword in ("SeriesDate", "ContentDate", "InstanceCreationDate"):
            if keyword in seg:
                setattr(seg, keyword, STUDY_DATE)
        for keyword in ("SeriesTime", "ContentTime", "InstanceCreationTime"):
            if keyword in seg:
                setattr(seg, keyword, STUDY_TIME)
        dimension_uid = make_uid(uid_seed, "dimension-organization")
        for element in seg.iterall():
            if element.VR == "DT":
                element.value = STUDY_DATE + STUDY_TIME
            elif element.keyword == "DimensionOrganizationUID":
                element.value = dimension_uid
    if deflate:
        # BINARY SEG may not be RLE/JPEG-compressed by highdicom; the Deflated transfer
        # syntax (zlib over the whole dataset) shrinks bit-packed masks ~30x and every
        # DICOM toolkit (pydicom, GDCM, DCMTK) reads it
        seg.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    target = Path(path)
    with atomic_output(target) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return target


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


_BY_NORMALISED: dict[str, Structure] = {}
for _s in STRUCTURES:
    for _key in (_s.name, _s.display_name, *_s.external_names):
        _BY_NORMALISED.setdefault(_normalise(_key), _s)


def structure_for_segment(label: str, type_code: str | None) -> Structure | None:
    """The vocabulary structure a SEG segment stands for, or ``None``."""
    found = from_external_name(label) or _BY_NORMALISED.get(_normalise(label))
    if found is not None:
        return found
    if type_code:
        matches = [s for s in STRUCTURES if s.snomed_code == type_code]
        if len(matches) == 1:
            return matches[0]
    return None


def _reference_to_source_index(affine: np.ndarray, shape: tuple[int, ...], reference: Volume
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``(slice, row, column)`` index into an array with ``affine`` for every reference voxel.

    Returns the flat indices and a mask of reference voxels that fall inside the array.
    """
    ref = np.eye(4)
    ref[:3, :3] = (reference.direction * np.asarray(reference.spacing_xyz)[None, :])[:, ::-1]
    ref[:3, 3] = reference.origin  # (z, y, x) index -> LPS
    mapping = (np.linalg.inv(affine) @ ref)[:3]
    grid = np.indices(reference.shape, dtype=np.float64).reshape(3, -1)
    coords = np.rint(mapping[:, :3] @ grid + mapping[:, 3:4]).astype(np.int64)
    inside = np.all((coords >= 0) & (coords < np.asarray(shape[:3])[:, None]), axis=0)
    flat = np.ravel_multi_index(tuple(np.where(inside, coords, 0)), shape[:3])
    return flat, inside


def read_seg(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """Read a DICOM SEG as a vocabulary label map on ``reference``'s grid.

    Fractional segments are thresholded at 0.5; where segments overlap the later
    segment wins (with a warning). Raises PlannerError when the file is not a readable
    SEG or has no plane positions (e.g. a SEG of an ultrasound cine).
    """
    import highdicom as hd

    p = Path(path)
    try:
        seg = hd.seg.segread(p)
    except Exception as exc:  # highdicom/pydicom raise several types
        raise PlannerError(f"{p}: not a readable DICOM SEG ({exc})") from None
    out = np.zeros(reference.shape, dtype=np.uint8)
    warnings: list[str] = []
    mapped: list[tuple[int, Structure]] = []
    for number in seg.get_segment_numbers():
        description = seg.get_segment_description(number)
        type_code = description.segmented_property_type.value
        found = structure_for_segment(str(description.segment_label), type_code)
        if found is None:
            warnings.append(f"{p.name}: segment {number} {description.segment_label!r} "
                            f"(code {type_code}) is not in the vocabulary; skipped")
        else:
            mapped.append((number, found))
    if mapped:
        try:
            volume = seg.get_volume(segment_numbers=[n for n, _ in mapped], combine_segments=False,
                                    rescale_fractional=True)
        except (RuntimeError, ValueError) as exc:
            raise PlannerError(f"{p}: segments cannot be placed in patient space ({exc})") from None
        array = np.asarray(volume.array)
        if array.ndim == 3:
            array = array[..., None]
        flat, inside = _reference_to_source_index(np.asarray(volume.affine, dtype=float), array.shape, reference)
        painted = out.reshape(-1)
        for channel, (number, found) in enumerate(mapped):
            values = array[..., channel].reshape(-1)[flat]
            mask = inside & ((values >= 0.5) if values.dtype.kind == "f" else (values > 0))
            if not mask.any():
                warnings.append(f"{p.name}: segment {number} {found.name!r} lies outside the image")
            if np.any(painted[mask]):
                warnings.append(f"{p.name}: segment {number} {found.name!r} overlaps an earlier segment")
            painted[mask] = found.label
    return reference.with_array(out, modality="SEG", warnings=tuple(reference.warnings) + tuple(warnings))

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

An ultrasound cine (one multi-frame image without a frame of reference) is segmented
frame by frame: highdicom writes such a SEG for one frame only, so :func:`write_seg`
extends it to every frame (see :func:`_cine_frame_seg`).
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
from pydicom.sequence import Sequence as PydicomSequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, UltrasoundImageStorage

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
    for ds in datasets:  # some exporters leave the SOP UIDs empty; the file meta still names them
        meta = getattr(ds, "file_meta", {})
        for tag, meta_tag in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not str(ds.get(tag, "")) and meta_tag in meta:
                setattr(ds, tag, meta[meta_tag].value)
    return datasets


def _slice_order(labels: Volume, datasets: list[Dataset]) -> list[int]:
    """For each source dataset, the z index of ``labels`` it coincides with."""
    order = []
    for ds in datasets:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1 or "ImagePositionPatient" not in ds:
            raise LabelMapError(
                f"source instance {ds.SOPInstanceUID} is not a single-frame image with a position; "
                "a DICOM SEG is written for a CT/MR slice series or for one ultrasound cine"
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


def _is_cine(datasets: list[Dataset]) -> bool:
    """One multi-frame image without a frame of reference (an ultrasound cine)."""
    return (len(datasets) == 1 and int(getattr(datasets[0], "NumberOfFrames", 1) or 1) > 1
            and "FrameOfReferenceUID" not in datasets[0] and "PerFrameFunctionalGroupsSequence" not in datasets[0])


def _descriptions(present: list[Structure], algorithm: Algorithm | None, uid_seed: str | None) -> list[object]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version, source=algorithm.source)
    descriptions = []
    for number, s in enumerate(present, start=1):
        category, prop_type = _codes(s)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=s.name, segmented_property_category=category,
            segmented_property_type=prop_type,
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=identification, tracking_id=s.name,
            tracking_uid=make_uid(uid_seed, "tracking", s.name),
            display_color=hd.color.CIELabColor.from_rgb(*s.color)))
    return descriptions


def _cine_frame_seg(seg: Dataset, cine: Dataset, segment_map: np.ndarray) -> None:
    """Turn a SEG of a cine's first frame into a SEG of every frame (in place).

    highdicom only writes a SEG of a single frame when the source has no frame of
    reference, so it is built against frame 1 and then extended here the way the
    standard allows for such sources: one SEG frame per (segment, source frame), each
    naming its source frame (ReferencedFrameNumber in the DerivationImageSequence) and
    indexed by (ReferencedSegmentNumber, TemporalPositionIndex). dciodvfy accepts it and
    highdicom reads it back with ``get_pixels_by_source_frame``.
    """
    import copy

    from pydicom.tag import Tag

    templates = {int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber): f
                 for f in seg.PerFrameFunctionalGroupsSequence}
    groups, masks = [], []
    for number in sorted(templates):
        for frame in range(1, segment_map.shape[0] + 1):
            group = copy.deepcopy(templates[number])
            ref = group.DerivationImageSequence[0].SourceImageSequence[0]
            ref.ReferencedSOPClassUID = cine.SOPClassUID
            ref.ReferencedFrameNumber = frame
            content = group.FrameContentSequence[0]
            content.DimensionIndexValues = [number, frame]
            content.TemporalPositionIndex = frame
            groups.append(group)
            masks.append((segment_map[frame - 1] == number).ravel())
    seg.PerFrameFunctionalGroupsSequence = PydicomSequence(groups)
    time_index = Dataset()
    time_index.DimensionOrganizationUID = seg.DimensionIndexSequence[0].DimensionOrganizationUID
    time_index.DimensionIndexPointer = Tag("TemporalPositionIndex")
    time_index.FunctionalGroupPointer = Tag("FrameContentSequence")
    time_index.DimensionDescriptionLabel = "Temporal Position Index"
    seg.DimensionIndexSequence.append(time_index)
    for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
        item.ReferencedSOPClassUID = cine.SOPClassUID
    seg.NumberOfFrames = len(groups)
    packed = np.packbits(np.concatenate(masks), bitorder="little").tobytes()
    seg.PixelData = packed + (b"\0" if len(packed) % 2 else b"")
    seg.PatientOrientation = ""


def _first_frame_view(cine: Dataset, labels: Volume) -> Dataset:
    """The cine's header as a single-frame ultrasound image (what highdicom accepts)."""
    import copy

    nframes = int(cine.NumberOfFrames)
    if nframes != labels.shape[0] or (int(cine.Rows), int(cine.Columns)) != labels.shape[1:]:
        raise LabelMapError(
            f"the cine has {nframes} frames of {cine.Rows}x{cine.Columns} but the label map is "
            f"{labels.shape}; write the SEG against the cine the labels were made on")
    single = copy.deepcopy(cine)
    for keyword in ("NumberOfFrames", "FrameIncrementPointer", "FrameTime", "CineRate", "PixelData"):
        if keyword in single:
            delattr(single, keyword)
    single.SOPClassUID = UltrasoundImageStorage
    bytes_per_frame = int(cine.Rows) * int(cine.Columns) * int(cine.SamplesPerPixel)
    single.PixelData = bytes(bytes_per_frame * (int(cine.BitsAllocated) // 8))
    single.file_meta = copy.deepcopy(cine.file_meta)
    single.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return single


def write_seg(labels: Volume, source: DicomSource | Sequence[Dataset | str | os.PathLike[str]] | None,
              path: str | os.PathLike[str], *, algorithm: Algorithm | None = None,
              series_description: str = "Reference labels", series_number: int = 100,
              uid_seed: str | None = None, deflate: bool = True) -> Path:
    """Write the label map ``labels`` as a binary DICOM SEG at ``path`` (atomically).

    The source is a CT/MR slice series, or one ultrasound cine (multi-frame, no frame of
    reference) whose frames are the label map's z slices.

    Args:
        labels: vocabulary label map on the grid of the source series.
        source: the source instances (a ``DicomSource``, file paths or datasets);
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

    if source is None:
        if labels.source is None:
            raise LabelMapError("the label map has no DICOM source; pass the source series instances")
        source = labels.source
    datasets = _source_datasets(source)
    cine = datasets[0] if _is_cine(datasets) else None
    values = [int(v) for v in np.unique(labels.array) if int(v) != 0]
    if not values:
        raise LabelMapError("the label map is empty: a DICOM SEG needs at least one segment")
    present = [structure(v) for v in values]  # raises LabelMapError for unknown labels
    lookup = np.zeros(max(values) + 1, dtype=np.uint16)
    for number, s in enumerate(present, start=1):
        lookup[s.label] = number
    segment_map = lookup[np.asarray(labels.array, dtype=np.int64)]
    if cine is not None:
        sources, pixel_array = [_first_frame_view(cine, labels)], segment_map[:1]
    else:
        sources, pixel_array = datasets, segment_map[_slice_order(labels, datasets)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.ascontiguousarray(pixel_array).astype(np.uint16),
        segmentation_type="BINARY", segment_descriptions=_descriptions(present, algorithm, uid_seed),
        series_instance_uid=make_uid(uid_seed, "seg-series"),
        series_number=series_number, sop_instance_uid=make_uid(uid_seed, "seg-instance"),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="plexus-planner",
        software_versions=__version__, device_serial_number="0",
        content_label="LABELS", content_description=series_description[:64],
        series_description=series_description[:64], omit_empty_frames=cine is None,
    )
    if cine is not None:
        _cine_frame_seg(seg, cine, segment_map)
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


def _cine_segments(seg: object, path: Path, numbers: list[int], reference: Volume) -> np.ndarray:
    """``[frame, row, column, segment]`` masks of a SEG of one multi-frame source image."""
    instances = [item for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence]
    if len(instances) != 1:
        raise PlannerError(f"{path}: a SEG without a frame of reference must reference exactly one image")
    uid = instances[0].ReferencedSOPInstanceUID
    if reference.source is not None and uid not in reference.source.sop_instance_uids:
        raise PlannerError(f"{path}: the SEG segments another image than the one given as reference")
    try:
        array = seg.get_pixels_by_source_frame(uid, list(range(1, reference.shape[0] + 1)),
                                               segment_numbers=numbers, combine_segments=False)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise PlannerError(f"{path}: its frames do not fit the {reference.shape[0]}-frame reference ({exc})") from None
    if array.shape[:3] != reference.shape:
        raise PlannerError(f"{path}: SEG frames {array.shape[:3]} do not match the reference {reference.shape}")
    return np.asarray(array)


def read_seg(path: str | os.PathLike[str], reference: Volume) -> Volume:
    """Read a DICOM SEG as a vocabulary label map on ``reference``'s grid.

    Fractional segments are thresholded at 0.5; where segments overlap the later
    segment wins (with a warning). A SEG without a frame of reference (of an ultrasound
    cine) is read frame by frame: its source frames 1..N are ``reference``'s z slices.
    Raises PlannerError when the file is not a readable SEG or does not fit ``reference``.
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
        numbers = [n for n, _ in mapped]
        if "FrameOfReferenceUID" not in seg:  # a SEG of a cine: frames by source frame number
            array = _cine_segments(seg, p, numbers, reference)
            flat, inside = np.arange(out.size), np.ones(out.size, dtype=bool)
        else:
            try:
                volume = seg.get_volume(segment_numbers=numbers, combine_segments=False,
                                        rescale_fractional=True)
            except (RuntimeError, ValueError) as exc:
                raise PlannerError(f"{p}: segments cannot be placed in patient space ({exc})") from None
            array = np.asarray(volume.array)
            if array.ndim == 3:
                array = array[..., None]
            flat, inside = _reference_to_source_index(np.asarray(volume.affine, dtype=float), array.shape,
                                                      reference)
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

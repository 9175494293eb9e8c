"""Label maps as DICOM RT Structure Sets (pydicom; highdicom has no RTSTRUCT writer).

One ROI per vocabulary label present, named by the vocabulary (so
:func:`planner.label_import.import_rtstruct` and treatment-planning systems map it back),
coloured with the vocabulary colour. Contours are the 0.5 iso-lines of each slice's mask
(:func:`skimage.measure.find_contours` on the zero-padded mask), which pass half-way
between inside and outside voxel centres: filling them with the even-odd rule on voxel
centres gives the mask back. Inner contours (holes) are written as further
CLOSED_PLANAR contours of the same ROI, which readers combine by the even-odd rule.
Each contour references the source CT slice it lies on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable
import numpy as np

from planner.errors import LabelMapError
from planner.volume import DicomSource, Volume, atomic_output

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: Detached Study Management SOP Class, what RTReferencedStudySequence items name
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                          "StudyDescription")


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed (row, column) contours of a 2D mask at the 0.5 level, in pixel coordinates."""
    from skimage.measure import find_contours

    found = find_contours(np.pad(mask.astype(np.float32), 1), 0.5)
    return [c[:-1] - 1.0 for c in found if len(c) >= 4]  # drop the repeated closing point


def write_rtstruct(labels: Volume, source: DicomSource, path: str | os.PathLike[str], *,
                   label: str = "plexus-planner", series_number: int = 101,
                   transform: Callable[[Any], Any] | None = None) -> Path:
    """Write ``labels`` (vocabulary labels on the grid of ``source``) as an RTSTRUCT at ``path``.

    ``transform`` is applied to the dataset before it is saved (e.g. de-identification).

    Raises:
        LabelMapError: for an empty map, labels outside the vocabulary, or a source series
            whose slices are not the label map's slices.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from planner import __version__
    from planner.anatomy import structure
    from planner.dicom_seg import _slice_order

    values = [int(v) for v in np.unique(labels.array) if v]
    if not values:
        raise LabelMapError("the label map is empty: an RTSTRUCT needs at least one structure")
    present = [structure(v) for v in values]  # raises LabelMapError for unknown labels
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in source.files]
    slices = _slice_order(labels, headers)
    sop_uids = [str(h.get("SOPInstanceUID", "") or h.file_meta.get("MediaStorageSOPInstanceUID", "")) for h in headers]
    by_slice = {k: (str(h.SOPClassUID), uid) for k, h, uid in zip(slices, headers, sop_uids)}
    first = headers[0]

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(ds, keyword, first.get(keyword, "") or "")
    ds.StudyInstanceUID = source.study_instance_uid or str(first.get("StudyInstanceUID", ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{label} structures"[:64]
    ds.Manufacturer = "plexus-planner"
    ds.ManufacturerModelName = "plexus-planner"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate = ds.StudyDate or ""
    ds.StructureSetTime = ds.StudyTime or ""
    ds.FrameOfReferenceUID = source.frame_of_reference_uid or str(first.get("FrameOfReferenceUID", ""))

    images = []
    for k in sorted(by_slice):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = by_slice[k]
        images.append(item)
    series = Dataset()
    series.SeriesInstanceUID = source.series_instance_uid
    series.ContourImageSequence = Sequence(images)
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = ds.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    rois, contours_seq, observations = [], [], []
    arr = np.asarray(labels.array)
    for number, s in enumerate(present, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = ds.FrameOfReferenceUID
        roi.ROIName = s.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        items = []
        for k in np.flatnonzero(np.any(arr == s.label, axis=(1, 2))):
            for c in _contours(arr[k] == s.label):
                index = np.column_stack([np.full(len(c), float(k)), c])
                points = labels.index_to_lps(index)
                item = Dataset()
                ref = Dataset()
                ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = by_slice[int(k)]
                item.ContourImageSequence = Sequence([ref])
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = [f"{v:.3f}" for v in points.ravel()]
                items.append(item)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = [int(v) for v in s.color[:3]]
        contour.ContourSequence = Sequence(items)
        contours_seq.append(contour)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours_seq)
    ds.RTROIObservationsSequence = Sequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if transform is not None:
        transform(ds)
    target = Path(path)
    with atomic_output(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target

"""Existing segmentations as vocabulary label maps on an image's grid.

Users often have a better segmentation than our network's: a TotalSegmentator multilabel
NIfTI (with its class map), a DICOM SEG, or an RTSTRUCT from a treatment-planning system.
:func:`import_labels` reads any of them, maps class / segment / ROI names onto the anatomy
vocabulary (:func:`planner.anatomy.external_label_mapping`), puts the result on the
reference image's grid (nearest neighbour, in patient coordinates) and reports the classes
it could not map (they become background).

Pure core: numpy, scipy, pydicom and SimpleITK only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from planner.anatomy import external_label_mapping, structure
from planner.errors import LabelMapError, PlannerError
from planner.volume import Volume, is_nifti, load_nifti

#: ROI names of tumour outlines in RTSTRUCTs (GTV/CTV/PTV or a plain "tumour"/"mass")
_TUMOUR_ROI = re.compile(r"(^|[^a-z])(gtv|tumou?r|mass|lesion)([^a-z]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ImportedLabels:
    """A label map in the vocabulary on the reference grid, and what happened on the way."""

    labels: Volume
    kind: str  # "nifti", "seg" or "rtstruct"
    mapped: dict[str, str] = field(default_factory=dict)  # source class name -> vocabulary name
    unmapped: tuple[str, ...] = ()

    def report(self) -> str:
        text = f"{self.kind}: {len(self.mapped)} class(es) mapped to the vocabulary"
        if self.unmapped:
            text += f"; {len(self.unmapped)} not in the vocabulary (left as background): " + ", ".join(self.unmapped)
        return text


def read_class_map(path: str | os.PathLike[str]) -> dict[int, str]:
    """``{label value: class name}`` from a JSON file.

    Accepts ``{"1": "spleen", ...}`` (TotalSegmentator's class map), ``{"spleen": 1, ...}``
    and a list of names (index = value, entry 0 the background).
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise LabelMapError(f"{p}: class map not found; pass the label map's JSON class map") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"{p}: class map is not valid JSON ({exc})") from None
    try:
        if isinstance(raw, list):
            return {i: str(n) for i, n in enumerate(raw) if i and n}
        if isinstance(raw, dict):
            if all(str(k).lstrip("-").isdigit() for k in raw):
                return {int(k): str(v) for k, v in raw.items() if int(k) != 0}
            if all(isinstance(v, int) for v in raw.values()):
                return {int(v): str(k) for k, v in raw.items() if int(v) != 0}
    except (TypeError, ValueError):
        pass
    raise LabelMapError(f"{p}: expected a class map {{\"1\": \"spleen\", ...}}, {{\"spleen\": 1, ...}} or a list of names")


def resample_labels(labels: Volume, reference: Volume) -> Volume:
    """``labels`` resampled onto ``reference``'s grid by nearest neighbour in patient space."""
    if labels.same_grid(reference):
        return reference.with_array(np.asarray(labels.array))
    import SimpleITK as sitk

    moving = labels.to_sitk()
    fixed = reference.with_array(np.zeros(reference.shape, np.uint8)).to_sitk()
    out = sitk.Resample(moving, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0, moving.GetPixelID())
    return reference.with_array(sitk.GetArrayFromImage(out))


def _sidecar_class_map(path: Path) -> Path | None:
    name = path.name
    stem = name[:-7] if name.endswith(".nii.gz") else path.stem
    for candidate in (path.with_name(stem + ".json"), *sorted(path.parent.glob("*.json"))):
        if candidate.is_file():
            return candidate
    return None


def import_nifti(path: str | os.PathLike[str], reference: Volume,
                 class_map: Mapping[int, str] | str | os.PathLike[str] | None = None) -> ImportedLabels:
    """A multilabel NIfTI (e.g. TotalSegmentator ``--ml``) with its class map, on ``reference``'s grid.

    Without ``class_map`` a JSON file next to the NIfTI (same stem, else the only one in the
    folder) is used.
    """
    p = Path(path)
    if class_map is None:
        found = _sidecar_class_map(p)
        if found is None:
            raise LabelMapError(f"{p}: a multilabel NIfTI needs its class map (JSON value -> class name); "
                                f"pass it with --class-map")
        class_map = found
    cmap = read_class_map(class_map) if isinstance(class_map, (str, os.PathLike)) else dict(class_map)
    src = load_nifti(p)
    values = np.asarray(src.array)
    if values.dtype.kind == "f":
        if not np.all(np.mod(values, 1) == 0):
            raise LabelMapError(f"{p}: not a label map (non-integer values)")
    values = values.astype(np.int64)
    present = [int(v) for v in np.unique(values) if v]
    mapping, _ = external_label_mapping(cmap)
    unknown_values = sorted(set(present) - set(cmap))
    lut = np.zeros(max(present + list(cmap) + [0]) + 1, dtype=np.uint8)
    for value, label in mapping.items():
        if value >= 0:
            lut[value] = label
    vocab = src.with_array(lut[np.clip(values, 0, None)])
    mapped = {cmap[v]: structure(mapping[v]).name for v in present if v in mapping}
    unmapped = sorted({cmap[v] for v in present if v in cmap and v not in mapping}
                      | {f"value {v} (not in the class map)" for v in unknown_values})
    return ImportedLabels(resample_labels(vocab, reference), "nifti", mapped, tuple(unmapped))


def _roi_structure(name: str) -> object | None:
    from planner.dicom_seg import structure_for_segment

    found = structure_for_segment(name, None)
    if found is None and _TUMOUR_ROI.search(name):
        found = structure("tumour")
    return found


def _fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of a closed polygon given in (fractional) pixel coordinates; pixel centres inside."""
    mask = np.zeros(shape, dtype=bool)
    r0, r1 = max(0, int(np.floor(rows.min()))), min(shape[0] - 1, int(np.ceil(rows.max())))
    c0, c1 = max(0, int(np.floor(cols.min()))), min(shape[1] - 1, int(np.ceil(cols.max())))
    if r0 > r1 or c0 > c1:
        return mask
    rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1].astype(np.float64)
    inside = np.zeros(rr.shape, dtype=bool)
    pr, pc = rows, cols
    qr, qc = np.roll(rows, -1), np.roll(cols, -1)
    for a_r, a_c, b_r, b_c in zip(pr, pc, qr, qc):
        if a_r == b_r:
            continue
        crosses = (a_r > rr) != (b_r > rr)
        at = a_c + (rr - a_r) * (b_c - a_c) / (b_r - a_r)
        inside ^= crosses & (cc < at)
    mask[r0:r1 + 1, c0:c1 + 1] = inside
    return mask


def import_rtstruct(path: str | os.PathLike[str], reference: Volume) -> ImportedLabels:
    """Rasterise an RTSTRUCT's closed planar contours onto ``reference``'s grid.

    Each contour is placed on the nearest slice of the reference (its plane must be an
    axial slice of the grid within half a slice); nested contours on a slice toggle
    (holes). ROIs whose names are not in the vocabulary are reported and skipped; tumour
    outlines (GTV/CTV/PTV, "mass") map to ``tumour``.
    """
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # pydicom raises several types
        raise LabelMapError(f"{p}: not a readable DICOM file ({exc})") from None
    if getattr(ds, "Modality", "") != "RTSTRUCT" or "ROIContourSequence" not in ds:
        raise LabelMapError(f"{p}: not an RTSTRUCT (modality {getattr(ds, 'Modality', '?')!r})")
    frame_uid = reference.source.frame_of_reference_uid if reference.source is not None else None
    refs = [r.FrameOfReferenceUID for r in getattr(ds, "ReferencedFrameOfReferenceSequence", [])]
    if frame_uid and refs and frame_uid not in refs:
        raise LabelMapError(f"{p}: the RTSTRUCT belongs to another frame of reference than the image; "
                            f"give the image series it was drawn on")
    names = {int(r.ROINumber): str(r.ROIName) for r in getattr(ds, "StructureSetROISequence", [])}
    out = np.zeros(reference.shape, dtype=np.uint8)
    mapped: dict[str, str] = {}
    unmapped: list[str] = []
    warnings: list[str] = []
    for roi in ds.ROIContourSequence:
        name = names.get(int(roi.ReferencedROINumber), f"ROI {roi.ReferencedROINumber}")
        found = _roi_structure(name)
        if found is None:
            unmapped.append(name)
            continue
        mask = np.zeros(reference.shape, dtype=bool)
        for contour in getattr(roi, "ContourSequence", []):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            pts = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            idx = reference.lps_to_index(pts)  # (z, y, x)
            z = float(np.mean(idx[:, 0]))
            k = int(round(z))
            if np.ptp(idx[:, 0]) > 0.5 or abs(z - k) > 0.5 or not 0 <= k < reference.shape[0]:
                warnings.append(f"{p.name}: a contour of {name!r} is not on an axial slice of the image; skipped")
                continue
            mask[k] ^= _fill_polygon(idx[:, 1], idx[:, 2], reference.shape[1:])
        if not mask.any():
            warnings.append(f"{p.name}: ROI {name!r} has no contour inside the image")
        out[mask] = found.label
        mapped[name] = found.name
    vol = reference.with_array(out, modality="RTSTRUCT", warnings=tuple(reference.warnings) + tuple(warnings))
    return ImportedLabels(vol, "rtstruct", mapped, tuple(sorted(unmapped)))


def import_seg(path: str | os.PathLike[str], reference: Volume) -> ImportedLabels:
    """A DICOM SEG via :func:`planner.dicom_seg.read_seg`; unmapped segments from its warnings."""
    from planner.dicom_seg import read_seg

    vol = read_seg(path, reference)
    unmapped = tuple(re.findall(r"segment \d+ '([^']*)' \(code [^)]*\) is not in the vocabulary", " ".join(vol.warnings)))
    mapped = {structure(int(v)).name: structure(int(v)).name for v in np.unique(vol.array) if v}
    return ImportedLabels(vol, "seg", mapped, unmapped)


def import_labels(path: str | os.PathLike[str], reference: Volume,
                  class_map: Mapping[int, str] | str | os.PathLike[str] | None = None) -> ImportedLabels:
    """Any supported segmentation file (multilabel NIfTI, DICOM SEG, RTSTRUCT) on ``reference``'s grid.

    Raises:
        LabelMapError: for a missing or unsupported file, or one that does not fit the image.
    """
    p = Path(path)
    if not p.is_file():
        raise LabelMapError(f"{p}: label file not found")
    if is_nifti(p):
        return import_nifti(p, reference, class_map)
    import pydicom

    try:
        modality = str(pydicom.dcmread(p, stop_before_pixels=True).get("Modality", ""))
    except Exception:
        raise LabelMapError(f"{p}: neither a NIfTI label map nor a DICOM SEG / RTSTRUCT file") from None
    if modality == "SEG":
        try:
            return import_seg(p, reference)
        except LabelMapError:
            raise
        except PlannerError as exc:
            raise LabelMapError(str(exc)) from None
    if modality == "RTSTRUCT":
        return import_rtstruct(p, reference)
    raise LabelMapError(f"{p}: DICOM modality {modality!r} is not a segmentation; give a SEG or RTSTRUCT file "
                        f"or a multilabel NIfTI with its class map")


def reconcile_targets(labels: Volume) -> tuple[Volume, dict[str, dict[str, object]]]:
    """Run the target rules (:mod:`planner.targets`) on any label map; compare with predicted targets.

    Target voxels already in ``labels`` (a network that predicts target classes) are set
    aside, the rules run on the remaining anatomy, and each rule region replaces the
    predicted one; where a rule cannot be derived the predicted region is kept.

    Returns:
        (label map with the targets painted, ``{target: {"source": "rule" | "network" |
        "none", "rule_voxels", "network_voxels", "dice" (rule vs network, when both exist),
        "message"}}``).
    """
    from planner.anatomy import label_of
    from planner.targets import TARGET_NAMES, derive_targets

    arr = np.asarray(labels.array)
    body = label_of("body")
    free_value = body if np.any(arr == body) else 0
    predicted = {n: arr == label_of(n) for n in TARGET_NAMES}
    base = np.array(arr, copy=True)
    for mask in predicted.values():
        base[mask] = free_value
    base_vol = labels.with_array(base)
    try:
        regions = derive_targets(base_vol)
        rule_masks, messages = regions.masks, dict(regions.messages)
    except LabelMapError as exc:  # "no target region could be derived: name: reason; name: reason"
        rule_masks = {}
        text = str(exc).split(": ", 1)[-1]
        messages = {n: next((part for part in text.split("; ") if part.startswith(n + ":")), str(exc))
                    for n in TARGET_NAMES}
    out = np.array(base, copy=True)
    free = (out == 0) | (out == body)
    report: dict[str, dict[str, object]] = {}
    for name in TARGET_NAMES:
        net = predicted[name]
        rule = rule_masks.get(name)
        entry: dict[str, object] = {"rule_voxels": int(rule.sum()) if rule is not None else 0,
                                    "network_voxels": int(net.sum()), "dice": None,
                                    "message": messages.get(name, "")}
        if rule is not None and net.any():
            entry["dice"] = round(2.0 * float((rule & net).sum()) / float(rule.sum() + net.sum()), 4)
        if rule is not None:
            out[rule & free] = label_of(name)
            entry["source"] = "rule"
        elif net.any():
            out[net & free] = label_of(name)
            entry["source"] = "network"
        else:
            entry["source"] = "none"
        report[name] = entry
    return labels.with_array(out), report


#: vertebral levels named upwards from the sacrum when levels are counted (T9 and above: bone_other)
_LEVELS_UP = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
BODY_DEPTH_MM = 30.0
BODY_HALF_WIDTH_MM = 25.0


def assign_vertebral_levels(labels: Volume) -> tuple[Volume, str]:
    """Split a level-less ``vertebrae`` label into T10..L5 by counting bodies up from the sacrum.

    Vertebral bodies (the front :data:`BODY_DEPTH_MM` of the spine near its midline) are
    found as runs of slices separated by discs (slices where the body area drops below a
    third of its median); runs much taller than the median body are split evenly. The
    first body above the sacrum is L5. Every ``vertebrae`` voxel (posterior elements
    included) takes the level of the nearest body along z; bodies above T10 become
    ``bone_other``.

    Returns:
        (label map, message); unchanged with the reason when there is no sacrum to count
        from, no vertebrae, or the grid is not axis-aligned.
    """
    from planner.anatomy import label_of, vertebra_name

    arr = np.asarray(labels.array)
    generic = arr == label_of("vertebrae")
    if not generic.any():
        return labels, "no level-less vertebrae to assign"
    d = np.asarray(labels.direction, float)
    if not np.allclose(np.abs(d), np.eye(3), atol=1e-3):
        return labels, "vertebral levels not identified: the grid is not axis-aligned"
    sacrum = arr == label_of("sacrum")
    if not sacrum.any():
        return labels, "vertebral levels not identified: no sacrum in view to count from"
    sz, sy, sx = labels.spacing
    z = labels.origin[2] + d[2, 2] * sz * np.arange(arr.shape[0])
    y = labels.origin[1] + d[1, 1] * sy * np.arange(arr.shape[1])
    x = labels.origin[0] + d[0, 0] * sx * np.arange(arr.shape[2])
    kz, ky, kx = np.nonzero(generic)
    # the body is what lies in front of the spinal canal (posterior elements bridge the discs);
    # without a canal label, within BODY_DEPTH_MM of the spine's front over neighbouring slices
    canal = arr == label_of("spinal_canal")
    limit = np.full(arr.shape[0], np.nan)
    cz, cy, _ = np.nonzero(canal)
    if cz.size:
        front = np.full(arr.shape[0], np.inf)
        np.minimum.at(front, cz, y[cy])
        have = np.isfinite(front)
        limit = np.interp(np.arange(arr.shape[0]), np.nonzero(have)[0], front[have])
    else:
        front = np.full(arr.shape[0], np.inf)
        np.minimum.at(front, kz, y[ky])
        half = max(1, int(round(12.0 / sz)))
        padded = np.pad(front, half, mode="edge")
        limit = np.array([padded[k:k + 2 * half + 1].min() for k in range(arr.shape[0])]) + BODY_DEPTH_MM
    x_mid = float(np.median(x[kx]))
    body = (y[ky] < limit[kz]) & (np.abs(x[kx] - x_mid) <= BODY_HALF_WIDTH_MM)
    area = np.bincount(kz[body], minlength=arr.shape[0]).astype(float)
    top_sacrum = float(z[np.nonzero(sacrum.any(axis=(1, 2)))[0]].max())
    order = np.argsort(z)
    above = [k for k in order if z[k] > top_sacrum - 0.5 * sz]
    positive = area[above][area[above] > 0]
    if positive.size == 0:
        return labels, "vertebral levels not identified: no vertebral body above the sacrum"
    threshold = float(np.median(positive)) / 3.0
    runs: list[list[int]] = []
    current: list[int] = []
    for k in above:
        if area[k] > threshold:
            current.append(k)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    if not runs:
        return labels, "vertebral levels not identified: no vertebral body above the sacrum"
    heights = np.array([len(r) for r in runs], float)
    typical = float(np.median(heights))
    split: list[list[int]] = []
    for r in runs:
        parts = max(1, int(round(len(r) / typical))) if len(r) > 1.6 * typical else 1
        split.extend(list(chunk) for chunk in np.array_split(np.array(r), parts))
    centres = np.array([float(np.mean(z[r])) for r in split])
    names = [vertebra_name(lv) for lv in _LEVELS_UP] + ["bone_other"] * max(0, len(split) - len(_LEVELS_UP))
    values = np.array([label_of(n) for n in names[:len(split)]])
    nearest = np.abs(z[kz][:, None] - centres[None, :]).argmin(axis=1)
    out = np.array(arr, copy=True)
    out[kz, ky, kx] = values[nearest]
    found = [n for n in names[:len(split)] if n != "bone_other"]
    return labels.with_array(out), f"vertebral levels counted up from the sacrum: {', '.join(found)}"

"""``plexplan segment PATH --out DIR``: run a bundled model and write labels in the vocabulary.

Inputs: PNG/JPEG ultrasound frames, single- and multi-frame ultrasound DICOM (and, once a
CT bundle exists, CT series). The pipeline is chosen by the bundle's metadata modality
(:data:`PIPELINES`); without ``--model`` the shipped bundle for the image's modality is used.

Outputs in DIR (each written atomically, only after the whole run succeeded):
``labels.nii.gz`` (vocabulary labels on the input grid, same calibration), ``labels.json``
(label value -> vocabulary name), ``structures.csv`` (area per frame for ultrasound,
volume for 3D images, mean intensity) and ``seg.dcm`` (DICOM SEG) where the DICOM source
allows one. torch and MONAI load inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import ModelError, PlannerError, VolumeError
from planner.volume import Volume, atomic_output

NAME = "segment"
HELP = "segment an image with a bundled model (ultrasound nerve/vessel, abdominal CT) or import a label map"

#: bundle modality -> "module:function(volume, bundle, smooth_window, batch_size, progress) -> label Volume"
PIPELINES: dict[str, str] = {"US": "segmentation.ultrasound:segment_volume",
                             "CT": "segmentation.ct:segment_volume"}
#: image modality -> shipped bundle folder in models/
DEFAULT_BUNDLES: dict[str, str] = {"US": "us_nerve_seg", "CT": "ct_abdomen_phantom", "OT": "ct_abdomen_phantom"}
#: default refusal limit (voxels) for CT inputs, checked on the headers before loading
MAX_VOXELS = 80_000_000
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: relative disagreement between --spacing and a DICOM ultrasound calibration that is refused
SPACING_TOLERANCE = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="PNG/JPEG frame, ultrasound DICOM file (single or multi-frame), or DICOM folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default=None, help="MONAI bundle folder (default: the shipped bundle for the modality)")
    parser.add_argument("--spacing", type=float, default=None,
                        help="pixel spacing in mm for frames without calibration (PNG/JPEG, uncalibrated DICOM); "
                             "checked against the DICOM ultrasound region calibration when present")
    parser.add_argument("--smooth", type=int, default=1,
                        help="temporal smoothing for cines: odd number of frames in a moving average (1 = off)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per inference batch")
    parser.add_argument("--series", default=None, help="SeriesInstanceUID (or prefix) when a folder holds several")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--labels-from", default=None, metavar="FILE",
                        help="use an existing segmentation instead of a network: multilabel NIfTI (with "
                             "--class-map or a JSON beside it, e.g. TotalSegmentator), DICOM SEG or RTSTRUCT")
    parser.add_argument("--class-map", default=None, metavar="JSON",
                        help="class map of a --labels-from NIfTI ({\"1\": \"spleen\", ...})")
    parser.add_argument("--max-voxels", type=int, default=MAX_VOXELS,
                        help=f"refuse 3D inputs larger than this many voxels (default {MAX_VOXELS:,})")
    parser.add_argument("--model-sha256", default=None,
                        help="expected sha256 of a foreign MONAI bundle's models/model.pt (its metadata has none)")


# ---------------------------------------------------------------------------- input
def load_frame_image(path: Path, spacing_mm: float | None) -> Volume:
    """A PNG/JPEG frame as a one-frame ultrasound ``Volume`` (spacing ``--spacing`` or 1 mm)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise VolumeError(f"{path}: not a readable PNG/JPEG image ({exc})") from None
    if rgb.size == 0:
        raise VolumeError(f"{path}: the image has no pixels")
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    warnings = ()
    if spacing_mm is None:
        spacing_mm = 1.0
        warnings = (f"{path.name}: no physical calibration; pixel spacing set to 1 mm (areas in pixels); "
                    "pass --spacing MM",)
    return Volume(array=grey[None], spacing=(1.0, spacing_mm, spacing_mm), origin=(0.0, 0.0, 0.0),
                  modality="US", warnings=warnings, display_rgb=rgb[None], calibrated=not warnings)


def has_calibration(volume: Volume) -> bool:
    """True when the loader found a physical pixel calibration (ultrasound regions or PixelSpacing)."""
    return volume.calibrated


def apply_spacing(volume: Volume, spacing_mm: float | None, path: Path) -> Volume:
    """Check ``--spacing`` against the image's own calibration, or set it on an uncalibrated image."""
    import dataclasses

    if spacing_mm is not None and spacing_mm <= 0:
        raise VolumeError(f"--spacing must be a positive pixel spacing in mm, got {spacing_mm}")
    if has_calibration(volume):
        calibration = volume.spacing[1:]
        if spacing_mm is not None and any(abs(spacing_mm - c) > SPACING_TOLERANCE * c for c in calibration):
            raise VolumeError(
                f"{path}: --spacing {spacing_mm} mm contradicts the image's own calibration "
                f"{calibration[0]:.4g} x {calibration[1]:.4g} mm/pixel; drop --spacing or check the file")
        return volume
    if spacing_mm is None:
        return volume
    kept = tuple(w for w in volume.warnings if "no physical calibration" not in w)
    return dataclasses.replace(volume, spacing=(volume.spacing[0], spacing_mm, spacing_mm), calibrated=True,
                               warnings=kept + (f"pixel spacing {spacing_mm} mm from --spacing",))


def load_input(path: Path, spacing_mm: float | None, series: str | None) -> Volume:
    """The image to segment as a ``Volume`` (frames, or a CT series)."""
    from planner.volume import load

    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES:
        if spacing_mm is not None and spacing_mm <= 0:
            raise VolumeError(f"--spacing must be a positive pixel spacing in mm, got {spacing_mm}")
        return load_frame_image(path, spacing_mm)
    return apply_spacing(load(path, series=series), spacing_mm, path)


# ---------------------------------------------------------------------------- model
def choose_bundle(model: str | None, volume: Volume) -> Any:
    """The bundle to run: ``--model`` or the shipped one for the image modality; checks the modality."""
    from segmentation.bundle import default_bundle_path, read_bundle

    if model is None:
        name = DEFAULT_BUNDLES.get(volume.modality)
        if name is None:
            raise ModelError(f"no shipped segmentation model for modality {volume.modality!r} "
                             f"(available: {', '.join(DEFAULT_BUNDLES)}); pass --model BUNDLE")
        bundle = read_bundle(default_bundle_path(name))
    else:
        bundle = read_bundle(model, allow_foreign=True)
    if bundle.modality not in PIPELINES:
        raise ModelError(f"{bundle.root}: bundle modality {bundle.modality!r} has no pipeline "
                         f"(known: {', '.join(PIPELINES)})")
    if bundle.modality != volume.modality and not (bundle.modality == "CT" and volume.modality == "OT"):
        raise ModelError(f"the image is a {volume.modality} {'x'.join(map(str, volume.shape))} volume but model "
                         f"{bundle.name} is for {bundle.modality} images; use a {volume.modality} model")
    return bundle


def run_pipeline(bundle: Any, volume: Volume, smooth: int, batch_size: int, progress: bool,
                 pipeline: str | None = None, **options: Any) -> Volume:
    """Run the bundle's pipeline (``pipeline`` "module:function" overrides :data:`PIPELINES`).

    ``options`` go to the pipeline function as keywords (CT: ``max_voxels``, ``expected_sha256``).
    """
    import importlib

    module_name, func_name = (pipeline or PIPELINES[bundle.modality]).split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(volume, bundle, smooth_window=smooth, batch_size=batch_size, progress=progress, **options)


# ---------------------------------------------------------------------------- output
def structure_rows(image: Volume, labels: Volume) -> list[dict[str, Any]]:
    """Per-structure measurements: per frame (area) for ultrasound, whole volume otherwise."""
    from planner.anatomy import structure

    dy, dx = labels.spacing[1], labels.spacing[2]
    rows: list[dict[str, Any]] = []
    values = [int(v) for v in np.unique(labels.array) if v]
    grey = np.asarray(image.array, dtype=np.float64)
    if labels.modality == "US":
        for frame in range(labels.shape[0]):
            lab = labels.array[frame]
            for v in values:
                mask = lab == v
                n = int(mask.sum())
                if n:
                    rows.append({"frame": frame, "structure": structure(v).name, "label": v, "pixels": n,
                                 "area_mm2": round(n * dy * dx, 3), "volume_mm3": "",
                                 "mean_intensity": round(float(grey[frame][mask].mean()), 3)})
    else:
        voxel = float(np.prod(labels.spacing))
        counts = np.bincount(labels.array.reshape(-1).astype(np.int64))
        sums = np.bincount(labels.array.reshape(-1).astype(np.int64), weights=grey.reshape(-1))
        for v in values:
            n = int(counts[v])
            rows.append({"structure": structure(v).name, "label": v, "voxels": n,
                         "volume_ml": round(n * voxel / 1000.0, 3), "mean_hu": round(float(sums[v] / n), 1)})
    return rows


#: structures.csv columns for 3D (CT) label maps; ultrasound keeps its per-frame columns
VOLUME_FIELDS = ["structure", "label", "voxels", "volume_ml", "mean_hu"]


def write_outputs(out_dir: Path, image: Volume, labels: Volume, bundle: Any,
                  extra_json: dict[str, Any] | None = None, source_name: str | None = None) -> list[Path]:
    """labels.nii.gz, labels.json, structures.csv and (for DICOM sources that allow it) seg.dcm.

    ``bundle`` is None for an imported label map (``source_name`` then names it in the SEG);
    ``extra_json`` files (name -> content) are written too (e.g. targets.json).
    """
    from planner.anatomy import structure
    from planner.errors import LabelMapError
    from planner.volume import save_nifti

    written = [save_nifti(labels, out_dir / "labels.nii.gz")]
    names = {str(label): structure(label).name for label in sorted(
        {int(v) for v in (bundle_labels(bundle) if bundle is not None else [])}
        | {int(v) for v in np.unique(labels.array) if v})}
    with atomic_output(out_dir / "labels.json") as tmp:
        tmp.write_text(json.dumps(names, indent=2) + "\n")
    written.append(out_dir / "labels.json")
    buffer = io.StringIO()
    fields = (["frame", "structure", "label", "pixels", "area_mm2", "volume_mm3", "mean_intensity"]
              if labels.modality == "US" else VOLUME_FIELDS)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(structure_rows(image, labels))
    with atomic_output(out_dir / "structures.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    written.append(out_dir / "structures.csv")
    for name, content in (extra_json or {}).items():
        with atomic_output(out_dir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2, default=str) + "\n")
        written.append(out_dir / name)
    if image.source is not None:
        from planner import __version__
        from planner.dicom_seg import Algorithm, write_seg

        algo_name = bundle.name if bundle is not None else (source_name or "imported segmentation")
        version = str(bundle.metadata.get("version", __version__)) if bundle is not None else __version__
        try:
            written.append(write_seg(labels, image.source, out_dir / "seg.dcm",
                                     algorithm=Algorithm(algo_name, version),
                                     series_description=f"{algo_name} segmentation"[:64]))
        except LabelMapError as exc:  # e.g. ultrasound sources without a patient position
            print(f"note: seg.dcm not written: {exc}")
    return written


def segment_series(volume: Volume, bundle: Any, out_dir: Path, *, smooth: int = 1, batch_size: int = 16,
                   progress: bool = False, pipeline: str | None = None, **options: Any) -> tuple[Volume, list[Path]]:
    """The one-series pipeline shared by ``plexplan segment`` and ``plexplan batch``.

    Runs the bundle's pipeline on ``volume`` and writes every output into ``out_dir``
    (see :func:`write_outputs`); a CT label map first gets its rule-based target regions
    (``targets.json``, :func:`write_volume_outputs`), as in ``plexplan segment``. Returns the
    label volume and the files written. ``options`` go to the pipeline (CT: ``max_voxels``).
    """
    if bundle.modality == "CT":
        labels = run_pipeline(bundle, volume, 1, min(batch_size, 4), progress=progress, pipeline=pipeline, **options)
        labels, _, written = write_volume_outputs(out_dir, volume, labels, bundle)
        return labels, written
    labels = run_pipeline(bundle, volume, smooth, batch_size, progress=progress, pipeline=pipeline, **options)
    return labels, write_outputs(out_dir, volume, labels, bundle)


def structure_name(label: int) -> str:
    from planner.anatomy import structure

    return structure(label).name


def bundle_labels(bundle: Any) -> list[int]:
    from planner.anatomy import label_of

    return [label_of(name) for name in bundle.channel_vocabulary.values()]


def header_voxels(path: Path, series: str | None) -> tuple[int, str]:
    """``(voxel count, modality)`` of a NIfTI or DICOM input from its headers alone (no pixel data)."""
    from planner.volume import is_nifti

    if path.is_file() and is_nifti(path):
        import nibabel as nib

        try:
            return int(np.prod(nib.load(str(path)).shape[:3])), "OT"
        except Exception as exc:  # nibabel raises several types for broken headers
            raise VolumeError(f"{path}: not a readable NIfTI image ({exc})") from None
    import pydicom

    from planner.dicom_series import list_series

    found = [s for s in list_series(path) if series is None or s.uid.startswith(series)]
    if len(found) != 1:
        return 0, ""  # the loader reports the ambiguity / absence with its own message
    ds = pydicom.dcmread(found[0].first_file, stop_before_pixels=True)
    return int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(found[0].n_frames), found[0].modality


def check_size(path: Path, series: str | None, max_voxels: int) -> None:
    """Refuse a 3D input above ``max_voxels`` before its pixels are read."""
    if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES:
        return
    n, modality = header_voxels(path, series)
    if modality != "US" and n > max_voxels:
        raise VolumeError(f"{path}: {n:,} voxels is above the limit of {max_voxels:,}; crop the series or "
                          f"raise --max-voxels")


def write_outputs_atomically(out_dir: Path, *args: Any, **kwargs: Any) -> list[Path]:
    """:func:`write_outputs` into a hidden sibling folder, then every file moved into ``out_dir``:
    a failure part-way leaves ``out_dir`` as it was."""
    import os
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        staged = write_outputs(tmp, *args, **kwargs)
        final = []
        for p in staged:
            os.replace(p, out_dir / p.name)
            final.append(out_dir / p.name)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_volume_outputs(out_dir: Path, volume: Volume, labels: Volume, bundle: Any, imported: Any = None,
                         labels_from: str | None = None) -> tuple[Volume, dict[str, Any], list[Path]]:
    """Targets by rule on a 3D label map (network or imported), then every output (atomically).

    Returns the label map with its target regions, the targets report and the files written.
    """
    from planner.label_import import reconcile_targets

    labels, targets = reconcile_targets(labels)
    extra: dict[str, Any] = {"targets.json": {"targets": targets}}
    if imported is not None:
        extra["targets.json"]["imported"] = {"kind": imported.kind, "file": str(labels_from),
                                             "mapped": imported.mapped, "unmapped": list(imported.unmapped)}
    written = write_outputs_atomically(out_dir, volume, labels, bundle, extra_json=extra,
                                       source_name=None if imported is None else f"imported {imported.kind}")
    return labels, targets, written


def run_volume_labels(args: argparse.Namespace, path: Path, volume: Volume, labels: Volume, bundle: Any,
                      imported: Any = None) -> int:
    """Targets by rule on a 3D label map (network or imported), then every output, then a summary."""
    labels, targets, written = write_volume_outputs(Path(args.out), volume, labels, bundle, imported,
                                                    args.labels_from)
    present = [int(v) for v in np.unique(labels.array) if v]
    what = bundle.name if bundle is not None else f"{imported.kind} {Path(args.labels_from).name}"
    print(f"segmented {'x'.join(map(str, volume.shape))} voxels of {path.name} with {what}: "
          f"{len(present)} structures")
    for name, t in targets.items():
        agreement = f", network vs rule Dice {t['dice']:.3f}" if t["dice"] is not None else ""
        detail = f" ({t['message']})" if t["source"] != "rule" and t["message"] else ""
        print(f"target {name}: from {t['source']}, {t['rule_voxels'] or t['network_voxels']} voxels{agreement}{detail}")
    for p in written:
        print(f"wrote {p}")
    return 0


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise PlannerError(f"--smooth must be an odd number of frames >= 1, got {args.smooth}")
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    check_size(path, args.series, args.max_voxels)
    volume = load_input(path, args.spacing, args.series)
    if args.labels_from:
        from planner.label_import import import_labels

        if min(volume.shape) < 2:
            raise VolumeError(f"{path}: a {'x'.join(map(str, volume.shape))} image is not a 3D volume; "
                              f"--labels-from needs the 3D series the labels were drawn on")
        imported = import_labels(args.labels_from, volume, args.class_map)
        print(imported.report())
        return run_volume_labels(args, path, volume, imported.labels, None, imported)
    bundle = choose_bundle(args.model, volume)
    for warning in volume.warnings:
        print(f"warning: {warning}")
    if bundle.modality == "CT":
        if bundle.is_foreign and bundle.unmapped_labels:
            print(f"note: {len(bundle.unmapped_labels)} label(s) of {bundle.name} are not in the vocabulary "
                  f"(left as background): {', '.join(bundle.unmapped_labels)}")
        labels = run_pipeline(bundle, volume, 1, min(args.batch_size, 4), progress=not args.no_progress,
                              max_voxels=args.max_voxels, expected_sha256=args.model_sha256)
        return run_volume_labels(args, path, volume, labels, bundle)
    labels, written = segment_series(volume, bundle, Path(args.out), smooth=args.smooth,
                                     batch_size=args.batch_size, progress=not args.no_progress)
    found = ", ".join(f"{structure_name(v)} {int((labels.array == v).sum())} px" for v in bundle_labels(bundle))
    print(f"segmented {labels.shape[0]} frame(s) of {path.name} with {bundle.name}: {found}")
    for p in written:
        print(f"wrote {p}")
    return 0

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
HELP = "segment an image with a bundled model (ultrasound nerve/vessel now) and write labels"

#: bundle modality -> "module:function(volume, bundle, smooth_window, batch_size, progress) -> label Volume"
PIPELINES: dict[str, str] = {"US": "segmentation.ultrasound:segment_volume"}
#: image modality -> shipped bundle folder in models/
DEFAULT_BUNDLES: dict[str, str] = {"US": "us_nerve_seg"}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: relative disagreement between --spacing and a DICOM ultrasound calibration that is refused
SPACING_TOLERANCE = 0.05
#: the loader's warning for a DICOM image without any physical pixel calibration
NO_CALIBRATION = "no physical calibration"


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
        warnings = (f"{path.name}: {NO_CALIBRATION}; pixel spacing set to 1 mm (areas in pixels); pass --spacing MM",)
    return Volume(array=grey[None], spacing=(1.0, spacing_mm, spacing_mm), origin=(0.0, 0.0, 0.0),
                  modality="US", warnings=warnings, display_rgb=rgb[None])


def has_calibration(volume: Volume) -> bool:
    """True when the loader found a physical pixel calibration (ultrasound regions or PixelSpacing)."""
    return not any(NO_CALIBRATION in w for w in volume.warnings)


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
    kept = tuple(w for w in volume.warnings if NO_CALIBRATION not in w)
    return dataclasses.replace(volume, spacing=(volume.spacing[0], spacing_mm, spacing_mm),
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
        bundle = read_bundle(model)
    if bundle.modality not in PIPELINES:
        raise ModelError(f"{bundle.root}: bundle modality {bundle.modality!r} has no pipeline "
                         f"(known: {', '.join(PIPELINES)})")
    if bundle.modality != volume.modality:
        raise ModelError(f"the image is a {volume.modality} {'x'.join(map(str, volume.shape))} volume but model "
                         f"{bundle.name} is for {bundle.modality} images; use a {volume.modality} model")
    return bundle


def run_pipeline(bundle: Any, volume: Volume, smooth: int, batch_size: int, progress: bool,
                 pipeline: str | None = None) -> Volume:
    """Run the bundle's pipeline (``pipeline`` "module:function" overrides :data:`PIPELINES`)."""
    import importlib

    module_name, func_name = (pipeline or PIPELINES[bundle.modality]).split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(volume, bundle, smooth_window=smooth, batch_size=batch_size, progress=progress)


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
        for v in values:
            mask = labels.array == v
            n = int(mask.sum())
            rows.append({"frame": "", "structure": structure(v).name, "label": v, "pixels": n, "area_mm2": "",
                         "volume_mm3": round(n * voxel, 3), "mean_intensity": round(float(grey[mask].mean()), 3)})
    return rows


def write_outputs(out_dir: Path, image: Volume, labels: Volume, bundle: Any) -> list[Path]:
    """labels.nii.gz, labels.json, structures.csv and (for DICOM sources that allow it) seg.dcm."""
    from planner.anatomy import structure
    from planner.errors import LabelMapError
    from planner.volume import save_nifti

    written = [save_nifti(labels, out_dir / "labels.nii.gz")]
    names = {str(label): structure(label).name for label in sorted(
        {int(v) for v in bundle_labels(bundle)} | {int(v) for v in np.unique(labels.array) if v})}
    with atomic_output(out_dir / "labels.json") as tmp:
        tmp.write_text(json.dumps(names, indent=2) + "\n")
    written.append(out_dir / "labels.json")
    buffer = io.StringIO()
    fields = ["frame", "structure", "label", "pixels", "area_mm2", "volume_mm3", "mean_intensity"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(structure_rows(image, labels))
    with atomic_output(out_dir / "structures.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    written.append(out_dir / "structures.csv")
    if image.source is not None:
        from planner import __version__
        from planner.dicom_seg import Algorithm, write_seg

        try:
            written.append(write_seg(labels, image.source, out_dir / "seg.dcm",
                                     algorithm=Algorithm(bundle.name, str(bundle.metadata.get("version", __version__))),
                                     series_description=f"{bundle.name} segmentation"))
        except LabelMapError as exc:  # e.g. ultrasound sources without a patient position
            print(f"note: seg.dcm not written: {exc}")
    return written


def segment_series(volume: Volume, bundle: Any, out_dir: Path, *, smooth: int = 1, batch_size: int = 16,
                   progress: bool = False, pipeline: str | None = None) -> tuple[Volume, list[Path]]:
    """The one-series pipeline shared by ``plexplan segment`` and ``plexplan batch``.

    Runs the bundle's pipeline on ``volume`` and writes every output into ``out_dir``
    (see :func:`write_outputs`); returns the label volume and the files written.
    """
    labels = run_pipeline(bundle, volume, smooth, batch_size, progress=progress, pipeline=pipeline)
    return labels, write_outputs(out_dir, volume, labels, bundle)


def structure_name(label: int) -> str:
    from planner.anatomy import structure

    return structure(label).name


def bundle_labels(bundle: Any) -> list[int]:
    from planner.anatomy import label_of

    return [label_of(name) for name in bundle.channel_vocabulary.values()]


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if args.smooth < 1 or args.smooth % 2 == 0:
        raise PlannerError(f"--smooth must be an odd number of frames >= 1, got {args.smooth}")
    volume = load_input(path, args.spacing, args.series)
    bundle = choose_bundle(args.model, volume)
    for warning in volume.warnings:
        print(f"warning: {warning}")
    labels, written = segment_series(volume, bundle, Path(args.out), smooth=args.smooth,
                                     batch_size=args.batch_size, progress=not args.no_progress)
    found = ", ".join(f"{structure_name(v)} {int((labels.array == v).sum())} px" for v in bundle_labels(bundle))
    print(f"segmented {labels.shape[0]} frame(s) of {path.name} with {bundle.name}: {found}")
    for p in written:
        print(f"wrote {p}")
    return 0

"""The bundled sample cases: what they are, where they lie, how to load or export them.

Each case is a folder in ``sample_dicom/`` (installed as ``planner.bundled_samples``,
found through :func:`planner.resources.samples_dir`), generated deterministically from
synthetic phantoms by ``python -m segmentation.make_samples``::

    <name>/case.md          case card: vignette, procedure, teaching points, difficulty
    <name>/ct/CT_0001.dcm   CT series (CT cases), or  <name>/us.dcm  ultrasound cine
    <name>/seg.dcm          reference labels as DICOM SEG (see planner.dicom_seg)
    <name>/labels.nii.gz    the same labels as NIfTI, on the image grid
    <name>/labels.json      {label: vocabulary name} of the labels present

All are synthetic phantoms, not patient data. Research and education software, not a
medical device.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError
from planner.resources import samples_dir
from planner.volume import Volume, load, load_nifti


@dataclass(frozen=True)
class SampleCase:
    """One bundled case (paths are relative to its folder)."""

    name: str
    number: int
    title: str
    procedure: str
    #: procedure presets (planner.presets) that suit the case, best first
    presets: tuple[str, ...]
    modality: str
    description: str
    image: str
    labels: str = "labels.nii.gz"
    seg: str | None = "seg.dcm"
    card: str = "case.md"

    @property
    def path(self) -> Path:
        return samples_dir() / self.name

    @property
    def image_path(self) -> Path:
        return self.path / self.image

    @property
    def labels_path(self) -> Path:
        return self.path / self.labels

    @property
    def seg_path(self) -> Path | None:
        return self.path / self.seg if self.seg else None

    @property
    def card_path(self) -> Path:
        return self.path / self.card

    @property
    def is_bundled(self) -> bool:
        """True when the case's image and labels are present in this installation."""
        return self.image_path.exists() and self.labels_path.exists()

    def label_names(self) -> dict[int, str]:
        """``{label: vocabulary name}`` from the case's ``labels.json``."""
        return {int(k): str(v) for k, v in json.loads((self.path / "labels.json").read_text()).items()}


SAMPLES: tuple[SampleCase, ...] = (
    SampleCase(
        name="celiac_standard", number=1, title="Celiac plexus block, standard anatomy",
        procedure="celiac_plexus_block",
        presets=("celiac_posterior_retrocrural", "celiac_transcrural", "celiac_anterior"),
        modality="CT", image="ct",
        description="Contrast CT phantom T10-sacrum, normal BMI, celiac trunk near T12-L1."),
    SampleCase(
        name="celiac_tumour_high_bmi", number=2,
        title="Celiac plexus block, tumour encasing the celiac axis, high BMI",
        procedure="celiac_plexus_block",
        presets=("celiac_transaortic", "celiac_posterior_retrocrural", "celiac_anterior"),
        modality="CT", image="ct",
        description="Pancreatic body tumour wrapping the celiac axis, BMI about 34: longer, tighter paths."),
    SampleCase(
        name="superior_hypogastric", number=3, title="Superior hypogastric plexus block",
        procedure="superior_hypogastric_plexus_block", presets=("superior_hypogastric_posterior",),
        modality="CT", image="ct",
        description="Target anterior to L5-S1 below the aortic bifurcation, iliac crests in the way."),
    SampleCase(
        name="supraclavicular_us", number=4, title="Supraclavicular brachial plexus block (ultrasound cine)",
        procedure="brachial_plexus_block", presets=("supraclavicular_us_inplane",),
        modality="US", image="us.dcm",
        description="Simulated 20-frame linear-probe cine: plexus lateral to the pulsating subclavian artery."),
)


def all_cases() -> tuple[SampleCase, ...]:
    """Every registered case, bundled in this installation or not."""
    return SAMPLES


def case_names() -> tuple[str, ...]:
    """Names of the cases bundled (present on disk) in this installation."""
    return tuple(case.name for case in SAMPLES if case.is_bundled)


def get_case(name: str) -> SampleCase:
    """A case by name.

    Raises:
        PlannerError: for an unknown name (listing the known ones) or a case whose files
            are missing from this installation.
    """
    for case in SAMPLES:
        if case.name == name:
            if not case.is_bundled:
                raise PlannerError(
                    f"sample case {name!r} is not bundled in {samples_dir()}; "
                    "regenerate it with `python -m segmentation.make_samples`"
                )
            return case
    raise PlannerError(f"unknown sample case {name!r}; known cases: {', '.join(c.name for c in SAMPLES)}")


def load_case(name: str) -> tuple[Volume, Volume]:
    """The image and the reference label map (on the image grid) of a bundled case."""
    case = get_case(name)
    image = load(case.image_path)
    labels = load_nifti(case.labels_path, modality="SEG")
    return image, labels


def export_case(name: str, folder: str | os.PathLike[str]) -> Path:
    """Copy a bundled case to ``folder/<name>`` (which must not exist); returns that path.

    The copy is made in a temporary folder and renamed, so it is whole or absent.
    """
    from planner.dicom_write import atomic_folder

    case = get_case(name)
    target = Path(folder) / case.name
    if target.exists():
        raise PlannerError(f"{target} already exists; export into another folder or remove it first")
    with atomic_folder(target) as tmp:
        for item in sorted(case.path.iterdir()):
            if item.name.startswith((".", "__")):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
    return target

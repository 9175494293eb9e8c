"""A tiny real MONAI bundle and small DICOM trees for the batch-runner tests and benchmark.

The bundle is a 3D MONAI UNet with random but seeded weights, written with
:func:`segmentation.bundle.write_bundle` in the CT bundle format (``plexus_planner``
modality CT, model grid, HU window, window size) and run through the production CT
pipeline (:func:`segmentation.ct.segment_volume`) on a coarse 12 mm grid with a 16-voxel
window, so a 20-series batch takes seconds. It is for testing orchestration (discovery,
workers, ledger, outputs), not accuracy: its labels mean nothing anatomically.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np

TINY_VOCABULARY = {"1": "liver", "2": "aorta", "3": "kidney_left"}
TINY_SPACING_MM = 12.0
TINY_ROI = [16, 16, 16]


def write_tiny_bundle(root: str | Path, seed: int = 0) -> Any:
    """Write the seeded random 3D UNet bundle into ``root``; returns the read-back Bundle."""
    import torch
    from monai.networks.nets import UNet

    from segmentation.bundle import write_bundle

    torch.manual_seed(seed)
    spec = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1 + len(TINY_VOCABULARY), "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    net = UNet(**spec)
    metadata = {"name": "tiny_ct_test", "version": "0.0.1",
                "description": "random seeded weights: tests batch orchestration, not a segmentation model",
                "plexus_planner": {"modality": "CT", "channel_vocabulary": TINY_VOCABULARY,
                                   "model_spacing_mm": TINY_SPACING_MM, "roi_size": TINY_ROI,
                                   "hu_window": [-200.0, 300.0], "axcodes": "LPS"}}
    card = ("# tiny_ct_test\n\nA 3D MONAI UNet with random weights (torch seed %d). It exists to test the batch "
            "runner's orchestration; its labels carry no anatomical meaning.\n" % seed)
    return write_bundle(root, state_dict=net.state_dict(),
                        network_def={"_target_": "monai.networks.nets.UNet", **spec},
                        metadata=metadata, model_card=card, half=False)


def write_phantom_series(out_dir: Path, seeds: list[int], crops: int = 1, spacing_mm: float = 8.0) -> list[Path]:
    """CT phantoms at ``seeds`` written as DICOM series; ``crops`` slabs (series) per phantom."""
    from planner.dicom_write import SeriesInfo, write_ct_series
    from segmentation.phantom_ct import make_ct_phantom

    folders = []
    for seed in seeds:
        image = make_ct_phantom(seed, spacing_mm=(spacing_mm,) * 3).image
        nz = image.shape[0]
        for c in range(crops):
            lo = c * nz // (crops + 1)
            slab = image.array[lo:lo + max(8, nz // 2)]
            vol = dataclasses.replace(image, array=np.ascontiguousarray(slab),
                                      origin=tuple(image.index_to_lps((lo, 0, 0))))
            info = SeriesInfo(patient_name=f"Phantom^Seed{seed}", patient_id=f"PH-{seed}",
                              series_description=f"phantom seed {seed} slab {c}", series_number=c + 1,
                              body_part_examined="ABDOMEN", uid_seed=f"batch-test-{seed}")
            folder = out_dir / f"patient_{seed}" / f"series_{c}"
            write_ct_series(vol, folder, info)
            folders.append(folder)
    return folders


def add_bad_inputs(root: Path) -> dict[str, Path]:
    """Bad inputs inside the tree: truncated file, SEG-only folder, MR, unreadable path, broken series."""
    import pydicom
    from pydicom.data import get_testdata_file

    bad: dict[str, Path] = {}
    # truncated: a CT slice cut in the middle of its pixel data
    ct_small = Path(get_testdata_file("CT_small.dcm"))
    data = ct_small.read_bytes()
    bad["truncated"] = root / "bad" / "truncated" / "cut.dcm"
    bad["truncated"].parent.mkdir(parents=True)
    bad["truncated"].write_bytes(data[: len(data) - 4000])
    # a folder holding only a DICOM SEG (of a phantom whose CT is not in the tree)
    from planner.dicom_seg import write_seg
    from planner.dicom_write import SeriesInfo, ct_datasets
    from segmentation.phantom_ct import make_ct_phantom

    phantom = make_ct_phantom(99, spacing_mm=(12.0, 12.0, 12.0))
    bad["seg_only"] = write_seg(phantom.labels, ct_datasets(phantom.image, SeriesInfo(uid_seed="seg-only")),
                                root / "bad" / "seg_only" / "seg.dcm")
    # an MR series (the rules ask for CT)
    mr = get_testdata_file("MR_small.dcm")
    bad["mr"] = root / "bad" / "mr" / "MR_small.dcm"
    bad["mr"].parent.mkdir(parents=True)
    shutil.copy(mr, bad["mr"])
    # a path the loader cannot open (root ignores chmod 000, so: a dangling symbolic link)
    bad["unreadable"] = root / "bad" / "unreadable" / "gone.dcm"
    bad["unreadable"].parent.mkdir(parents=True)
    bad["unreadable"].symlink_to(root / "bad" / "unreadable" / "no-such-target.dcm")
    # a CT series whose one slice lost its position: selected, then fails (retried once)
    ds = pydicom.dcmread(ct_small)
    folder = root / "bad" / "no_position"
    folder.mkdir(parents=True)
    for k in range(3):
        ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.9{k}"
        ds.ImagePositionPatient = [0.0, 0.0, float(k * 5)]
        if k == 1:
            del ds.ImagePositionPatient
        ds.save_as(folder / f"slice{k}.dcm")
    bad["no_position"] = folder
    return bad

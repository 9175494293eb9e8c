"""Ultrasound nerve/vessel segmentation: transforms, split, bundle, training path, `plexplan segment`.

Inference tests use the SHIPPED bundle ``models/us_nerve_seg`` (its sha256 is checked on
every load); training runs only a couple of steps on a few real frames.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.cli import main
from planner.errors import ModelError, VolumeError
from tests.conftest import pydicom_test_file, shared_path

ROOT = Path(__file__).resolve().parent.parent
US_DICOM_FILES = [
    "color3d_jpeg_baseline.dcm",       # YBR_FULL_422 JPEG cine, 120 frames, region calibration
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless, monochrome, calibrated
    "US1_UNCR.dcm",                    # RGB, no calibration
    "OBXXXX1A_2frame.dcm",             # palette colour, 2 frames
    "gdcm-US-ALOKA-16.dcm",            # 16-bit palette colour
]


@pytest.fixture(scope="module")
def us():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # robust on a shared 2-core machine (2 OpenMP threads stall under load)
    from segmentation import ultrasound

    return ultrasound


@pytest.fixture(scope="module")
def shipped(us):
    from segmentation.bundle import default_bundle_path, read_bundle

    bundle = read_bundle(default_bundle_path("us_nerve_seg"))
    return bundle


def _segment(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    rc = main(["segment", *args, "--out", str(out), "--no-progress"])
    return rc, out


# ---------------------------------------------------------------------------- pure parts
def test_letterbox_keeps_aspect_and_round_trips(us):
    import torch

    labels = torch.zeros((1, 1, 300, 480))
    labels[0, 0, 100:200, 50:150] = 1.0
    boxed, box = us.letterbox(labels, 256, mode="nearest")
    assert boxed.shape == (1, 1, 256, 256)
    assert box.content_hw == (160, 256) and box.left == 0
    assert boxed[0, 0, 160:].abs().sum() == 0  # padding below the scan, skin line stays on row 0
    back = us.unletterbox(boxed, box)
    assert back.shape == (1, 1, 300, 480)
    assert float((back.round() == labels).float().mean()) > 0.99


def test_grouped_folds_are_seeded_disjoint_and_keep_runs_together(us):
    ids = [f"{n:04d}" for n in range(0, 240, 1) if n % 7]
    folds = us.grouped_folds(ids, 5, 8, seed=3)
    assert folds == us.grouped_folds(ids, 5, 8, seed=3)
    assert folds != us.grouped_folds(ids, 5, 8, seed=4)
    flat = sorted(i for f in folds for i in f)
    assert flat == list(range(len(ids)))
    fold_of = {i: k for k, f in enumerate(folds) for i in f}
    for i, frame_id in enumerate(ids):
        for j, other in enumerate(ids):
            if int(frame_id) // 8 == int(other) // 8:
                assert fold_of[i] == fold_of[j]
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 8


def test_augmentations_are_seeded_and_keep_the_skin_line_on_top(us):
    import torch

    image = torch.zeros((1, 256, 256))
    image[:, :40] = 0.9  # bright skin band at the top
    image[:, 40:200] = 0.3
    label = torch.zeros((1, 256, 256))
    label[:, 100:140, 60:120] = 1.0
    box = us.Letterbox(200, 256, 256)
    runs = []
    for _ in range(2):
        chain = us.train_transforms(seed=11)
        runs.append([chain({"image": image.clone(), "label": label.clone(), "box": box}) for _ in range(8)])
    for a, b in zip(*runs):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
    for d in runs[0]:
        img = torch.as_tensor(d["image"])[0]
        lab = torch.as_tensor(d["label"])[0]
        assert set(torch.unique(lab).tolist()) <= {0.0, 1.0}
        # never flipped up-down: the top rows stay brighter than the deep rows
        assert float(img[10:30, 64:192].mean()) > float(img[150:190, 64:192].mean())


def test_temporal_smoothing_averages_over_frames(us):
    import torch

    probs = torch.zeros((5, 3, 4, 4))
    probs[:, 0] = 1.0
    probs[2] = 0.0
    probs[2, 1] = 1.0  # one-frame flicker to "nerve"
    smoothed = us.smooth_temporal(probs, 3)
    assert torch.allclose(smoothed.sum(1), torch.ones((5, 4, 4)))
    assert torch.allclose(smoothed[2, 1], torch.full((4, 4), 1 / 3))
    assert torch.allclose(smoothed[0, 0], torch.ones((4, 4)))  # edge window shrinks, no zero padding
    assert torch.equal(us.smooth_temporal(probs, 1), probs)
    with pytest.raises(VolumeError):
        us.smooth_temporal(probs, 4)


def test_dice_and_bootstrap(us):
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[:5] = 1
    b[:4] = 1
    d = us.dice_per_class(a, b)
    assert d[1] == pytest.approx(2 * 40 / 90) and np.isnan(d[2])
    mean, lo, hi = us.bootstrap_ci([0.5, 0.6, 0.7, float("nan")], seed=1)
    assert mean == pytest.approx(0.6) and lo < mean < hi


def test_held_out_dice_is_measured_on_the_frames_own_pixels(us):
    import torch

    yy, xx = np.mgrid[:120, :90]
    truth = np.zeros((120, 90), np.uint8)
    truth[(yy - 50) ** 2 + (xx - 40) ** 2 < 20 ** 2] = 1
    truth[90:110, 10:30] = 2

    def model_grid_probs(mask, size):
        boxed, box = us.letterbox(torch.from_numpy(mask)[None, None], size, mode="nearest")
        return torch.nn.functional.one_hot(boxed[0, 0].long(), 3).permute(2, 0, 1).float(), box

    # same pixels, content offset sideways in the square grid: exact
    probs, box = model_grid_probs(truth, 120)
    assert box.left == 15 and us.frame_dice(probs, box, truth) == (1.0, 1.0)
    # a coarser model grid: mapped back onto the frame, so the figure shows the resampling loss
    probs, box = model_grid_probs(truth, 40)
    nerve, vessel = us.frame_dice(probs, box, truth)
    assert 0.85 < nerve < 1.0 and 0.75 < vessel < 1.0
    # decided as at inference: weighting the background (0.1 -> 1.0 against 0.8) removes both structures
    soft = 0.7 * probs + 0.1
    assert us.frame_dice(soft, box, truth) == (nerve, vessel)
    assert us.frame_dice(soft, box, truth, background_scale=10.0) == (0.0, 0.0)


def test_command_modules_do_not_import_torch():
    code = ("import segmentation.commands.segment, segmentation.commands.train, segmentation.bundle, planner; "
            "import sys; print('torch' in sys.modules, 'monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------- bundle
def test_shipped_bundle_metadata_and_weights(shipped):
    meta = shipped.metadata
    assert shipped.modality == "US"
    assert shipped.channel_vocabulary == {1: "brachial_plexus", 2: "blood_vessel"}
    fmt = meta["network_data_format"]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "nerve", "2": "blood vessel"}
    assert fmt["inputs"]["image"]["spatial_shape"] == [shipped.image_size] * 2
    assert "CC BY 4.0" in meta["data_source"] and "usgra-seg" in meta["data_source"]
    assert shipped.weights_path.stat().st_size < 10 * 1024 * 1024
    post = shipped.ours["postprocessing"]
    assert post["background_scale"] >= 1.0 and isinstance(post["flip_tta"], bool)
    cv = json.loads((shipped.root / "docs" / "cross_validation.json").read_text())
    assert len(cv["per_frame"]) == sum(len(f) for f in cv["folds"]) == 204
    card = (shipped.root / "docs" / "README.md").read_text()
    for phrase in ("usgra-seg", "CC BY 4.0", "not a medical device", "L14-6Ns", "95% CI", "volunteer"):
        assert phrase in card
    net = shipped.load_network()
    assert not net.training


def test_bundle_with_tampered_weights_is_refused(shipped, tmp_path):
    from segmentation.bundle import read_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(shipped.root, copy)
    weights = copy / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        read_bundle(copy).load_network()
    meta = json.loads((copy / "configs" / "metadata.json").read_text())
    meta["plexus_planner"].pop("model_sha256")
    (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="model_sha256"):
        read_bundle(copy).load_network()


def test_bundle_naming_a_non_monai_network_is_refused(shipped, tmp_path):
    from segmentation.bundle import read_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(shipped.root, copy)
    inference = json.loads((copy / "configs" / "inference.json").read_text())
    inference["network_def"]["_target_"] = "os.system"
    (copy / "configs" / "inference.json").write_text(json.dumps(inference))
    with pytest.raises(ModelError, match="not an allowed network"):
        read_bundle(copy).load_network()


def test_every_named_network_is_rebuilt_from_its_bundle_description(us):
    """inference.json's network_def (MONAI ConfigParser) builds the same network training made."""
    import torch
    from monai.bundle import ConfigParser

    for name in us.NETWORKS:
        trained = us.make_network(name)
        parsed = ConfigParser({"net": {"_target_": us.network_target(name), **us.network_args(name)}})
        rebuilt = parsed.get_parsed_content("net")
        assert type(rebuilt) is type(trained)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
            {k: v.shape for k, v in trained.state_dict().items()}, name
        side = 2 ** us.grid_halvings(name) * 3
        assert trained(torch.zeros(1, 1, side, side)).shape == (1, 3, side, side), name
    assert us.network_args("unet6")["strides"] == [2] * 5, "one level deeper than unet"
    with pytest.raises(ModelError, match=r"unknown network 'unet7'; use unet, unet6"):
        us.make_network("unet7")
    with pytest.raises(ModelError, match=r"unknown network 'unet7'"):
        us.TrainConfig.from_mapping({"network": "unet7"})
    with pytest.raises(ModelError, match=r"image_size = 240: network unet6 halves the grid 5 times.*multiple of 32"):
        us.TrainConfig.from_mapping({"network": "unet6", "image_size": 240})
    assert us.TrainConfig.from_mapping({"network": "unet", "image_size": 240}).image_size == 240


# ---------------------------------------------------------------------------- training path
@pytest.mark.slow
def test_train_command_runs_a_few_steps_and_writes_a_loadable_bundle(us, tmp_path):
    shared_path("us_nerve_train", "images")
    out, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    rc = main(["train", str(ROOT / "segmentation" / "configs" / "us_nerve.yaml"), "--out", str(out),
               "--max-steps", "2", "--limit-frames", "10", "--folds", "0", "--bundle", str(bundle_dir)])
    assert rc == 0
    metrics = json.loads((out / "cv_metrics.json").read_text())
    assert [r["fold"] for r in metrics["per_frame"]] == [0] * len(metrics["folds"][0])
    assert "dice_nerve_raw" in metrics["per_frame"][0] and "background_scale" in metrics["postprocessing"]
    assert (out / "fold0_state.pt").exists() and (out / "final_state.pt").exists()
    from segmentation.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    assert bundle.modality == "US" and bundle.load_network() is not None


@pytest.mark.slow
def test_parallel_training_gives_the_same_weights_as_sequential(us, tmp_path):
    import torch

    data_dir = shared_path("us_nerve_train")
    weights = {}
    for jobs in (1, 2):
        cfg = us.TrainConfig(data_dir=str(data_dir), limit_frames=10, n_folds=2, folds_to_run=(0, 1),
                             final_model=False, parallel_jobs=jobs, precision="bf16")
        summary = us.run_training(cfg, tmp_path / f"jobs{jobs}", max_steps=2)
        assert sorted(summary["fold_seconds"]) == [0, 1]
        assert [r["fold"] for r in summary["per_frame"]] == sorted(r["fold"] for r in summary["per_frame"])
        weights[jobs] = [torch.load(tmp_path / f"jobs{jobs}" / f"fold{k}_state.pt", weights_only=True)
                         for k in (0, 1)]
    for sequential, parallel in zip(weights[1], weights[2]):
        assert sequential.keys() == parallel.keys()
        assert all(torch.equal(sequential[k], parallel[k]) for k in sequential)
    # the two folds' models differ (own seeds and frames), so the comparison above can fail
    assert not all(torch.equal(weights[1][0][k], weights[1][1][k]) for k in weights[1][0])


# ---------------------------------------------------------------------------- segment command
def test_segment_real_frame_with_shipped_model_matches_hand_labels(shipped, tmp_path):
    from PIL import Image

    frame = shared_path("us_nerve_train", "images", "0001.png")
    rc, out = _segment(tmp_path, str(frame), "--spacing", "0.08")
    assert rc == 0
    import nibabel as nib

    img = nib.load(out / "labels.nii.gz")
    labels = np.asarray(img.dataobj)[:, :, 0].T  # NIfTI x, y, z -> [y, x]
    truth = np.array(Image.open(frame.parent.parent / "masks" / frame.name))
    assert labels.shape == truth.shape
    assert np.allclose(img.header.get_zooms()[:2], (0.08, 0.08))
    names = json.loads((out / "labels.json").read_text())
    assert names == {"4": "brachial_plexus", "18": "blood_vessel"}
    # a frame the model trained on: it must find the hand-drawn nerve (proves the weights load right)
    nerve, truth_nerve = labels == 4, truth == 1
    dice = 2 * (nerve & truth_nerve).sum() / (nerve.sum() + truth_nerve.sum())
    assert dice > 0.5
    rows = (out / "structures.csv").read_text().splitlines()
    assert rows[0] == "frame,structure,label,pixels,area_mm2,volume_mm3,mean_intensity"
    nerve_row = next(r.split(",") for r in rows[1:] if ",brachial_plexus," in r)
    assert float(nerve_row[4]) == pytest.approx(int(nerve_row[3]) * 0.08 * 0.08, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", US_DICOM_FILES)
def test_segment_real_ultrasound_dicom(shipped, tmp_path, name):
    pytest.importorskip("planner.dicom_series")
    path = pydicom_test_file(name)
    from planner.volume import load

    image = load(path)
    rc, out = _segment(tmp_path, str(path), "--smooth", "3")
    assert rc == 0
    import nibabel as nib
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    img = nib.load(out / "labels.nii.gz")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    assert img.shape == (int(ds.Columns), int(ds.Rows), frames)
    assert np.allclose(img.header.get_zooms()[:2], image.spacing[:0:-1], rtol=1e-5)  # calibration kept
    if name == "color3d_jpeg_baseline.dcm":  # SequenceOfUltrasoundRegions: 0.05105 cm/pixel
        assert np.allclose(img.header.get_zooms()[:2], 0.5105, atol=1e-3)
    assert set(json.loads((out / "labels.json").read_text()).values()) == {"brachial_plexus", "blood_vessel"}
    assert (out / "structures.csv").exists()


def test_ct_volume_given_to_the_ultrasound_model_is_refused(shipped, tmp_path, capsys):
    pytest.importorskip("planner.dicom_series")
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    rc, out = _segment(tmp_path, ct, "--model", str(shipped.root))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "CT" in err and "US" in err and "model" in err
    assert not out.exists() or not any(out.iterdir())


def test_empty_images_are_refused(shipped, tmp_path, capsys):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((64, 80), np.uint8)).save(blank)
    rc, out = _segment(tmp_path, str(blank))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "blank" in err and len(err.splitlines()) == 1
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    rc, _ = _segment(tmp_path, str(empty))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not a readable PNG/JPEG" in err
    assert not out.exists() or not any(out.iterdir())


def test_spacing_contradicting_the_dicom_calibration_is_refused(shipped, tmp_path, capsys):
    pytest.importorskip("planner.dicom_series")
    path = pydicom_test_file("JPGLosslessP14SV1_1s_1f_8b.dcm")
    rc, out = _segment(tmp_path, str(path), "--spacing", "1.0")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "contradicts" in err and "0.2548" in err
    assert not out.exists() or not any(out.iterdir())

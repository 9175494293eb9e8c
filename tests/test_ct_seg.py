"""CT segmentation: shipped bundle (MONAI verification, sha256), inference geometry, `plexplan segment`
on CT (network, foreign MONAI bundle, imported labels), refusals, and the training code path.

Inference tests use the SHIPPED bundle ``models/ct_abdomen_phantom``; training runs 2 steps.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.cli import main
from planner.errors import ModelError, VolumeError
from planner.volume import Volume, load_nifti, save_nifti
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "monai_bundle_meta_schema.json"


@pytest.fixture(scope="module")
def ct():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    from segmentation import ct

    return ct


@pytest.fixture(scope="module")
def shipped(ct):
    from segmentation.bundle import default_bundle_path, read_bundle

    return read_bundle(default_bundle_path("ct_abdomen_phantom"))


@pytest.fixture(scope="module")
def phantom():
    from segmentation.phantom_ct import make_ct_phantom

    return make_ct_phantom(9105, spacing_mm=(5.0, 5.0, 5.0))


def _segment(out: Path, *args: str) -> int:
    return main(["segment", *args, "--out", str(out), "--no-progress"])


def _refused(capsys, out: Path, pattern: str, *args: str) -> None:
    """``plexplan segment`` exits 2 with a one-line error matching ``pattern`` and writes nothing."""
    capsys.readouterr()
    assert _segment(out, *args) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------- bundle
def test_shipped_bundle_passes_monai_verification(shipped, tmp_path):
    from monai.bundle import verify_metadata, verify_net_in_out

    meta = shipped.root / "configs" / "metadata.json"
    schema = tmp_path / "schema.json"  # offline: the schema URL cannot be fetched here
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(meta), filepath=str(schema))
    verify_net_in_out(net_id="network_def", meta_file=str(meta), config_file=str(shipped.root / "configs" / "inference.json"),
                      device="cpu", n=6)
    labels = shipped.metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert labels["1"] == "aorta" and len(labels) == shipped.metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
    assert (shipped.root / "models" / "model.pt").stat().st_size < 10 * 2**20
    card = (shipped.root / "docs" / "README.md").read_text()
    for phrase in ("synthetic", "Not a medical device", "held-out phantoms", "real CT series"):
        assert phrase in card


def test_weights_with_a_wrong_sha256_are_refused(shipped, tmp_path):
    from segmentation.bundle import read_bundle

    copy = tmp_path / "b"
    shutil.copytree(shipped.root, copy)
    with open(copy / "models" / "model.pt", "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="sha256"):
        read_bundle(copy).load_network()


def test_bundle_without_label_names_is_refused(shipped, ct, tmp_path, capsys):
    from segmentation.bundle import read_bundle

    ours = tmp_path / "ours"
    shutil.copytree(shipped.root, ours)
    meta = json.loads((ours / "configs" / "metadata.json").read_text())
    del meta["plexus_planner"]["channel_vocabulary"]
    (ours / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="names no output labels"):
        ct.spec_from_bundle(read_bundle(ours))
    foreign = tmp_path / "foreign"
    shutil.copytree(shipped.root, foreign)
    del meta["plexus_planner"]
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    (foreign / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="names no output labels"):
        read_bundle(foreign, allow_foreign=True)
    out = tmp_path / "out"
    _refused(capsys, out, "names no output labels", str(shared_path("ct_abdomen_ts_dicom", "dicom")), "--model", str(foreign))


# ---------------------------------------------------------------------------- inference
def test_class_tables_follow_the_vocabulary(ct):
    lut = ct.vocabulary_to_channel_lut()
    assert ct.CLASSES[lut[label_of("vertebra_L1")]] == "vertebrae"
    assert ct.CLASSES[lut[label_of("spinal_cord")]] == "spinal_canal"
    assert ct.CLASSES[lut[label_of("subcutaneous_fat")]] == "body"
    assert lut[0] == 0
    back = ct.channel_to_vocabulary_lut(ct.channel_vocabulary())
    assert back[ct.CLASSES.index("aorta")] == label_of("aorta")


@pytest.mark.slow
def test_resampling_round_trip_keeps_geometry_on_a_flipped_grid(ct, phantom):
    """A thresholding stand-in network: labels must land where the HU are, on any grid orientation."""
    import torch

    class Threshold(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], len(ct.CLASSES), *x.shape[2:])
            out[:, 0] = 0.5
            out[:, ct.CLASSES.index("body")] = (x[:, 0] > 0.2).float()
            out[:, ct.CLASSES.index("vertebrae")] = 2.0 * (x[:, 0] > 0.72).float()
            return out

    img = phantom.image
    flipped = dataclasses.replace(img, array=img.array[:, ::-1].copy(), direction=np.diag([1.0, -1.0, 1.0]),
                                  origin=tuple(img.index_to_lps([0, img.shape[1] - 1, 0])))
    coarser = dataclasses.replace(ct.CTSpec(), spacing_mm=(4.0,) * 3, postprocess=False)
    same = dataclasses.replace(coarser, spacing_mm=tuple(img.spacing_xyz))  # labels re-indexed, not resampled
    for vol, spec in ((img, coarser), (flipped, coarser), (img, same), (flipped, same)):
        lab = ct.segment_ct(vol, Threshold(), spec)
        assert lab.same_grid(vol)
        body = lab.array == label_of("body")
        truth = (vol.array > -190) & (vol.array <= 226)
        assert 2 * (body & truth).sum() / (body.sum() + truth.sum()) > 0.9


def test_labels_on_a_grid_with_the_same_voxels_are_re_indexed_exactly(ct):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 9, (4, 5, 6)).astype(np.uint8)
    src = np.diag([3.0, 3.0, 3.0, 1.0])
    flip_y = src @ np.array([[1, 0, 0, 0], [0, -1, 0, 4], [0, 0, 1, 0], [0, 0, 0, 1.0]])  # dst y = 4 - src y
    np.testing.assert_array_equal(ct.labels_onto_grid(labels, src, flip_y, labels.shape), labels[:, ::-1, :])
    shifted = src @ np.array([[1, 0, 0, 2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])   # two voxels along x
    out = ct.labels_onto_grid(labels, src, shifted, labels.shape)
    np.testing.assert_array_equal(out[:2], labels[2:])
    assert not out[2:].any(), "outside the source grid is 0"
    half = src @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert ct._same_voxels(labels, np.linalg.inv(src) @ half, labels.shape) is None


@pytest.mark.slow
def test_shipped_model_segments_a_held_out_phantom(ct, shipped, phantom):
    net = shipped.load_network()
    lab = ct.segment_ct(phantom.image, net, ct.spec_from_bundle(shipped))
    truth = ct.truth_in_network_classes(phantom.labels.array)
    dice = ct.dice_by_name(lab.array, truth, ("body", "liver", "aorta"))
    assert dice["body"] > 0.8
    assert dice["liver"] > 0.5
    from planner.anatomy import VERTEBRAL_LEVELS, vertebra_name

    levels = {label_of(vertebra_name(lv)) for lv in VERTEBRAL_LEVELS} | {label_of("bone_other")}
    assert set(np.unique(lab.array)) <= {0} | {label_of(n) for n in ct.CLASSES[1:]} | levels
    assert "levels counted up from the sacrum" in " ".join(lab.warnings)


@pytest.mark.slow
def test_bfloat16_inference_agrees_with_float32(ct, shipped, phantom):
    """The shipped bundle asks for bf16 where the CPU has it; its labels must match the float32 ones."""
    spec = ct.spec_from_bundle(shipped)
    assert spec.precision == "auto"
    net = shipped.load_network()
    fp32 = ct.segment_ct(phantom.image, net, dataclasses.replace(spec, precision="fp32")).array
    bf16 = ct.segment_ct(phantom.image, net, dataclasses.replace(spec, precision="bf16")).array
    inside = (fp32 > 0) | (bf16 > 0)
    assert float((fp32 == bf16)[inside].mean()) > 0.98
    with pytest.raises(ModelError, match="inference precision 'fp16' is not one of fp32, bf16, auto"):
        ct.segment_ct(phantom.image, net, dataclasses.replace(spec, precision="fp16"))


@pytest.mark.slow
def test_plexplan_segment_ct_series_writes_every_output(tmp_path, phantom):
    from planner.dicom_write import write_ct_series
    from planner.dicom_seg import read_seg
    from planner.volume import load

    series = tmp_path / "series"
    write_ct_series(phantom.image, series)
    out = tmp_path / "out"
    assert _segment(out, str(series)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "labels.nii.gz", "seg.dcm",
                                                     "structures.csv", "targets.json"]
    image = load(series)
    labels = load_nifti(out / "labels.nii.gz")
    assert labels.same_grid(image)
    names = json.loads((out / "labels.json").read_text())
    assert names[str(label_of("aorta"))] == "aorta"
    header = (out / "structures.csv").read_text().splitlines()[0]
    assert header == "structure,label,voxels,volume_ml,mean_hu"
    targets = json.loads((out / "targets.json").read_text())["targets"]
    assert set(targets) == {"celiac_plexus_region", "superior_hypogastric_plexus_region", "splanchnic_nerve_zone"}
    np.testing.assert_array_equal(read_seg(out / "seg.dcm", image).array, labels.array)


# ---------------------------------------------------------------------------- refusals
def test_non_ct_image_is_refused_without_output(tmp_path, phantom, ct, capsys):
    mr = phantom.image.with_array(np.clip(phantom.image.array.astype(np.int32) + 1024, 0, 3000).astype(np.int16))
    path = save_nifti(mr, tmp_path / "mr.nii.gz")
    out = tmp_path / "out"
    _refused(capsys, out, "not a CT image", str(path))
    assert not out.exists()


def test_2d_image_is_refused(tmp_path, phantom, capsys):
    one = Volume(array=phantom.image.array[10:11].copy(), spacing=phantom.image.spacing, origin=phantom.image.origin,
        modality="CT")
    path = save_nifti(one, tmp_path / "slice.nii.gz")
    out = tmp_path / "out"
    _refused(capsys, out, "3D volume", str(path))
    assert not out.exists()


def test_voxel_limit_is_checked_on_the_header_before_loading(tmp_path, phantom, capsys):
    import nibabel as nib

    path = save_nifti(phantom.image, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    _refused(capsys, out, "above the limit of 1,000", str(path), "--max-voxels", "1000")
    # a header that claims 4 giga-voxels (the data is not there): refused from the header alone
    img = nib.load(str(path))
    header = img.header.copy()
    header.set_data_shape((2000, 2000, 1000))
    big = tmp_path / "big.nii"
    with open(big, "wb") as fh:
        header.write_to(fh)
    _refused(capsys, out, "above the limit", str(big))
    assert not out.exists()


# ---------------------------------------------------------------------------- any bundle, any label map
def _tiny_foreign_bundle(root: Path) -> Path:
    """A MONAI-Zoo-style bundle (no plexus_planner section) with TotalSegmentator v1 label names."""
    import torch
    from monai.networks.nets import UNet

    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    names = {"0": "background", "1": "spleen", "2": "liver", "3": "aorta", "4": "face"}
    meta = {"version": "0.0.1", "name": "tiny_wholebody_like",
            "network_data_format": {"inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT",
                                                         "num_channels": 1, "spatial_shape": [16, 16, 16]}},
                                    "outputs": {"pred": {"type": "image", "format": "segmentation",
                                                         "num_channels": 5, "channel_def": names}}}}
    net_def = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 5,
               "channels": [4, 8], "strides": [2], "num_res_units": 0}
    inference = {"network_def": net_def,
                 "preprocessing": {"_target_": "Compose", "transforms": [
                     {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                     {"_target_": "Spacingd", "keys": "image", "pixdim": [8.0, 8.0, 8.0]},
                     {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1024, "a_max": 1024,
                      "b_min": 0.0, "b_max": 1.0, "clip": True}]},
                 "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16]}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.manual_seed(0)
    args = {k: v for k, v in net_def.items() if k != "_target_"}
    torch.save(UNet(**args).state_dict(), root / "models" / "model.pt")
    return root


def test_foreign_monai_bundle_runs_with_its_label_names_mapped(tmp_path, phantom, ct, capsys):
    from segmentation.bundle import read_bundle, sha256_of

    bundle_dir = _tiny_foreign_bundle(tmp_path / "tiny")
    bundle = read_bundle(bundle_dir, allow_foreign=True)
    assert bundle.modality == "CT" and bundle.is_foreign
    assert bundle.channel_vocabulary == {1: "spleen", 2: "liver", 3: "aorta"}
    assert bundle.unmapped_labels == ["face"]
    spec = ct.spec_from_bundle(bundle)
    assert spec.spacing_mm == (8.0, 8.0, 8.0) and spec.axcodes == "RAS" and spec.roi_size == (16, 16, 16)
    path = save_nifti(phantom.image.with_array(phantom.image.array), tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    _refused(capsys, out, "--model-sha256", str(path), "--model", str(bundle_dir))
    _refused(capsys, out, "sha256", str(path), "--model", str(bundle_dir), "--model-sha256", "0" * 64)
    capsys.readouterr()
    assert _segment(out, str(path), "--model", str(bundle_dir), "--model-sha256", sha256_of(bundle_dir / "models" / "model.pt")) == 0
    printed = capsys.readouterr().out
    assert "face" in printed  # the unmapped label is reported
    labels = load_nifti(out / "labels.nii.gz")
    assert labels.shape == phantom.image.shape
    allowed = {0, label_of("spleen"), label_of("liver"), label_of("aorta")} | {
        label_of(n) for n in ("celiac_plexus_region", "superior_hypogastric_plexus_region", "splanchnic_nerve_zone")}
    assert set(np.unique(labels.array)) <= allowed


@pytest.mark.slow
def test_plexplan_segment_labels_from_totalsegmentator_and_rtstruct(tmp_path):
    root = shared_path("ct_abdomen_ts_dicom")
    out = tmp_path / "ts"
    assert _segment(out, str(root / "dicom"), "--labels-from", str(root / "silver_labels_totalseg.nii.gz"),
                    "--class-map", str(root / "labels_totalsegmentator_v2.json")) == 0
    targets = json.loads((out / "targets.json").read_text())
    assert targets["targets"]["splanchnic_nerve_zone"]["source"] == "rule"
    assert targets["imported"]["unmapped"] == []
    assert (out / "seg.dcm").exists()
    thigh = shared_path("ct_thigh_sts001", "dicom")
    out2 = tmp_path / "rt"
    assert _segment(out2, str(thigh / "image"), "--labels-from", str(thigh / "mask" / "RS.dcm")) == 0
    names = json.loads((out2 / "labels.json").read_text())
    assert names == {str(label_of("tumour")): "tumour"}


# ---------------------------------------------------------------------------- training path
@pytest.mark.slow
def test_plexplan_train_ct_runs_two_steps(tmp_path):
    cfg = tmp_path / "ct.yaml"
    cfg.write_text("task: ct_phantom\nnetworks: [unet]\ncompare_steps: 2\ntrain_steps: 2\n"
                   "train_seeds: [5000, 5002]\nval_seeds: [5003]\nspacing_mm: 6.0\n"
                   f"cache_dir: {tmp_path / 'cache'}\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--max-steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["network"] == "unet" and 2 <= summary["steps"] <= 4
    assert (out / "model.pt").stat().st_size > 0
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


def _fine_tune_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "ct_ft.yaml"
    cfg.write_text("task: ct_phantom\nnetworks: [unet]\ntrain_steps: 1\ntrain_seeds: [5000, 5001]\n"
                   "val_seeds: [5003]\nspacing_mm: 6.0\npatch: [32, 32, 32]\ninfer_roi: [64, 64, 64]\n"
                   f"init_from: ct_abdomen_phantom\ncache_dir: {tmp_path / 'cache'}\n{extra}")
    return cfg


@pytest.mark.slow
def test_fine_tuning_continues_the_bundle_network_and_records_its_weights(tmp_path, shipped, ct):
    """``init_from``: the run starts from the bundle's (sha256-checked) weights, not from scratch."""
    import torch

    out = tmp_path / "run"
    assert main(["train", str(_fine_tune_config(tmp_path, "spleen_scales: [0.8, 1.6]\n")), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "ct_phantom_5000_6mm_spleen0.8-1.6.npz", "ct_phantom_5003_6mm.npz"], "training phantoms only vary the spleen"
    source = summary["initialised_from"]
    assert source["model_sha256"] == shipped.ours["model_sha256"]
    assert source["version"] == shipped.metadata["version"] and summary["steps"] == 1
    assert summary["comparison"], "the network comparison of the source run is carried over"
    shipped_training = json.loads((shipped.root / "docs" / "evaluation.json").read_text())["training"]
    stages = ct.training_stages(summary)
    assert len(stages) == len(ct.training_stages(shipped_training)) + 1, "the whole chain of runs is kept"
    assert stages[0]["config"]["compare_steps"] and stages[-1] is summary
    card = ct.model_card(summary, {}, None, ct.CTTrainConfig.from_mapping(summary["config"]))
    assert f"-> {shipped.name} {shipped.metadata['version']} (sha256 {shipped.ours['model_sha256'][:12]}" in card
    assert "spleens 0.8-1.6x the mean size), " in card
    start = shipped.load_network().state_dict()
    tuned = torch.load(out / "model.pt", weights_only=True)
    changed = [k for k in start if not torch.equal(start[k].float(), tuned[k].float())]
    assert changed, "one optimiser step changes the weights"
    key = next(k for k in start if k.endswith("weight") and start[k].ndim == 5)
    a, b = start[key].float().flatten(), tuned[key].float().flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.99, "fine-tuned weights stay near the start"


@pytest.mark.slow
def test_bundle_of_a_blended_fine_tune_holds_the_blend_of_start_and_tuned_weights(tmp_path, shipped, ct):
    """``blend_with_start``: the bundled weights lie the given share of the way back to the start
    weights (WiSE-FT), and the card says so; the run's own model.pt stays the fine-tuned one."""
    import torch

    from segmentation.bundle import read_bundle

    out, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    cfg_text = _fine_tune_config(tmp_path, "blend_with_start: 0.25\ntest_seeds: [5004]\nlr: 0.05\n"
                                           "calibration_seeds: [5005]\ncalibrated_classes: [liver, body]\n").read_text()
    cfg = tmp_path / "blend.yaml"
    cfg.write_text(cfg_text.replace("train_steps: 1", "train_steps: 4"))
    assert main(["train", str(cfg), "--out", str(out), "--bundle", str(bundle_dir)]) == 0
    start = {k: v.float() for k, v in shipped.load_network().state_dict().items()}
    tuned = torch.load(out / "model.pt", weights_only=True)
    bundled = read_bundle(bundle_dir).load_network().state_dict()
    key = next(k for k in start if k.endswith("weight") and start[k].ndim == 5)
    expected = 0.25 * start[key] + 0.75 * tuned[key].float()
    moved = (tuned[key].float() - start[key]).abs().max()
    assert moved > 0.01, "the run moved the weights"
    assert (bundled[key].float() - expected).abs().max() < 0.05 * moved, "bundle = blend (stored as float16)"
    card = (bundle_dir / "docs" / "README.md").read_text()
    assert "weights then blended 0.25 of the way back to the start weights (WiSE-FT)" in card
    training = json.loads((bundle_dir / "docs" / "evaluation.json").read_text())["training"]
    assert training["blended_with_start"] == 0.25
    calibration = training["calibration"]  # logit offsets fitted on the bundled (blended) weights
    assert calibration["seeds"] == [5005] and calibration["classes"] == ["liver", "body"]
    assert calibration["mean_dice_after"] >= calibration["mean_dice_before"]
    assert set(calibration["logit_offsets"]) <= {"liver", "body"}
    assert read_bundle(bundle_dir).ours.get("logit_offsets", {}) == calibration["logit_offsets"]
    assert "fitted by `calibrate_logit_offsets` for liver, body on the plain phantoms [5005]" in card


def test_a_new_fine_head_reproduces_its_unet_and_leaves_it_frozen(ct, shipped):
    """The head's last layer starts at zero, so the headed network gives the UNet's logits exactly,
    and only the head's weights can train."""
    import torch

    from segmentation.networks import UNetWithFineHead

    start = shipped.load_network()
    unet = start.unet if isinstance(start, UNetWithFineHead) else start  # the shipped model may have a head
    headed = ct.with_fine_head(unet).eval()
    assert not torch.any(headed.head[-1].weight), "a new head starts at zero"
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(headed(x), unet.eval()(x))
    trainable = {n for n, p in headed.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert ct.with_fine_head(headed) is headed, "a network with a head keeps its head"
    with pytest.raises(ModelError, match="fine_head needs a start network of kind unet; init_from gives a SegResNet"):
        ct.with_fine_head(ct.make_network("segresnet"))


def test_a_fine_head_runs_once_inside_the_vessel_box_at_inference(ct, shipped):
    """Inference runs the UNet by window and the head once, inside the box round the UNet's vessels:
    outside the box the logits are the UNet's, inside it they are the head on the whole volume, and
    going in slabs changes nothing."""
    import torch

    headed = ct.with_fine_head(shipped.load_network()).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(headed.head[-1].weight, std=0.5)  # a trained head is not zero
    image, _ = ct.phantom_example(5101)
    image = torch.as_tensor(image[16:80, 16:80, 20:84]).float()  # 64^3 about the aorta
    spec = ct.CTSpec(roi_size=(64, 64, 64), precision="fp32")
    unet_logits = ct.predict_logits(headed.unet, image, spec=spec)
    logits = ct.predict_logits(headed, image, spec=spec)
    box = ct.fine_head_box(unet_logits, spec)
    assert box is not None and 0 < np.prod([b.stop - b.start for b in box]) < image.numel()
    inside = torch.zeros(image.shape, dtype=torch.bool)
    inside[box] = True
    assert torch.equal(logits[:, ~inside], unet_logits[:, ~inside])
    assert not torch.equal(logits[:, inside], unet_logits[:, inside])
    x = ct.window(image, spec)
    with torch.inference_mode():
        whole = headed.refine(x, unet_logits[None])[0]
        slabs = headed.refine(x, unet_logits[None], slab_voxels=64 * 64 * 5)[0]
    assert torch.equal(slabs, whole)
    reach = headed.HEAD_REACH
    core = tuple(slice(b.start + (reach if b.start > 0 else 0), b.stop - (reach if b.stop < n else 0))
                 for b, n in zip(box, image.shape))
    # float32 rounding only: the box is convolved in other tiles than the whole volume (AVX2 CPUs differ by
    # 2e-5 on logits up to ~100); a wrong region or a lost correction differs by far more
    assert torch.allclose(logits[(slice(None),) + core], whole[(slice(None),) + core], rtol=1e-5, atol=1e-4)
    air = torch.full((32, 32, 32), -1000.0)
    assert ct.fine_head_box(ct.predict_logits(headed.unet, air, spec=spec), spec) is None
    assert torch.equal(ct.predict_logits(headed, air, spec=spec), ct.predict_logits(headed.unet, air, spec=spec))


@pytest.mark.slow
def test_fine_head_run_trains_the_head_only_and_bundles_a_verified_network(tmp_path, shipped, ct):
    """``fine_head: true``: the UNet keeps the start weights, the head learns, and the bundle names
    ``UNetWithFineHead`` and passes MONAI's verification."""
    import torch
    from monai.bundle import verify_net_in_out

    from segmentation.bundle import read_bundle
    from segmentation.networks import UNetWithFineHead

    out, bundle_dir = tmp_path / "run", tmp_path / "bundle"
    cfg = tmp_path / "head.yaml"
    cfg.write_text(_fine_tune_config(tmp_path, "fine_head: true\ntest_seeds: [5004]\nlr: 0.01\n").read_text()
                   .replace("train_steps: 1", "train_steps: 3"))
    assert main(["train", str(cfg), "--out", str(out), "--bundle", str(bundle_dir)]) == 0
    bundle = read_bundle(bundle_dir)
    assert bundle.ours["network"] == "unet_fine_head"
    net = bundle.load_network()
    assert isinstance(net, UNetWithFineHead)
    start = shipped.load_network()  # a UNet, or a UNet with a head whose training continues
    start_unet = start.unet if isinstance(start, UNetWithFineHead) else start
    start_last = start.head[-1].weight if isinstance(start, UNetWithFineHead) else torch.zeros(1)
    assert all(torch.equal(start_unet.state_dict()[k], v) for k, v in net.unet.state_dict().items()), \
        "the UNet stayed frozen"
    assert not torch.allclose(net.head[-1].weight, start_last), "the head learned"
    verify_net_in_out(net_id="network_def", meta_file=str(bundle_dir / "configs" / "metadata.json"),
                      config_file=str(bundle_dir / "configs" / "inference.json"), device="cpu", n=4)
    card = (bundle_dir / "docs" / "README.md").read_text()
    assert "MONAI `unet` with a full-resolution head (`segmentation.networks.UNetWithFineHead`" in card
    assert "only a new full-resolution head trained, the UNet frozen), " in card
    evaluation = json.loads((bundle_dir / "docs" / "evaluation.json").read_text())
    assert evaluation["training"]["evaluated_precision"] == "fp32"  # a float32 run's bundle, measured in float32
    assert "these and the real-series figures with a forward pass in float32:" in card
    shipped_training = json.loads((shipped.root / "docs" / "evaluation.json").read_text())["training"]
    first = ct.training_stages(shipped_training)[0]["config"]  # the run that compared the networks, not this one
    assert f"{first['num_threads']} CPU\nthread(s), {first['precision']} forward pass), then scored" in card


def test_fine_head_setting_is_checked_in_the_config(ct):
    with pytest.raises(ModelError, match="fine_head = true trains a new full-resolution head on a trained UNet: "
                                         "give init_from"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "fine_head": True})
    with pytest.raises(ModelError, match="leave blend_with_start out"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "fine_head": True, "init_from": "ct_abdomen_phantom",
                                       "blend_with_start": 0.5})
    with pytest.raises(ModelError, match=r"fine_head = 'yes': give true or false"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "fine_head": "yes"})


def test_fine_tuning_from_other_weights_than_the_config_names_is_refused(tmp_path, capsys):
    cfg = _fine_tune_config(tmp_path, "init_sha256: '" + "f" * 64 + "'\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"model\.pt: sha256 .* is not the init_sha256 ffff", err), err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_missing_model_card_history_is_refused_before_training(tmp_path, capsys):
    cfg = _fine_tune_config(tmp_path, "bundle:\n  history: no_such_history.md\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--bundle", str(tmp_path / "bundle")]) == 2
    assert "bundle.history" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache").exists(), "nothing trained or generated"


def test_every_ct_training_config_in_the_repository_is_valid(ct):
    """The experiment configs (and their model-card history files) parse, so a recorded run can be rerun."""
    import yaml

    configs = sorted((ROOT / "segmentation" / "configs").glob("ct_*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        cfg = ct.CTTrainConfig.from_mapping(raw)
        assert cfg.task == "ct_phantom", path.name
        history = (cfg.bundle or {}).get("history")
        assert history is None or (path.parent / history).is_file(), path.name


def test_training_patch_and_start_weights_are_checked_in_the_config(ct):
    with pytest.raises(ModelError, match=r"patch = \[40, 48, 48\].*multiple of 16"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "patch": [40, 48, 48]})
    with pytest.raises(ModelError, match=r"init_sha256 = 0: give the 64 lower-case hex digits"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "init_sha256": 0})
    with pytest.raises(ModelError, match=r"class_weights names \['celiac'\]: use the network's class names"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "class_weights": {"celiac": 4.0}})
    with pytest.raises(ModelError, match=r"class_weights = \{'spleen': 0\}: each weight must be a positive"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "class_weights": {"spleen": 0}})
    with pytest.raises(ModelError, match=r"class_weights = \['spleen'\]: give class name: weight pairs"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "class_weights": ["spleen"]})
    for bad in ([1.6, 0.8], [0.2, 1.0], [1.2], "big", [True, 1.5]):
        with pytest.raises(ModelError, match=r"spleen_scales = .*give \[low, high\] spleen sizes within 0.5..2"):
            ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "spleen_scales": bad})
    for bad in ([3, 1], [-1, 2], [0, 6], "thick"):
        with pytest.raises(ModelError, match=r"aortic_walls_mm = .*give \[low, high\] aortic wall thicknesses in mm"):
            ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "aortic_walls_mm": bad})
    for bad in ([0.5, 1.5], [1, 0]):
        with pytest.raises(ModelError, match=r"spleen_wraps = .*give \[low, high\] spleen wraps within 0..1"):
            ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "spleen_wraps": bad})
    with pytest.raises(ModelError, match=r"diaphragm_rises_mm = \[0, 80\]: give \[low, high\] diaphragm rises in mm"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "diaphragm_rises_mm": [0, 80]})
    with pytest.raises(ModelError, match=r"upper_rib_counts = \[0, 5\]: give \[low, high\] numbers of ribs above"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "upper_rib_counts": [0, 5]})
    with pytest.raises(ModelError, match=r"stomach_foods = \[0, 2\]: give \[low, high\] fractions of the stomach"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "stomach_foods": [0, 2]})
    with pytest.raises(ModelError, match=r"aortas_on_spine = \[0, 1.5\]: give \[low, high\] shares of the aorta-spine"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "aortas_on_spine": [0, 1.5]})
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(ModelError, match=r"blend_with_start = .*: give the share of the start weights"):
            ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "init_from": "ct_abdomen_phantom",
                                           "blend_with_start": bad})
    with pytest.raises(ModelError, match=r"blend_with_start = 0.5: blending needs start weights; give init_from"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "blend_with_start": 0.5})
    with pytest.raises(ModelError, match=r"inference_precision = 'fp16': give one of fp32, bf16, auto"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "inference_precision": "fp16"})
    precisions = {(trained, asked): ct.CTTrainConfig.from_mapping(
        {"task": "ct_phantom", "precision": trained, **({"inference_precision": asked} if asked else {})}).spec().precision
        for trained in ("fp32", "bf16") for asked in (None, "auto", "fp32")}
    assert precisions == {("fp32", None): "fp32", ("bf16", None): "auto", ("fp32", "auto"): "auto",
                          ("bf16", "auto"): "auto", ("fp32", "fp32"): "fp32", ("bf16", "fp32"): "fp32"}
    cfg = ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "spleen_scales": [0.8, 1.6], "aortic_walls_mm": [0, 3],
                                         "spleen_wraps": [0, 1], "diaphragm_rises_mm": [0, 50]})
    assert cfg.variation() == ct.PhantomVariation(spleen_scales=(0.8, 1.6), aortic_walls_mm=(0.0, 3.0),
                                                  spleen_wraps=(0.0, 1.0), diaphragm_rises_mm=(0.0, 50.0))


def test_calibration_settings_are_checked_in_the_config(ct):
    with pytest.raises(ModelError, match=r"calibrated_classes names \['celiac'\]: use the network's class names"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "calibrated_classes": ["celiac"],
                                       "calibration_seeds": [9201]})
    with pytest.raises(ModelError, match="calibrated_classes and calibration_seeds go together"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "calibrated_classes": ["portal_vein"]})
    for seeds, reused in (([9101, 9201], "[9101]"), ([1005], "[1005]")):
        with pytest.raises(ModelError, match=re.escape(f"calibration_seeds {reused} are training or held-out")):
            ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "calibration_seeds": seeds,
                                           "calibrated_classes": ["portal_vein"]})
    cfg = ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "calibration_seeds": [9001, 9201],
                                         "calibrated_classes": ["portal_vein"]})
    assert cfg.calibration_seeds == (9001, 9201) and cfg.calibrated_classes == ("portal_vein",)


def test_logit_offsets_are_fitted_where_they_raise_the_mean_dice(ct):
    """An under-called class gets the offset that calls it exactly (not the larger one that also
    calls its rim); an under-called class it was not asked to fit keeps offset 0."""
    body, target, other = (ct.CLASSES.index(n) for n in ("body", "celiac_plexus_region", "splanchnic_nerve_zone"))
    truth = np.full((16, 16, 16), body, np.uint8)
    truth[5:11, 5:11, 5:11] = target
    truth[1:4, 1:4, 1:4] = other
    logits = np.zeros((len(ct.CLASSES), 16, 16, 16), np.float32)
    logits[body] = 2.0
    logits[target, 4:12, 4:12, 4:12] = 1.2  # the rim: called too once the offset passes 0.8
    logits[target, 5:11, 5:11, 5:11] = 1.7
    logits[other, 1:4, 1:4, 1:4] = 1.7
    fit = ct.calibrate_logit_offsets([(logits, truth)], [target], (3.0, 3.0, 3.0), log=lambda _: None)
    assert fit.offsets[target] == pytest.approx(0.5)
    assert not np.delete(fit.offsets, target).any()
    pred = (logits + fit.offsets[:, None, None, None]).argmax(0)
    assert np.array_equal(pred == target, truth == target)
    assert fit.mean_dice_after > fit.mean_dice_before


def test_bundle_logit_offsets_reach_inference_and_match_inference_json(ct, shipped, tmp_path):
    """The shipped offsets: metadata -> CTSpec -> added before the argmax; inference.json's MONAI
    Lambdad adds the same ones; malformed offsets are refused naming the bundle."""
    import torch
    from monai.bundle import ConfigParser

    from segmentation.bundle import read_bundle

    named = shipped.ours["logit_offsets"]
    assert named, "the shipped bundle carries calibrated offsets"
    expected = [float(named.get(n, 0.0)) for n in ct.CLASSES]
    assert list(ct.spec_from_bundle(shipped).logit_offsets) == expected
    parser = ConfigParser(json.loads((shipped.root / "configs" / "inference.json").read_text()))
    shift = parser.get_parsed_content("postprocessing#transforms#0")
    shifted = shift({"pred": torch.zeros(len(ct.CLASSES), 2, 2, 2)})["pred"]
    assert torch.allclose(shifted[:, 1, 1, 1], torch.tensor(expected))
    big = [0.0] * len(ct.CLASSES)
    big[5] = 1000.0
    spec = ct.CTSpec(roi_size=(32, 32, 32), logit_offsets=tuple(big))
    assert (ct.predict_channels(ct.make_network("unet"), torch.zeros(32, 32, 32), spec=spec) == 5).all()
    copy = tmp_path / "b"
    shutil.copytree(shipped.root, copy)
    for bad in ({"no_such_class": 1.0}, {"portal_vein": "x"}, {"portal_vein": float("nan")}, [0.5]):
        meta = json.loads((copy / "configs" / "metadata.json").read_text())
        meta["plexus_planner"]["logit_offsets"] = bad
        (copy / "configs" / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match=r"plexus_planner.logit_offsets = .* must map the bundle's class names"):
            ct.spec_from_bundle(read_bundle(copy))


def test_varied_phantoms_draw_per_seed_into_their_own_cache_files(ct, tmp_path):
    """Drawn spleen sizes and aortic walls stay in range, differ between seeds, change nothing else,
    and never reuse the plain phantoms' cache."""
    both = ct.PhantomVariation(spleen_scales=(0.8, 1.6), aortic_walls_mm=(0.0, 3.0))
    drawn = [ct.phantom_params(seed, both) for seed in range(1000, 1020)]
    scales, walls = [p.spleen_scale for p in drawn], [p.aortic_wall_mm for p in drawn]
    assert all(0.8 <= s <= 1.6 for s in scales) and max(scales) - min(scales) > 0.4
    assert all(0.0 <= w <= 3.0 for w in walls) and max(walls) - min(walls) > 1.0
    plain = ct.phantom_params(1000)
    assert (plain.spleen_scale, plain.aortic_wall_mm) == (1.0, 0.0)
    spleen_only = ct.phantom_params(1000, ct.PhantomVariation(spleen_scales=(0.8, 1.6)))
    assert spleen_only.spleen_scale == drawn[0].spleen_scale and spleen_only.aortic_wall_mm == 0.0
    assert (drawn[0].bmi, drawn[0].noise_hu) == (plain.bmi, plain.noise_hu)
    shape = ct.PhantomVariation(spleen_wraps=(0.0, 1.0), diaphragm_rises_mm=(0.0, 50.0))
    shaped = [ct.phantom_params(seed, shape) for seed in range(1000, 1020)]
    wraps, rises = [p.spleen_wrap for p in shaped], [p.diaphragm_rise_mm for p in shaped]
    assert all(0.0 <= w <= 1.0 for w in wraps) and max(wraps) - min(wraps) > 0.5
    assert all(0.0 <= r <= 50.0 for r in rises) and max(rises) - min(rises) > 20
    assert (plain.spleen_wrap, plain.diaphragm_rise_mm) == (0.0, 0.0)
    assert shaped[0].spleen_scale == 1.0, "only the named fields vary"
    ct.cached_examples([1000], tmp_path, spacing_mm=8.0, variation=both)
    ct.cached_examples([1000], tmp_path, spacing_mm=8.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct_phantom_1000_8mm.npz",
                                                          "ct_phantom_1000_8mm_spleen0.8-1.6_wall0-3.npz"]
    stage = {"steps": 10, "config": {"spacing_mm": 3.0, "spleen_scales": [0.8, 1.6], "aortic_walls_mm": [0, 3]}}
    assert "spleens 0.8-1.6x the mean size, aortic walls 0-3 mm with calcified plaques)" in ct._stage_text(stage)
    stage["config"].update(spleen_wraps=[0, 1], diaphragm_rises_mm=[0, 50], upper_rib_counts=[0, 3],
                           stomach_foods=[0, 0.8], aortas_on_spine=[0, 1])
    assert ("spleens reaching 0-1 of the way along the left wall, diaphragm and lung bases 0-50 mm higher, "
            "0-3 ribs above the 10th with costal cartilage, stomachs 0-0.8 full of food, "
            "aortas 0-1 of the way onto the vertebral bodies)" in ct._stage_text(stage))
    on_spine = [ct.phantom_params(seed, ct.PhantomVariation(aortas_on_spine=(0.0, 1.0))).aorta_on_spine
                for seed in range(1000, 1020)]
    assert all(0.0 <= v <= 1.0 for v in on_spine) and max(on_spine) - min(on_spine) > 0.5
    assert plain.aorta_on_spine == 0.0


def test_class_weights_and_batch_dice_reach_the_training_loss(ct):
    """A named class weighs more in both loss terms, the others stay at 1; Dice can pool the batch."""
    cfg = ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "class_weights": {"celiac_trunk": 4.0},
                                         "batch_dice": True})
    loss = ct._Trainer("unet", cfg, examples=[]).loss_fn
    celiac = ct.CLASSES.index("celiac_trunk")
    expected = [4.0 if c == celiac else 1.0 for c in range(len(ct.CLASSES))]
    assert loss.cross_entropy.weight.tolist() == expected
    assert loss.dice.class_weight.tolist() == expected[1:], "background is not in the Dice term"
    assert loss.dice.batch
    plain = ct._Trainer("unet", ct.CTTrainConfig.from_mapping({"task": "ct_phantom"}), examples=[]).loss_fn
    assert plain.cross_entropy.weight is None and not plain.dice.batch


def test_post_processing_keeps_one_component_and_fills_holes_inside_each_structure(ct):
    body, organ, shell, vessel = 20, 10, 13, 1
    pred = np.zeros((24, 24, 24), np.uint8)
    pred[2:22, 2:22, 2:22] = body
    pred[9, 9, 9] = 0                            # air pocket inside the body -> body
    pred[3:7, 3:7, 3:7] = organ                  # the organ's largest component stays
    pred[17:19, 3:5, 3:5] = organ                # a second, smaller piece -> body
    pred[10:17, 10:17, 10:17] = shell            # a hollow structure ...
    pred[11:16, 11:16, 11:16] = body             # ... with body inside -> filled with the structure
    pred[13, 13, 13] = vessel                    # another class inside it stays
    pred[0:2, 0:2, 0:2] = vessel                 # touching the volume's edge: not a hole to fill
    out = ct.clean_labels(pred, single=[organ], body=body)
    expected = pred.copy()
    expected[9, 9, 9] = body
    expected[17:19, 3:5, 3:5] = body
    expected[11:16, 11:16, 11:16] = shell
    expected[13, 13, 13] = vessel
    np.testing.assert_array_equal(out, expected)
    assert pred[9, 9, 9] == 0, "the input is not modified"


def test_post_processing_keeps_thin_diagonal_vessels_and_the_pieces_of_vessel_trees(ct):
    """A one-voxel vessel running diagonally is one 26-connected piece; a vessel tree keeps every
    piece but specks under the speck size, which become body."""
    body, aorta, trunk = 20, 10, 11
    pred = np.full((20, 20, 20), body, np.uint8)
    for k in range(2, 16):
        pred[k, k, 4] = aorta                    # diagonal: 6-connected it would be 14 pieces
    pred[2:5, 12:15, 12:15] = trunk              # the trunk, 27 voxels
    pred[10:12, 14:16, 14:17] = trunk            # a branch cut off from it, 12 voxels
    pred[17, 2, 17] = trunk                      # a speck
    out = ct.clean_labels(pred, single=[aorta], body=body, trees=[trunk], speck_voxels=4)
    expected = pred.copy()
    expected[17, 2, 17] = body
    np.testing.assert_array_equal(out, expected)
    assert ct.tree_speck_voxels((3.0, 3.0, 3.0)) == 4 and ct.tree_speck_voxels((1.0, 1.0, 1.0)) == 100
    assert ct.tree_speck_voxels((8.0, 8.0, 8.0)) == 1
    assert "celiac_trunk" not in ct.SINGLE_COMPONENT and "celiac_trunk" in ct.VESSEL_TREES


def test_contrast_phase_scales_enhancement_per_group(ct):
    """Arteries and veins/parenchyma move by (factor - 1) x (phantom HU - unenhanced HU); the rest stays."""
    import torch

    from segmentation.phantom_ct import TISSUE_HU, UNENHANCED_HU

    names = ("aorta", "inferior_vena_cava", "liver", "body", "background")
    label = torch.tensor([ct.CLASSES.index(n) for n in names], dtype=torch.int64).reshape(1, 5, 1, 1)
    image = torch.full((1, 5, 1, 1), 100.0)
    tf = ct.RandContrastPhased("image", "label", prob=1.0, arterial=(1.5, 1.5), venous=(0.5, 0.5))
    out = tf({"image": image, "label": label})["image"].flatten().tolist()
    enh = {n: TISSUE_HU[n][0] - UNENHANCED_HU[n] for n in ("aorta", "inferior_vena_cava", "liver")}
    assert out[0] == pytest.approx(100.0 + 0.5 * enh["aorta"])
    assert out[1] == pytest.approx(100.0 - 0.5 * enh["inferior_vena_cava"])
    assert out[2] == pytest.approx(100.0 - 0.5 * enh["liver"])
    assert out[3:] == [100.0, 100.0]


def test_unknown_training_precision_is_refused(ct):
    with pytest.raises(ModelError, match="precision='fp16' is not one of fp32, bf16"):
        ct.CTTrainConfig.from_mapping({"task": "ct_phantom", "precision": "fp16"})


def test_labels_onto_a_finer_grid_follow_the_shape_better_than_nearest(ct):
    """A sphere rasterised at 4 mm and mapped onto a 1 mm grid is closer to the true sphere with
    :func:`labels_onto_grid` than with nearest-neighbour resampling, and keeps its label value."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    def sphere(step: float, n: int) -> np.ndarray:
        c = (np.arange(n) + 0.5) * step - 32.0
        x, y, z = np.meshgrid(c, c, c, indexing="ij")
        return np.where(x ** 2 + y ** 2 + z ** 2 <= 15.0 ** 2, 7, 0).astype(np.uint8)

    def affine(step: float) -> torch.Tensor:
        a = np.diag([step, step, step, 1.0])
        a[:3, 3] = 0.5 * step - 32.0
        return torch.as_tensor(a)

    coarse, truth = sphere(4.0, 16), sphere(1.0, 64)
    smooth = ct.labels_onto_grid(coarse, affine(4.0), affine(1.0), truth.shape)
    nearest = np.asarray(SpatialResample(mode="nearest", padding_mode="zeros")(
        MetaTensor(torch.from_numpy(coarse.astype(np.float32))[None], affine=affine(4.0)),
        dst_affine=affine(1.0), spatial_size=truth.shape)[0]).round().astype(np.uint8)
    assert set(np.unique(smooth)) == {0, 7}

    def dice(a: np.ndarray) -> float:
        return 2 * float(((a == 7) & (truth == 7)).sum()) / float((a == 7).sum() + (truth == 7).sum())

    assert dice(smooth) > dice(nearest) + 0.015 and dice(smooth) > 0.9

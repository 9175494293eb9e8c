"""Imported segmentations (TotalSegmentator NIfTI, DICOM SEG, RTSTRUCT) and targets on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner.anatomy import label_of
from planner.errors import LabelMapError
from planner.label_import import import_labels, read_class_map, reconcile_targets, resample_labels
from planner.volume import Volume, load, load_nifti, save_nifti
from tests.conftest import shared_path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def abdomen():
    return load(shared_path("ct_abdomen_ts_dicom", "dicom"))


@pytest.mark.slow
def test_rtstruct_rasterised_matches_the_nifti_mask():
    image = load(shared_path("ct_thigh_sts001", "dicom", "image"))
    imported = import_labels(shared_path("ct_thigh_sts001", "dicom", "mask", "RS.dcm"), image)
    assert imported.kind == "rtstruct" and imported.mapped == {"GTV_Mass_CT": "tumour"}
    mask = resample_labels(load_nifti(shared_path("ct_thigh_sts001", "nifti", "mask", "mask.nii.gz")), image).array > 0
    got = imported.labels.array == label_of("tumour")
    assert mask.sum() > 1000
    assert _dice(got, mask) > 0.97


def test_totalsegmentator_map_is_mapped_and_resampled_onto_the_image_grid(abdomen):
    root = shared_path("ct_abdomen_ts_dicom")
    imported = import_labels(root / "silver_labels_totalseg.nii.gz", abdomen, root / "labels_totalsegmentator_v2.json")
    assert imported.labels.same_grid(abdomen)
    assert imported.unmapped == ()
    assert imported.mapped["aorta"] == "aorta" and imported.mapped["vertebrae_T12"] == "vertebra_T12"
    arr = imported.labels.array
    # the NIfTI is stored y-flipped relative to the DICOM: the aorta must lie left of midline, anterior to T12
    aorta = np.argwhere(arr == label_of("aorta")).mean(0)
    t12 = np.argwhere(arr == label_of("vertebra_T12")).mean(0)
    assert aorta[1] < t12[1]  # smaller row = anterior (LPS y grows posteriorly)
    liver, spleen = (abdomen.index_to_lps(np.argwhere(arr == label_of(n)).mean(0)) for n in ("liver", "spleen"))
    assert liver[0] < spleen[0]  # liver on the patient's right (smaller LPS x)


def test_unknown_classes_are_reported_not_guessed(abdomen, tmp_path):
    labels = np.zeros(abdomen.shape, np.uint8)
    labels[5:8, 200:220, 200:220] = 1
    labels[10:12, 100:110, 100:110] = 2
    labels[0, 0, 0] = 7  # a value missing from the class map
    path = save_nifti(abdomen.with_array(labels), tmp_path / "ml.nii.gz")
    (tmp_path / "ml.json").write_text(json.dumps({"1": "aorta", "2": "brain_of_a_duck"}))
    imported = import_labels(path, abdomen)  # class map found beside the NIfTI
    assert imported.mapped == {"aorta": "aorta"}
    assert imported.unmapped == ("brain_of_a_duck", "value 7 (not in the class map)")
    assert set(np.unique(imported.labels.array)) == {0, label_of("aorta")}
    assert "brain_of_a_duck" in imported.report()


def test_class_map_formats(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(["background", "spleen", "liver"]))
    assert read_class_map(p) == {1: "spleen", 2: "liver"}
    p.write_text(json.dumps({"spleen": 1, "liver": 2}))
    assert read_class_map(p) == {1: "spleen", 2: "liver"}
    p.write_text(json.dumps({"a": "b"}))
    with pytest.raises(LabelMapError, match="expected a class map"):
        read_class_map(p)
    with pytest.raises(LabelMapError, match="not found"):
        read_class_map(tmp_path / "missing.json")


@pytest.mark.slow
def test_seg_round_trip_through_import(abdomen, tmp_path):
    from planner.dicom_seg import write_seg

    labels = np.zeros(abdomen.shape, np.uint8)
    labels[4:9, 240:260, 250:270] = label_of("aorta")
    labels[2:6, 100:140, 100:140] = label_of("liver")
    seg = write_seg(abdomen.with_array(labels), abdomen.source, tmp_path / "seg.dcm")
    imported = import_labels(seg, abdomen)
    assert imported.kind == "seg"
    np.testing.assert_array_equal(imported.labels.array, labels)


def test_import_errors_name_the_file(abdomen, tmp_path):
    with pytest.raises(LabelMapError, match="not found"):
        import_labels(tmp_path / "nope.nii.gz", abdomen)
    with pytest.raises(LabelMapError, match="not a segmentation"):
        import_labels(sorted(shared_path("ct_abdomen_ts_dicom", "dicom").iterdir())[0], abdomen)
    lone = tmp_path / "lone"
    lone.mkdir()
    path = save_nifti(abdomen.with_array(np.zeros(abdomen.shape, np.uint8)), lone / "x.nii.gz")
    with pytest.raises(LabelMapError, match="class map"):
        import_labels(path, abdomen)


def test_reconcile_targets_scores_predicted_targets_against_the_rule():
    from planner.targets import add_targets
    from segmentation.phantom_ct import make_ct_phantom

    ph = make_ct_phantom(11, spacing_mm=(4.0, 4.0, 4.0))
    truth = add_targets(ph.labels)
    same, report = reconcile_targets(truth)  # "network" targets equal to the rule's
    assert report["celiac_plexus_region"]["dice"] == 1.0
    np.testing.assert_array_equal(same.array, truth.array)
    shifted = np.array(truth.array, copy=True)
    celiac = shifted == label_of("celiac_plexus_region")
    shifted[celiac] = label_of("body")
    shifted[np.roll(celiac, 2, axis=2) & (shifted == label_of("body"))] = label_of("celiac_plexus_region")
    out, report = reconcile_targets(truth.with_array(shifted))
    assert 0.0 < report["celiac_plexus_region"]["dice"] < 1.0
    assert report["celiac_plexus_region"]["source"] == "rule"
    np.testing.assert_array_equal(out.array == label_of("celiac_plexus_region"), celiac)
    # no aorta: no rule can run, the predicted region is kept and the reason reported
    no_aorta = np.where(np.isin(shifted, [label_of("aorta")]), label_of("body"), shifted)
    kept, report = reconcile_targets(truth.with_array(no_aorta.astype(np.uint8)))
    assert report["celiac_plexus_region"]["source"] == "network"
    assert "aorta" in str(report["celiac_plexus_region"]["message"])
    assert (kept.array == label_of("celiac_plexus_region")).any()


def test_vertebral_levels_are_counted_up_from_the_sacrum():
    from planner.anatomy import VERTEBRAL_LEVELS, vertebra_name
    from planner.label_import import assign_vertebral_levels
    from segmentation.phantom_ct import make_ct_phantom

    ph = make_ct_phantom(12, spacing_mm=(4.0, 4.0, 4.0))
    arr = ph.labels.array
    levels = [label_of(vertebra_name(lv)) for lv in VERTEBRAL_LEVELS if lv != "S1"]
    generic = np.where(np.isin(arr, levels), label_of("vertebrae"), arr)
    generic = np.where(np.isin(arr, range(label_of("disc_T10_T11"), label_of("disc_L5_S1") + 1)),
                       label_of("body"), generic).astype(np.uint8)  # discs are body for the network
    out, message = assign_vertebral_levels(ph.labels.with_array(generic))
    spine = np.isin(arr, levels)
    assert float((out.array[spine] == arr[spine]).mean()) > 0.9
    assert "vertebra_L5" in message and label_of("vertebrae") not in out.array
    no_sacrum = np.where(generic == label_of("sacrum"), label_of("body"), generic).astype(np.uint8)
    same, message = assign_vertebral_levels(ph.labels.with_array(no_sacrum))
    np.testing.assert_array_equal(same.array, no_sacrum)
    assert "no sacrum" in message

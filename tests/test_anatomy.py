"""The vocabulary is consistent, its codes are real SNOMED CT concepts, and it maps other tools' names."""

from __future__ import annotations

import json

import pytest

from planner import anatomy
from planner.anatomy import Role, structure
from planner.errors import LabelMapError
from tests.conftest import shared_path


def test_labels_and_names_are_unique_and_fit_uint8():
    labels = [s.label for s in anatomy.STRUCTURES]
    names = [s.name for s in anatomy.STRUCTURES]
    assert len(set(labels)) == len(labels)
    assert len(set(names)) == len(names)
    assert all(0 < v < 256 for v in labels)


def test_every_snomed_code_and_meaning_is_in_pydicoms_dictionary():
    from pydicom.sr._concepts_dict import concepts

    by_code = {}
    for entries in concepts["SCT"].values():
        for code, (meaning, _cids) in entries.items():
            by_code.setdefault(code, set()).add(meaning.lower())
    for s in anatomy.STRUCTURES:
        assert s.snomed_code in by_code, f"{s.name}: SNOMED code {s.snomed_code} unknown"
    for category, meaning in anatomy.CATEGORY_MEANINGS.items():
        assert meaning.lower() in by_code[category.value]


def test_issue_structures_are_present_with_roles():
    targets = set(anatomy.names_with_role(Role.TARGET))
    assert {"celiac_plexus_region", "superior_hypogastric_plexus_region", "splanchnic_nerve_zone",
            "brachial_plexus"} <= targets
    oars = set(anatomy.names_with_role(Role.ORGAN_AT_RISK))
    for name in ("aorta", "celiac_trunk", "superior_mesenteric_artery", "renal_arteries",
                 "inferior_vena_cava", "portal_vein", "iliac_arteries", "iliac_veins", "kidney_left",
                 "kidney_right", "liver", "spleen", "pancreas", "stomach", "bowel", "adrenal_glands",
                 "spinal_cord", "spinal_canal", "ribs", "lungs", "diaphragm_crura", "blood_vessel",
                 "tumour", "disc_T12_L1"):
        assert name in oars, name
    for level in anatomy.VERTEBRAL_LEVELS:
        assert structure(anatomy.vertebra_name(level)).is_bone
    assert {"body", "skin", "subcutaneous_fat", "muscle", "bone_other"} <= set(
        anatomy.names_with_role(Role.CONTEXT))


def test_major_organs_at_risk_have_the_published_hard_margin():
    # clinical.md: at least 3-5 mm from major vessels, kidney, bowel, pleura and spinal canal
    for name in ("aorta", "inferior_vena_cava", "kidney_left", "kidney_right", "bowel", "lungs",
                 "spinal_canal"):
        assert structure(name).margin_mm >= 5.0


def test_lookup_by_label_and_name_agree_and_unknowns_fail_clearly():
    aorta = structure("aorta")
    assert structure(aorta.label) is aorta
    with pytest.raises(LabelMapError, match="unknown structure 'aortta'"):
        structure("aortta")
    with pytest.raises(LabelMapError):
        structure(255)


def test_totalsegmentator_class_map_maps_every_abdominal_class():
    class_map = json.loads(shared_path("ct_abdomen_ts_dicom", "labels_totalsegmentator_v2.json").read_text())
    mapping, unmapped = anatomy.external_label_mapping({int(k): v for k, v in class_map.items()})
    for ts_name, ours in [("aorta", "aorta"), ("liver", "liver"), ("spleen", "spleen"),
                          ("vertebrae_L1", "vertebra_L1"), ("inferior_vena_cava", "inferior_vena_cava"),
                          ("portal_vein_and_splenic_vein", "portal_vein"), ("rib_left_11", "ribs"),
                          ("iliopsoas_left", "psoas_muscles"), ("small_bowel", "bowel")]:
        value = next(int(k) for k, v in class_map.items() if v == ts_name)
        assert mapping[value] == structure(ours).label
    # classes outside the torso we plan in are reported, not silently mapped
    assert "brain" in unmapped and "heart" in unmapped


def test_colour_and_name_tables_cover_requested_labels():
    table = anatomy.color_table([0, structure("aorta").label])
    assert table[0][3] == 0.0 and table[structure("aorta").label][3] == 1.0
    assert anatomy.label_names([structure("liver").label]) == {structure("liver").label: "liver"}

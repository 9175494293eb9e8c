"""The anatomy vocabulary: every structure the project knows, named once.

One row per structure: integer label, name, role in planning, tissue class, default
hard safety margin (mm), display colour, SNOMED CT code for DICOM SEG, and the names
other tools use for it (TotalSegmentator v1/v2 ``total`` task classes, which MONAI's
``wholeBody_ct_segmentation`` bundle reuses). Nothing else in the project hard-codes a
label number: look structures up here by name.

Margins follow ``shared/docs/clinical.md``: navigated needle-tip error is about
3.9 +/- 1.7 mm, so major vessels, kidney, bowel, pleura and the spinal canal get a hard
margin of 5 mm (preferred clearance 10-15 mm is a soft criterion of the planner).

Example:
    >>> from planner.anatomy import structure
    >>> structure("aorta").role
    <Role.ORGAN_AT_RISK: 'organ_at_risk'>
    >>> structure("aorta").label == structure(structure("aorta").label).label
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

from planner.errors import LabelMapError


class Role(str, Enum):
    """What a structure is for in planning."""

    TARGET = "target"
    ORGAN_AT_RISK = "organ_at_risk"
    CONTEXT = "context"


class Tissue(str, Enum):
    """Coarse tissue class: drives phantom intensities and the bone-crossing rule."""

    ARTERY = "artery"
    VEIN = "vein"
    SOLID_ORGAN = "solid_organ"
    HOLLOW_ORGAN = "hollow_organ"
    BONE = "bone"
    CARTILAGE = "cartilage"
    NEURAL = "neural"
    LUNG = "lung"
    MUSCLE = "muscle"
    FAT = "fat"
    SKIN = "skin"
    SOFT_TISSUE = "soft_tissue"
    TUMOUR = "tumour"


class Category(str, Enum):
    """DICOM SEG segmented-property category (all SNOMED CT)."""

    ANATOMICAL_STRUCTURE = "91723000"  # Anatomical Structure
    TISSUE = "85756007"  # Tissue
    ABNORMAL = "49755003"  # Morphologically Abnormal Structure


CATEGORY_MEANINGS: dict[Category, str] = {
    Category.ANATOMICAL_STRUCTURE: "Anatomical Structure",
    Category.TISSUE: "Tissue",
    Category.ABNORMAL: "Morphologically Abnormal Structure",
}


@dataclass(frozen=True)
class Structure:
    """One row of the vocabulary."""

    label: int
    name: str
    display_name: str
    role: Role
    tissue: Tissue
    margin_mm: float
    color: tuple[int, int, int]
    snomed_code: str
    snomed_meaning: str
    category: Category = Category.ANATOMICAL_STRUCTURE
    external_names: tuple[str, ...] = ()

    @property
    def is_bone(self) -> bool:
        return self.tissue is Tissue.BONE

    @property
    def color_float(self) -> tuple[float, float, float, float]:
        """RGBA in 0..1, as napari and matplotlib want it."""
        r, g, b = self.color
        return (r / 255.0, g / 255.0, b / 255.0, 1.0)


T, O, C = Role.TARGET, Role.ORGAN_AT_RISK, Role.CONTEXT
_ANAT, _TISSUE, _ABN = Category.ANATOMICAL_STRUCTURE, Category.TISSUE, Category.ABNORMAL


def _rib_names() -> tuple[str, ...]:
    return tuple(f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13))


# label, name, display, role, tissue, margin, colour, SNOMED code, SNOMED meaning, category, other tools' names
_ROWS: tuple[Structure, ...] = (
    # ---- targets ---------------------------------------------------------------------
    Structure(1, "celiac_plexus_region", "Celiac plexus region", T, Tissue.NEURAL, 0.0,
              (255, 215, 0), "53520000", "Autonomic nerve"),
    Structure(2, "superior_hypogastric_plexus_region", "Superior hypogastric plexus region", T,
              Tissue.NEURAL, 0.0, (255, 170, 0), "53520000", "Autonomic nerve"),
    Structure(3, "splanchnic_nerve_zone", "Splanchnic nerve zone", T, Tissue.NEURAL, 0.0,
              (255, 240, 120), "53520000", "Autonomic nerve"),
    Structure(4, "brachial_plexus", "Brachial plexus / peripheral nerve", T, Tissue.NEURAL, 0.0,
              (255, 255, 0), "36582005", "Brachial plexus"),
    # ---- vessels ---------------------------------------------------------------------
    Structure(10, "aorta", "Aorta", O, Tissue.ARTERY, 5.0, (220, 20, 20), "15825003", "Aorta",
              external_names=("aorta",)),
    Structure(11, "celiac_trunk", "Celiac trunk", O, Tissue.ARTERY, 3.0, (255, 80, 80),
              "57850000", "Celiac axis", external_names=("celiac_trunk",)),
    Structure(12, "superior_mesenteric_artery", "Superior mesenteric artery", O, Tissue.ARTERY,
              3.0, (255, 110, 140), "42258001", "Superior mesenteric artery",
              external_names=("superior_mesenteric_artery",)),
    Structure(13, "renal_arteries", "Renal arteries", O, Tissue.ARTERY, 3.0, (200, 60, 100),
              "2841007", "Renal artery", external_names=("renal_artery_left", "renal_artery_right")),
    Structure(14, "inferior_vena_cava", "Inferior vena cava", O, Tissue.VEIN, 5.0, (40, 60, 220),
              "64131007", "Inferior vena cava", external_names=("inferior_vena_cava",)),
    Structure(15, "portal_vein", "Portal and splenic vein", O, Tissue.VEIN, 5.0, (70, 120, 255),
              "32764006", "Portal vein", external_names=("portal_vein_and_splenic_vein",)),
    Structure(16, "iliac_arteries", "Iliac arteries", O, Tissue.ARTERY, 5.0, (230, 60, 40),
              "10293006", "Iliac artery", external_names=("iliac_artery_left", "iliac_artery_right")),
    Structure(17, "iliac_veins", "Iliac veins", O, Tissue.VEIN, 5.0, (60, 90, 200), "244411005",
              "Iliac vein", external_names=("iliac_vena_left", "iliac_vena_right")),
    Structure(18, "blood_vessel", "Blood vessel (ultrasound)", O, Tissue.ARTERY, 3.0,
              (255, 0, 0), "59820001", "Blood Vessel"),
    # ---- solid and hollow organs -----------------------------------------------------
    Structure(20, "kidney_left", "Left kidney", O, Tissue.SOLID_ORGAN, 5.0, (180, 100, 50),
              "64033007", "Kidney", external_names=("kidney_left", "kidney_cyst_left")),
    Structure(21, "kidney_right", "Right kidney", O, Tissue.SOLID_ORGAN, 5.0, (200, 120, 60),
              "64033007", "Kidney", external_names=("kidney_right", "kidney_cyst_right")),
    Structure(22, "liver", "Liver", O, Tissue.SOLID_ORGAN, 3.0, (150, 70, 40), "10200004",
              "Liver", external_names=("liver", "gallbladder")),
    Structure(23, "spleen", "Spleen", O, Tissue.SOLID_ORGAN, 5.0, (160, 40, 160), "78961009",
              "Spleen", external_names=("spleen",)),
    Structure(24, "pancreas", "Pancreas", O, Tissue.SOLID_ORGAN, 3.0, (240, 180, 120),
              "15776009", "Pancreas", external_names=("pancreas",)),
    Structure(25, "stomach", "Stomach", O, Tissue.HOLLOW_ORGAN, 5.0, (250, 150, 200),
              "69695003", "Stomach", external_names=("stomach", "esophagus")),
    Structure(26, "bowel", "Bowel", O, Tissue.HOLLOW_ORGAN, 5.0, (230, 200, 160), "30315005",
              "Small intestine", external_names=("small_bowel", "duodenum", "colon")),
    Structure(27, "adrenal_glands", "Adrenal glands", O, Tissue.SOLID_ORGAN, 3.0, (250, 230, 90),
              "23451007", "Adrenal gland",
              external_names=("adrenal_gland_left", "adrenal_gland_right")),
    Structure(28, "tumour", "Tumour", O, Tissue.TUMOUR, 3.0, (120, 255, 120), "108369006",
              "Neoplasm", _ABN),
    # ---- neural axis, bone, thorax ---------------------------------------------------
    Structure(30, "spinal_cord", "Spinal cord", O, Tissue.NEURAL, 5.0, (255, 255, 180),
              "2748008", "Spinal cord", external_names=("spinal_cord",)),
    Structure(31, "spinal_canal", "Spinal canal", O, Tissue.SOFT_TISSUE, 5.0, (180, 220, 255),
              "61853006", "Vertebral canal"),
    Structure(32, "vertebra_T10", "T10 vertebra", O, Tissue.BONE, 0.0, (240, 240, 230),
              "7610001", "T10 vertebra", external_names=("vertebrae_T10",)),
    Structure(33, "vertebra_T11", "T11 vertebra", O, Tissue.BONE, 0.0, (235, 235, 220),
              "12989004", "T11 vertebra", external_names=("vertebrae_T11",)),
    Structure(34, "vertebra_T12", "T12 vertebra", O, Tissue.BONE, 0.0, (230, 230, 210),
              "23215003", "T12 vertebra", external_names=("vertebrae_T12",)),
    Structure(35, "vertebra_L1", "L1 vertebra", O, Tissue.BONE, 0.0, (225, 225, 200),
              "66794005", "L1 vertebra", external_names=("vertebrae_L1",)),
    Structure(36, "vertebra_L2", "L2 vertebra", O, Tissue.BONE, 0.0, (220, 220, 190),
              "14293000", "L2 vertebra", external_names=("vertebrae_L2",)),
    Structure(37, "vertebra_L3", "L3 vertebra", O, Tissue.BONE, 0.0, (215, 215, 180),
              "36470004", "L3 vertebra", external_names=("vertebrae_L3",)),
    Structure(38, "vertebra_L4", "L4 vertebra", O, Tissue.BONE, 0.0, (210, 210, 170),
              "11994002", "L4 vertebra", external_names=("vertebrae_L4",)),
    Structure(39, "vertebra_L5", "L5 vertebra", O, Tissue.BONE, 0.0, (205, 205, 160),
              "49668003", "L5 vertebra", external_names=("vertebrae_L5",)),
    Structure(40, "sacrum", "Sacrum (S1 and below)", O, Tissue.BONE, 0.0, (200, 200, 150),
              "54735007", "Sacrum", external_names=("sacrum", "vertebrae_S1")),
    Structure(41, "disc_T10_T11", "T10-T11 disc", O, Tissue.CARTILAGE, 0.0, (120, 200, 200),
              "34959001", "T10-T11 disc"),
    Structure(42, "disc_T11_T12", "T11-T12 disc", O, Tissue.CARTILAGE, 0.0, (115, 195, 195),
              "1537001", "T11-T12 disc"),
    Structure(43, "disc_T12_L1", "T12-L1 disc", O, Tissue.CARTILAGE, 0.0, (110, 190, 190),
              "76206002", "T12-L1 disc"),
    Structure(44, "disc_L1_L2", "L1-L2 disc", O, Tissue.CARTILAGE, 0.0, (105, 185, 185),
              "80064006", "L1-L2 disc"),
    Structure(45, "disc_L2_L3", "L2-L3 disc", O, Tissue.CARTILAGE, 0.0, (100, 180, 180),
              "67459009", "L2-L3 disc"),
    Structure(46, "disc_L3_L4", "L3-L4 disc", O, Tissue.CARTILAGE, 0.0, (95, 175, 175),
              "62551000", "L3-L4 disc"),
    Structure(47, "disc_L4_L5", "L4-L5 disc", O, Tissue.CARTILAGE, 0.0, (90, 170, 170),
              "84020006", "L4-L5 disc"),
    Structure(48, "disc_L5_S1", "L5-S1 disc", O, Tissue.CARTILAGE, 0.0, (85, 165, 165),
              "715056000", "L5-S1 disc"),
    Structure(49, "ribs", "Ribs", O, Tissue.BONE, 0.0, (255, 250, 240), "113197003", "Rib",
              external_names=_rib_names()),
    Structure(50, "lungs", "Lungs and pleura", O, Tissue.LUNG, 5.0, (120, 190, 255), "39607008",
              "Lung", external_names=("lung_upper_lobe_left", "lung_lower_lobe_left",
                                      "lung_upper_lobe_right", "lung_middle_lobe_right",
                                      "lung_lower_lobe_right")),
    Structure(51, "diaphragm_crura", "Diaphragmatic crura", O, Tissue.MUSCLE, 2.0,
              (200, 90, 70), "5798000", "Diaphragm"),
    Structure(52, "vertebrae", "Vertebrae (level not identified)", O, Tissue.BONE, 0.0,
              (228, 228, 205), "421060004", "Vertebral column"),
    # ---- context ---------------------------------------------------------------------
    Structure(60, "body", "Body (other soft tissue)", C, Tissue.SOFT_TISSUE, 0.0,
              (120, 110, 100), "38266002", "Entire body", _TISSUE),
    Structure(61, "skin", "Skin", C, Tissue.SKIN, 0.0, (255, 220, 190), "39937001", "Skin",
              _TISSUE),
    Structure(62, "subcutaneous_fat", "Subcutaneous fat", C, Tissue.FAT, 0.0, (255, 240, 200),
              "71966008", "Subcutaneous tissue", _TISSUE),
    Structure(63, "muscle", "Muscle (other)", C, Tissue.MUSCLE, 0.0, (190, 70, 70), "127954009",
              "Skeletal muscle", _TISSUE,
              external_names=("gluteus_maximus_left", "gluteus_maximus_right",
                              "gluteus_medius_left", "gluteus_medius_right",
                              "gluteus_minimus_left", "gluteus_minimus_right")),
    Structure(64, "paraspinal_muscles", "Paraspinal muscles", C, Tissue.MUSCLE, 0.0,
              (170, 60, 60), "44947003", "Erector spinae muscle", _TISSUE,
              external_names=("autochthon_left", "autochthon_right")),
    Structure(65, "psoas_muscles", "Psoas muscles", C, Tissue.MUSCLE, 0.0, (210, 90, 90),
              "71616004", "Muscle", _TISSUE,
              external_names=("iliopsoas_left", "iliopsoas_right")),
    Structure(66, "bone_other", "Other bone", C, Tissue.BONE, 0.0, (250, 250, 250),
              "272673000", "Bone", _TISSUE,
              external_names=("hip_left", "hip_right", "femur_left", "femur_right",
                              "sternum", "costal_cartilages", "scapula_left", "scapula_right",
                              "clavicula_left", "clavicula_right", "humerus_left",
                              "humerus_right") + tuple(f"vertebrae_{v}" for v in (
                                  "T9", "T8", "T7", "T6", "T5", "T4", "T3", "T2", "T1",
                                  "C7", "C6", "C5", "C4", "C3", "C2", "C1"))),
)

STRUCTURES: tuple[Structure, ...] = _ROWS
BACKGROUND = 0
VERTEBRAL_LEVELS: tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")

_BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES}
_BY_LABEL: dict[int, Structure] = {s.label: s for s in STRUCTURES}
_BY_EXTERNAL: dict[str, Structure] = {n: s for s in STRUCTURES for n in s.external_names}


def structure(key: str | int) -> Structure:
    """Look a structure up by vocabulary name or integer label.

    Raises:
        LabelMapError: for an unknown name or label, listing the known names.
    """
    found = _BY_LABEL.get(key) if isinstance(key, int) else _BY_NAME.get(str(key))
    if found is None:
        raise LabelMapError(
            f"unknown structure {key!r}; known names: {', '.join(sorted(_BY_NAME))}"
        )
    return found


def label_of(name: str) -> int:
    """Integer label of a structure name."""
    return structure(name).label


def names_with_role(role: Role) -> tuple[str, ...]:
    return tuple(s.name for s in STRUCTURES if s.role is role)


def vertebra_name(level: str) -> str:
    """Vocabulary name of a vertebral level such as ``"L1"`` (S1 maps to the sacrum)."""
    if level not in VERTEBRAL_LEVELS:
        raise LabelMapError(f"unknown vertebral level {level!r}; expected one of {VERTEBRAL_LEVELS}")
    return "sacrum" if level == "S1" else f"vertebra_{level}"


def bone_labels() -> tuple[int, ...]:
    return tuple(s.label for s in STRUCTURES if s.is_bone)


def from_external_name(name: str) -> Structure | None:
    """Vocabulary structure for another tool's class name (TotalSegmentator, MONAI bundle)."""
    return _BY_EXTERNAL.get(name) or _BY_NAME.get(name)


def external_label_mapping(class_map: Mapping[int, str]) -> tuple[dict[int, int], list[str]]:
    """Map another tool's ``{label value: class name}`` onto vocabulary labels.

    Returns:
        (mapping from external value to vocabulary label, sorted list of unmapped class
        names). Unmapped classes become background: callers report them.
    """
    mapping: dict[int, int] = {}
    unmapped: list[str] = []
    for value, class_name in class_map.items():
        found = from_external_name(class_name)
        if found is None:
            unmapped.append(class_name)
        else:
            mapping[int(value)] = found.label
    return mapping, sorted(unmapped)


def color_table(labels: Iterable[int] | None = None) -> dict[int, tuple[float, float, float, float]]:
    """``{label: RGBA 0..1}`` for display, background transparent."""
    chosen = STRUCTURES if labels is None else [structure(int(v)) for v in labels if int(v) != 0]
    table: dict[int, tuple[float, float, float, float]] = {BACKGROUND: (0.0, 0.0, 0.0, 0.0)}
    table.update({s.label: s.color_float for s in chosen})
    return table


def label_names(labels: Iterable[int] | None = None) -> dict[int, str]:
    """``{label: vocabulary name}``, the content of ``labels.json`` files."""
    chosen = STRUCTURES if labels is None else [structure(int(v)) for v in labels if int(v) != 0]
    return {s.label: s.name for s in chosen}

"""CT segmentation with MONAI: classes, transforms, network, training on phantoms, inference.

Why this shape: the planner needs vessels, organs, spine and the nerve-plexus target
regions from a patient's CT, and no labelled real CT with plexus regions exists here. So a
small 3D network is trained on seeded synthetic phantoms (:mod:`segmentation.phantom_ct`)
with strong domain randomisation, on a coarse isotropic grid that two shared CPU cores can
train and run: 4 mm from scratch, then fine-tuned at 3 mm (``init_from``; the shipped bundle). Inference reorients and resamples any CT onto
that grid with MONAI transforms, windows HU, runs ``sliding_window_inference`` (a network with a
full-resolution head, :class:`~segmentation.networks.UNetWithFineHead`, runs its UNet so and its head once,
round the vessels: :func:`fine_head_box`), adds the bundle's
per-class logit offsets (fitted on calibration phantoms, :func:`calibrate_logit_offsets`), cleans the
argmax (largest component for single organs, specks off the thin vessel trees, hole filling) and resamples the labels back
onto the input grid (each label's mask interpolated linearly, the largest wins), in the anatomy vocabulary.

Network classes merge what the planner does not need apart (:data:`CLASSES`): all soft
tissue without an own class (fat, muscle, skin, ribs, discs, ...) is ``body``; the spinal
cord is part of the spinal canal; the vertebrae T10-L5 are one class ``vertebrae`` (levels
are not identified by the network).

torch and MONAI are imported at module level: import this module only where they are
wanted (commands import it inside ``run``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByLabelClassesd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    Rand3DElasticd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
)

from planner.anatomy import label_of
from planner.config import reject_unknown_keys
from planner.errors import ModelError, PlannerError, VolumeError
from planner.volume import Volume
from segmentation.phantom_ct import PARAM_RANGES
from segmentation.precision import (INFERENCE_PRECISIONS, check_precision, inference_autocast, resolved_precision,
                                    training_autocast)

#: default isotropic grid of a CT training config (mm; stage 1, ct_phantom.yaml); a bundle records its own
MODEL_SPACING_MM = 4.0
#: HU window mapped to [0, 1] (abdominal soft tissue; lungs and cortical bone clip)
HU_WINDOW = (-350.0, 450.0)
#: default training patch and sliding-window size, voxels (x, y, z) (a config's patch / infer_roi)
PATCH = (48, 48, 48)
#: inference window and overlap: one 96^3 window per 384 mm cube (measured faster, and better on the
#: real series, than 48^3 windows with 0.25 overlap; see the model card)
INFER_ROI = (96, 96, 96)
INFER_OVERLAP = 0.0
#: inference forward pass of a model trained in bf16: bf16 where the CPU computes it natively (held-out
#: Dice within 0.001 of float32 for 0.3.0, ~1.6x faster), float32 elsewhere
INFERENCE_PRECISION = "auto"
#: default refusal limit for the input volume (voxels), before anything is allocated
MAX_VOXELS = 80_000_000
#: the UNet with a full-resolution head (``fine_head`` training setting) and the head's width: 16
#: channels cost 0.2-0.4 s on the benchmark CT, run once inside the vessels' box (fine_head_box); run
#: inside every 128^3 window it cost ~1.1 s each (end-to-end 7.8 -> 10.9 s on 2 cores)
FINE_HEAD_NETWORK = "unet_fine_head"
FINE_HEAD_CHANNELS = 16

#: network output channel -> vocabulary name (channel 0 is background = outside the body)
CLASSES: tuple[str, ...] = (
    "background",
    "aorta",
    "celiac_trunk",
    "superior_mesenteric_artery",
    "inferior_vena_cava",
    "portal_vein",
    "iliac_arteries",
    "iliac_veins",
    "kidney_left",
    "kidney_right",
    "liver",
    "spleen",
    "pancreas",
    "stomach",
    "bowel",
    "vertebrae",
    "sacrum",
    "spinal_canal",
    "lungs",
    "diaphragm_crura",
    "body",
    "celiac_plexus_region",
    "superior_hypogastric_plexus_region",
    "splanchnic_nerve_zone",
)
#: vocabulary structures folded into a network class (everything else inside the body -> body)
MERGED_INTO: dict[str, str] = {
    "spinal_cord": "spinal_canal",
    **{f"vertebra_{lv}": "vertebrae" for lv in ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")},
}
#: classes that are one connected structure: keep the largest component
SINGLE_COMPONENT: tuple[str, ...] = ("aorta", "inferior_vena_cava", "liver", "spleen", "pancreas",
                                     "stomach", "kidney_left", "kidney_right", "sacrum", "body",
                                     "superior_mesenteric_artery")
#: vessel trees whose branches, 1-2 voxels wide on the model grid, come out in several pieces:
#: only specks smaller than TREE_SPECK_ML are removed (keeping the largest piece alone erased the
#: trunk itself: held-out celiac-trunk Dice 0.447 with it, 0.622 without, for model 0.4.0)
VESSEL_TREES: tuple[str, ...] = ("celiac_trunk",)
TREE_SPECK_ML = 0.1
#: where a fine head (UNetWithFineHead) runs at inference: round these classes (fine_head_box)
FINE_HEAD_CLASSES: tuple[str, ...] = ("aorta", "celiac_trunk", "superior_mesenteric_artery", "inferior_vena_cava",
                                      "portal_vein", "iliac_arteries", "iliac_veins")
FINE_HEAD_MARGIN = 6  # voxels (18 mm at 3 mm)
FINE_HEAD_BOX_STRIDE = 2
#: voxels per slab when a fine head runs over its box (UNetWithFineHead.refine): ~200 MB of bf16 input
HEAD_SLAB_VOXELS = 4_000_000
#: steps tried per class and round by :func:`calibrate_logit_offsets` (added to a channel's logits)
OFFSET_STEPS: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)
TARGET_CLASSES: tuple[str, ...] = ("celiac_plexus_region", "superior_hypogastric_plexus_region",
                                   "splanchnic_nerve_zone")


def channel_vocabulary() -> dict[int, str]:
    """Output channel -> vocabulary name, background excluded (the bundle metadata field)."""
    return {i: name for i, name in enumerate(CLASSES) if i}


def vocabulary_to_channel_lut() -> np.ndarray:
    """Lookup table: vocabulary label -> network channel (unlisted labels inside the body -> body)."""
    lut = np.full(256, CLASSES.index("body"), dtype=np.uint8)
    lut[0] = 0
    for i, name in enumerate(CLASSES):
        if i:
            lut[label_of(name)] = i
    for src, dst in MERGED_INTO.items():
        lut[label_of(src)] = CLASSES.index(dst)
    return lut


def channel_to_vocabulary_lut(channel_vocab: Mapping[int, str]) -> np.ndarray:
    lut = np.zeros(max(channel_vocab, default=0) + 1, dtype=np.uint8)
    for ch, name in channel_vocab.items():
        lut[int(ch)] = label_of(name)
    return lut


# ---------------------------------------------------------------------------- network
def make_network(name: str = "unet", out_channels: int = len(CLASSES)) -> torch.nn.Module:
    """Small 3D MONAI networks compared for this task (see the model card)."""
    return locate_network(*network_def(name, out_channels))


def network_def(name: str, out_channels: int = len(CLASSES)) -> tuple[str, dict[str, Any]]:
    """``(class path, constructor arguments)`` of a named network (one of ``bundle.ALLOWED_TARGETS``);
    also the bundle's network_def."""
    unet = dict(spatial_dims=3, in_channels=1, out_channels=out_channels, channels=[16, 32, 64, 128],
                strides=[2, 2, 2], num_res_units=1)
    if name == "unet":
        return "monai.networks.nets.UNet", unet
    if name == FINE_HEAD_NETWORK:
        return "segmentation.networks.UNetWithFineHead", dict(unet, head_channels=FINE_HEAD_CHANNELS)
    if name == "segresnet":
        return "monai.networks.nets.SegResNet", dict(spatial_dims=3, in_channels=1, out_channels=out_channels,
                                                      init_filters=8, blocks_down=[1, 2, 2, 4],
                                                      blocks_up=[1, 1, 1])
    if name == "dynunet":
        return "monai.networks.nets.DynUNet", dict(spatial_dims=3, in_channels=1, out_channels=out_channels,
                                                    kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2],
                                                    upsample_kernel_size=[2, 2, 2], filters=[16, 32, 64, 128],
                                                    res_block=True)
    raise ModelError(f"unknown CT network {name!r}; choose unet, segresnet or dynunet")


def with_fine_head(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` (a trained ``unet``, or one that has a head already) with a full-resolution head whose
    UNet is frozen, so that training changes only the head (see :class:`UNetWithFineHead`)."""
    from monai.networks.nets import UNet

    from segmentation.networks import UNetWithFineHead

    if isinstance(net, UNetWithFineHead):
        headed = net
    elif isinstance(net, UNet):
        headed = make_network(FINE_HEAD_NETWORK)
        headed.unet.load_state_dict(net.state_dict())
    else:
        raise ModelError(f"fine_head needs a start network of kind unet; init_from gives a "
                         f"{type(net).__name__}")
    headed.freeze_unet()
    return headed


# ---------------------------------------------------------------------------- phantoms
class _VariedField(NamedTuple):
    """One phantom parameter a training setting can vary: ``setting: [low, high]`` draws ``param``
    within its :data:`~segmentation.phantom_ct.PARAM_RANGES` range."""

    setting: str  # CTTrainConfig / PhantomVariation field
    param: str  # PhantomParams field
    stream: int  # own random stream per seed
    tag: str  # cache file-name part
    meaning: str  # what the values are, for the error message of a bad setting
    card: str  # what a run drew, for the model card ({low} and {high} filled in)

    @property
    def bounds(self) -> tuple[float, float]:
        low, high, _ = PARAM_RANGES[self.param]
        return low, high


VARIED_FIELDS: tuple[_VariedField, ...] = (
    _VariedField("spleen_scales", "spleen_scale", 31, "spleen", "spleen sizes",
                 "spleens {low:g}-{high:g}x the mean size"),
    _VariedField("aortic_walls_mm", "aortic_wall_mm", 41, "wall", "aortic wall thicknesses in mm",
                 "aortic walls {low:g}-{high:g} mm with calcified plaques"),
    _VariedField("spleen_wraps", "spleen_wrap", 51, "wrap", "spleen wraps",
                 "spleens reaching {low:g}-{high:g} of the way along the left wall"),
    _VariedField("diaphragm_rises_mm", "diaphragm_rise_mm", 61, "dia", "diaphragm rises in mm",
                 "diaphragm and lung bases {low:g}-{high:g} mm higher"),
    _VariedField("upper_rib_counts", "upper_ribs", 71, "ribs", "numbers of ribs above the 10th",
                 "{low:g}-{high:g} ribs above the 10th with costal cartilage"),
    _VariedField("stomach_foods", "stomach_food", 81, "food", "fractions of the stomach filled with food",
                 "stomachs {low:g}-{high:g} full of food"),
    _VariedField("aortas_on_spine", "aorta_on_spine", 91, "onspine", "shares of the aorta-spine fat gap closed",
                 "aortas {low:g}-{high:g} of the way onto the vertebral bodies"),
)


@dataclass(frozen=True)
class PhantomVariation:
    """Ranges ``(low, high)`` that training phantoms draw per seed beyond :func:`phantom_params`.

    Each draw comes from its own random stream, so a varied phantom differs from the plain one of
    the same seed only in what is varied; ``None`` keeps the default (mean free spleen, no aortic wall,
    the diaphragm as drawn, ribs 10-12 only, a fasting stomach, a fat gap behind the aorta).
    """

    spleen_scales: tuple[float, float] | None = None
    aortic_walls_mm: tuple[float, float] | None = None
    spleen_wraps: tuple[float, float] | None = None
    diaphragm_rises_mm: tuple[float, float] | None = None
    upper_rib_counts: tuple[float, float] | None = None
    stomach_foods: tuple[float, float] | None = None
    aortas_on_spine: tuple[float, float] | None = None

    def draw(self, seed: int) -> dict[str, float]:
        """The varied :class:`~segmentation.phantom_ct.PhantomParams` fields for ``seed``."""
        return {f.param: float(np.random.default_rng([int(seed), f.stream]).uniform(*getattr(self, f.setting)))
                for f in VARIED_FIELDS if getattr(self, f.setting) is not None}

    def suffix(self) -> str:
        """Cache file-name part naming the ranges ("" when nothing varies), so caches never mix."""
        parts = []
        for f in VARIED_FIELDS:
            values = getattr(self, f.setting)
            if values is not None:
                parts.append(f"_{f.tag}{values[0]:g}-{values[1]:g}")
        return "".join(parts)


def phantom_params(seed: int, variation: PhantomVariation | None = None) -> Any:
    """Phantom parameters drawn from ``seed``: BMI 17-40, a tumour in about a third of cases, and
    whatever ``variation`` draws (spleen size and shape, aortic wall, diaphragm height, upper ribs,
    stomach contents, the aorta against the spine)."""
    from segmentation.phantom_ct import PhantomParams

    rng = np.random.default_rng(seed + 7919)
    tumour = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.3 else 0.0
    return PhantomParams(seed=int(seed), bmi=float(rng.uniform(17.0, 40.0)), tumour_encasement=tumour,
                         noise_hu=float(rng.uniform(5.0, 25.0)), **(variation or PhantomVariation()).draw(seed))


def phantom_example(seed: int, spacing_mm: float = MODEL_SPACING_MM,
                    variation: PhantomVariation | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One phantom as ``(HU image, channel labels)`` arrays in ``[x, y, z]`` (LPS) order.

    Target regions come from :func:`planner.targets.add_targets` on the exact labels, so the
    network learns the same rule the planner applies.
    """
    from planner.targets import add_targets
    from segmentation.phantom_ct import make_ct_phantom

    ph = make_ct_phantom(phantom_params(seed, variation), spacing_mm=(spacing_mm,) * 3)
    try:
        labels = add_targets(ph.labels).array
    except PlannerError:
        labels = ph.labels.array
    lut = vocabulary_to_channel_lut()
    image = np.asarray(ph.image.array, dtype=np.float32).transpose(2, 1, 0)
    return np.ascontiguousarray(image), np.ascontiguousarray(lut[labels].transpose(2, 1, 0))


def cached_examples(seeds: Iterable[int], cache_dir: str | Path | None, spacing_mm: float = MODEL_SPACING_MM,
                    variation: PhantomVariation | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Phantom examples for ``seeds`` (see :func:`phantom_example`), read from / written to
    ``cache_dir`` (npz, named by seed, grid and varied ranges) when given."""
    out = []
    variant = (variation or PhantomVariation()).suffix()
    for seed in seeds:
        path = None if cache_dir is None else Path(cache_dir) / f"ct_phantom_{seed}_{spacing_mm:g}mm{variant}.npz"
        if path is not None and path.is_file():
            with np.load(path) as z:
                out.append((z["image"], z["label"]))
            continue
        ex = phantom_example(seed, spacing_mm, variation)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, image=ex[0], label=ex[1])
            tmp.replace(path)
        out.append(ex)
    return out


# ---------------------------------------------------------------------------- transforms
def _shift_by_class(image: Any, label: Any, offsets: np.ndarray) -> torch.Tensor:
    """``image`` plus ``offsets[c]`` (HU) wherever ``label`` is channel class ``c``."""
    img = torch.as_tensor(image)
    table = torch.from_numpy(np.asarray(offsets, np.float32))
    return img + table[torch.as_tensor(label).long()].to(img.dtype)


class RandTissueHUd(Randomizable, MapTransform):
    """Shift the HU of each labelled class by its own random offset (in HU, before windowing).

    Real scans differ from the phantom's fixed tissue means by contrast phase, scanner and
    patient; one offset per class teaches the network to rely on shape and context too.
    """

    def __init__(self, image_key: str, label_key: str, prob: float = 0.8, sigma_hu: float = 25.0,
                 vessel_sigma_hu: float = 60.0) -> None:
        MapTransform.__init__(self, [image_key])
        self.image_key, self.label_key = image_key, label_key
        self.prob, self.sigma, self.vessel_sigma = prob, sigma_hu, vessel_sigma_hu
        vessels = {"aorta", "celiac_trunk", "superior_mesenteric_artery", "inferior_vena_cava", "portal_vein",
                   "iliac_arteries", "iliac_veins", "kidney_left", "kidney_right"}
        self._scale = np.array([0.0] + [vessel_sigma_hu if n in vessels else
                                        (0.0 if n in ("lungs",) else sigma_hu) for n in CLASSES[1:]], np.float32)
        self._offsets = np.zeros(len(CLASSES), np.float32)
        self._do = False

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random() < self.prob
        self._offsets = (self.R.standard_normal(len(CLASSES)) * self._scale).astype(np.float32)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        self.randomize()
        if self._do:
            d[self.image_key] = _shift_by_class(d[self.image_key], d[self.label_key], self._offsets)
        return d


class RandContrastPhased(Randomizable, MapTransform):
    """Imitate another contrast phase: scale each enhancing class's enhancement (phantom HU
    minus unenhanced HU) by one random factor for arteries and one for veins and parenchyma.

    The phantoms are drawn in the portal-venous phase; real series range from unenhanced to
    arterial (on the real evaluation series the aorta is ~150 HU and the IVC ~95 HU, against
    the phantom's 185 and 140).
    """

    def __init__(self, image_key: str, label_key: str, prob: float = 0.7,
                 arterial: tuple[float, float] = (0.4, 1.6), venous: tuple[float, float] = (0.35, 1.15)) -> None:
        from segmentation.phantom_ct import ENHANCEMENT_GROUP, TISSUE_HU, UNENHANCED_HU

        MapTransform.__init__(self, [image_key])
        self.image_key, self.label_key = image_key, label_key
        self.prob, self.ranges = prob, {"arterial": arterial, "venous": venous}
        self._enhancement = {g: np.zeros(len(CLASSES), np.float32) for g in self.ranges}
        for c, name in enumerate(CLASSES):
            if name in ENHANCEMENT_GROUP:
                self._enhancement[ENHANCEMENT_GROUP[name]][c] = TISSUE_HU[name][0] - UNENHANCED_HU[name]
        self._factors = {g: 1.0 for g in self.ranges}
        self._do = False

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random() < self.prob
        self._factors = {g: float(self.R.uniform(*r)) for g, r in self.ranges.items()}

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        self.randomize()
        if self._do:
            shift = sum((f - 1.0) * self._enhancement[g] for g, f in self._factors.items())
            d[self.image_key] = _shift_by_class(d[self.image_key], d[self.label_key], shift)
        return d


class RandSlabd(Randomizable, MapTransform):
    """Keep a random thin slab of slices and replicate its end slices outwards (image and label).

    Real series are often short slabs; at inference the sliding window pads them by
    replication, so the network sees this situation in training too.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.15, slices: tuple[int, int] = (6, 20)) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.slices = prob, slices
        self._slab: tuple[int, int] | None = None

    def randomize(self, depth: int) -> None:
        self._slab = None
        if self.R.random() < self.prob and depth > self.slices[0]:
            n = int(self.R.randint(self.slices[0], min(self.slices[1], depth) + 1))
            start = int(self.R.randint(0, depth - n + 1))
            self._slab = (start, start + n)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        first = torch.as_tensor(d[self.keys[0]])
        self.randomize(int(first.shape[-1]))
        if self._slab is not None:
            a, b = self._slab
            idx = torch.arange(first.shape[-1]).clamp(a, b - 1)
            for k in self.keys:
                d[k] = torch.as_tensor(d[k])[..., idx]
        return d


def train_transforms(seed: int, patch: Sequence[int] = PATCH, samples: int = 2) -> Compose:
    """Domain randomisation for phantom -> real CT (all MONAI transforms but two of ours).

    HU level: contrast phase, per-tissue offsets, global HU shift and scale; geometry: label-balanced
    crops, affine (rotation, scale, shear), occasional elastic deformation, thin slabs;
    image quality (after windowing): resolution loss, blur, bias field, contrast/gamma,
    noise.
    """
    keys = ["image", "label"]
    chain = Compose([
        RandContrastPhased("image", "label", prob=0.7),
        RandTissueHUd("image", "label", prob=0.8),
        RandShiftIntensityd("image", offsets=40.0, prob=0.5),
        RandScaleIntensityd("image", factors=0.12, prob=0.5),
        RandCropByLabelClassesd(keys, label_key="label", spatial_size=list(patch), num_classes=len(CLASSES),
                                num_samples=samples, ratios=[0.5] + [1.0] * (len(CLASSES) - 1),
                                allow_smaller=True),
        RandAffined(keys, prob=0.6, rotate_range=(0.12, 0.12, 0.2), scale_range=(0.15, 0.15, 0.15),
                    shear_range=(0.05, 0.05, 0.05), mode=("bilinear", "nearest"), padding_mode="border"),
        Rand3DElasticd(keys, sigma_range=(6, 9), magnitude_range=(40, 120), prob=0.1,
                       mode=("bilinear", "nearest"), padding_mode="border"),
        RandSlabd(keys, prob=0.15),
        ScaleIntensityRanged("image", a_min=HU_WINDOW[0], a_max=HU_WINDOW[1], b_min=0.0, b_max=1.0, clip=True),
        RandSimulateLowResolutiond("image", prob=0.2, zoom_range=(0.5, 0.9)),
        RandGaussianSmoothd("image", prob=0.3, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0)),
        RandBiasFieldd("image", prob=0.2, coeff_range=(0.0, 0.08)),
        RandAdjustContrastd("image", prob=0.3, gamma=(0.75, 1.4)),
        RandGaussianNoised("image", prob=0.5, std=0.03),
    ])
    chain.set_random_state(seed=seed)
    return chain


def window(image_hu: torch.Tensor, spec: "CTSpec | None" = None) -> torch.Tensor:
    """``[x, y, z]`` HU -> ``[1, 1, x, y, z]`` scaled by the spec's HU window (the inference-time intensity transform)."""
    a_min, a_max, b_min, b_max = (spec or CTSpec()).window
    return torch.as_tensor(ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max, clip=True)(
        torch.as_tensor(image_hu)[None, None].float()))


# ---------------------------------------------------------------------------- metrics
def dice_per_class(pred: np.ndarray, truth: np.ndarray, classes: Iterable[int]) -> dict[int, float]:
    """Dice per class value; NaN where the class is in neither map."""
    out = {}
    for c in classes:
        p, t = pred == c, truth == c
        denom = int(p.sum()) + int(t.sum())
        out[int(c)] = float("nan") if denom == 0 else 2.0 * float((p & t).sum()) / denom
    return out


# ---------------------------------------------------------------------------- training
@dataclass
class CTTrainConfig:
    """Settings of ``segmentation/configs/ct_phantom.yaml`` (see that file for the meaning)."""

    task: str = "ct_phantom"
    networks: tuple[str, ...] = ("unet", "segresnet")
    compare_steps: int = 150
    train_steps: int = 12000
    precision: str = "fp32"
    inference_precision: str | None = None  # None: INFERENCE_PRECISION for a bf16-trained model, else fp32
    train_seeds: tuple[int, int] = (1000, 1080)
    val_seeds: tuple[int, ...] = (9001, 9002)
    test_seeds: tuple[int, ...] = (9101, 9102, 9103, 9104)
    samples_per_phantom: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 20261201
    num_threads: int = 1
    cache_dir: str | None = "/tmp/plexus_ct_phantoms"
    spacing_mm: float = MODEL_SPACING_MM
    patch: tuple[int, int, int] = PATCH
    infer_roi: tuple[int, int, int] = INFER_ROI
    init_from: str | None = None
    init_sha256: str | None = None
    class_weights: dict[str, float] = field(default_factory=dict)
    batch_dice: bool = False
    spleen_scales: tuple[float, float] | None = None
    aortic_walls_mm: tuple[float, float] | None = None
    spleen_wraps: tuple[float, float] | None = None
    diaphragm_rises_mm: tuple[float, float] | None = None
    upper_rib_counts: tuple[float, float] | None = None
    stomach_foods: tuple[float, float] | None = None
    aortas_on_spine: tuple[float, float] | None = None
    blend_with_start: float = 0.0
    fine_head: bool = False
    calibration_seeds: tuple[int, ...] = ()
    calibrated_classes: tuple[str, ...] = ()
    bundle: dict[str, Any] = field(default_factory=dict)
    data_dir: str = ""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "CTTrainConfig":
        reject_unknown_keys(cls, raw, "CT training setting(s)", ModelError)
        kw = dict(raw)
        for key in ("networks", "train_seeds", "val_seeds", "test_seeds", "patch", "infer_roi",
                    "calibration_seeds", "calibrated_classes"):
            if key in kw:
                kw[key] = tuple(str(v) if key in ("networks", "calibrated_classes") else int(v) for v in kw[key])
        cfg = cls(**kw)
        check_precision(cfg.precision, "CT training settings")
        if cfg.inference_precision is not None and cfg.inference_precision not in INFERENCE_PRECISIONS:
            raise ModelError(f"CT training setting inference_precision = {cfg.inference_precision!r}: give one of "
                             f"{', '.join(INFERENCE_PRECISIONS)} (auto: bf16 where the CPU computes it natively), "
                             f"or leave it out to follow precision")
        sha = cfg.init_sha256
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise ModelError(f"CT training setting init_sha256 = {sha!r}: give the 64 lower-case hex digits of "
                             f"the start weights' sha256, in quotes")
        if not isinstance(cfg.class_weights, Mapping):
            raise ModelError(f"CT training setting class_weights = {cfg.class_weights!r}: give class name: weight "
                             f"pairs, e.g. {{celiac_trunk: 4.0}}")
        unknown = sorted(set(cfg.class_weights) - set(CLASSES[1:]))
        if unknown:
            raise ModelError(f"CT training setting class_weights names {unknown}: use the network's class names "
                             f"({', '.join(CLASSES[1:])})")
        if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in cfg.class_weights.values()):
            raise ModelError(f"CT training setting class_weights = {cfg.class_weights}: each weight must be a "
                             f"positive number (1 = as every other class)")
        for f in VARIED_FIELDS:
            values = getattr(cfg, f.setting)
            if values is not None:
                low, high = f.bounds
                if not _is_size_range(values, low, high):
                    raise ModelError(f"CT training setting {f.setting} = {values!r}: give [low, high] {f.meaning} "
                                     f"within {low:g}..{high:g} ({PARAM_RANGES[f.param][2]}), "
                                     f"low first, or leave it out")
                cfg = dataclasses.replace(cfg, **{f.setting: (float(values[0]), float(values[1]))})
        share = cfg.blend_with_start
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise ModelError(f"CT training setting blend_with_start = {share!r}: give the share of the start "
                             f"weights in the bundled weights, 0 (none) up to but not 1")
        if share > 0 and not cfg.init_from:
            raise ModelError(f"CT training setting blend_with_start = {share}: blending needs start weights; "
                             f"give init_from (the bundle the run fine-tunes)")
        if not isinstance(cfg.fine_head, bool):
            raise ModelError(f"CT training setting fine_head = {cfg.fine_head!r}: give true or false")
        if cfg.fine_head and (not cfg.init_from or share > 0):
            raise ModelError("CT training setting fine_head = true trains a new full-resolution head on a "
                             "trained UNet: give init_from (that UNet's bundle) and leave blend_with_start out")
        _check_calibration(cfg)
        for key in ("patch", "infer_roi"):
            size = getattr(cfg, key)
            if len(size) != 3 or any(v < 16 or v % 16 for v in size):
                raise ModelError(f"CT training setting {key} = {list(size)}: give three sizes in voxels, each a "
                                 f"multiple of 16 (the UNet halves the grid four times)")
        return cfg

    def variation(self) -> PhantomVariation:
        """What the training phantoms draw per seed (validation and held-out phantoms stay plain)."""
        return PhantomVariation(**{f.setting: getattr(self, f.setting) for f in VARIED_FIELDS})

    def spec(self) -> "CTSpec":
        """The inference settings a model trained with this config is evaluated and shipped with.

        The forward pass follows the training precision unless ``inference_precision`` says otherwise:
        a head trained in float32 on a CPU without native bf16 sits on a UNet trained in bf16, and
        the bundle should still run bf16 where the CPU computes it natively.
        """
        trained = INFERENCE_PRECISION if self.precision == "bf16" else "fp32"
        return CTSpec(spacing_mm=(float(self.spacing_mm),) * 3, roi_size=self.infer_roi,
                      precision=self.inference_precision or trained)


def _check_calibration(cfg: CTTrainConfig) -> None:
    """calibrated_classes are network classes, and calibration_seeds are given with them and are
    neither training nor held-out seeds (else the held-out figures would score what was fitted)."""
    unknown = sorted(set(cfg.calibrated_classes) - set(CLASSES[1:]))
    if unknown:
        raise ModelError(f"CT training setting calibrated_classes names {unknown}: use the network's class names "
                         f"({', '.join(CLASSES[1:])})")
    if bool(cfg.calibrated_classes) != bool(cfg.calibration_seeds):
        raise ModelError("CT training settings calibrated_classes and calibration_seeds go together: give both "
                         "(the classes whose logit offsets are fitted, and the phantom seeds to fit them on) or neither")
    lo, hi = cfg.train_seeds
    reused = sorted(s for s in cfg.calibration_seeds if s in cfg.test_seeds or lo <= s < hi)
    if reused:
        raise ModelError(f"CT training setting calibration_seeds {reused} are training or held-out (test_seeds) "
                         f"seeds; fit the offsets on other phantoms, e.g. validation seeds or 9201-9299")


def _is_size_range(value: Any, lowest: float, highest: float) -> bool:
    """``value`` is ``[low, high]``: two numbers (not booleans) within ``lowest..highest``, low first."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and lowest <= v <= highest for v in value)
            and value[0] <= value[1])


def _set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def loss_class_weights(by_name: Mapping[str, float]) -> torch.Tensor | None:
    """Per-channel weights of the Dice and cross-entropy terms (1 unless named); None when none is named.

    Raising a thin structure's weight trades its precision for recall: the network otherwise calls
    1-2 voxel wide vessels background tissue, the cheaper mistake under an unweighted loss.
    """
    if not by_name:
        return None
    return torch.tensor([float(by_name.get(name, 1.0)) for name in CLASSES])


class _Trainer:
    """One network, its optimiser and an augmentation stream over cached phantoms."""

    def __init__(self, name: str, cfg: CTTrainConfig, examples: Sequence[tuple[np.ndarray, np.ndarray]],
                 net: torch.nn.Module | None = None) -> None:
        from monai.losses import DiceCELoss

        _set_seed(cfg.seed)
        self.name, self.cfg, self.examples = name, cfg, examples
        self.net = make_network(name) if net is None else net
        trainable = [p for p in self.net.parameters() if p.requires_grad]  # a frozen UNet stays as loaded
        self.opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
                                  weight=loss_class_weights(cfg.class_weights), batch=cfg.batch_dice)
        self.transform = train_transforms(cfg.seed, patch=cfg.patch, samples=cfg.samples_per_phantom)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.seconds = 0.0
        self.loss = float("nan")

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.examples[int(self.rng.integers(len(self.examples)))]
        crops = self.transform({"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]})
        x = torch.stack([torch.as_tensor(c["image"]).float() for c in crops])
        y = torch.stack([torch.as_tensor(c["label"]).round().long() for c in crops])
        return x, y

    def train_for(self, steps: int, lr_at: Callable[[float], float], log: Callable[[str], None] = print) -> None:
        """``steps`` optimiser steps; ``lr_at`` maps the phase's progress (0..1) to a factor on ``lr``."""
        self.net.train()
        start = time.time()
        for k in range(steps):
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * lr_at(k / max(steps, 1))
            x, y = self.batch()
            with training_autocast(self.cfg.precision):
                logits = self.net(x)
            loss = self.loss_fn(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            self.loss = loss.item() if self.step == 1 else 0.95 * self.loss + 0.05 * loss.item()
            if self.step % 25 == 0:
                log(f"{self.name} step {self.step} loss {self.loss:.4f} ({time.time() - start:.0f} s)")
        self.seconds += time.time() - start
        self.net.eval()


@torch.inference_mode()
def predict_logits(net: torch.nn.Module, image_hu: torch.Tensor, overlap: float = 0.25,
                   progress: bool = False, spec: "CTSpec | None" = None) -> torch.Tensor:
    """``[x, y, z]`` HU tensor on the model grid -> ``[C, x, y, z]`` float32 logits (sliding window),
    with the spec's ``logit_offsets`` added.

    The window pads short series by replicating their end slices (as in training, see
    :class:`RandSlabd`).
    """
    from monai.inferers import sliding_window_inference

    from segmentation.networks import UNetWithFineHead

    spec = spec or CTSpec()
    x = window(image_hu, spec)
    fine_head = isinstance(net, UNetWithFineHead)  # its UNet goes by window, its head once, in the vessels' box
    windowed = net.unet if fine_head else net
    with inference_autocast(spec.precision):
        logits = sliding_window_inference(x, roi_size=spec.roi_size,
                                          sw_batch_size=spec.sw_batch_size, predictor=lambda t: windowed(t).float(),
                                          overlap=overlap if spec.overlap is None else spec.overlap,
                                          mode="gaussian", padding_mode="replicate", progress=progress)
        box = fine_head_box(logits[0], spec) if fine_head else None
        if box is not None:
            region = (slice(None), slice(None)) + box
            logits[region] = net.refine(x[region], logits[region], slab_voxels=HEAD_SLAB_VOXELS)
    logits = logits[0]
    if spec.logit_offsets is not None:
        logits += torch.tensor(spec.logit_offsets, dtype=logits.dtype)[:, None, None, None]
    return logits


def fine_head_box(unet_logits: torch.Tensor, spec: "CTSpec") -> tuple[slice, slice, slice] | None:
    """Where a fine head runs at inference: the box round the voxels the UNet calls a vessel
    (``FINE_HEAD_CLASSES``), ``FINE_HEAD_MARGIN`` voxels more on every side; None when it calls none.

    Why: the head was added for the thin vessels, and running it over the whole volume cost more than
    the 10 s budget allows. On held-out seeds 9101-9104 the box is 24-31 % of the volume and keeps the
    head's gain on every vessel (only the vertebrae lose some of theirs). The vessels are looked for on
    every ``FINE_HEAD_BOX_STRIDE``-th voxel (a lone voxel between those may fall outside the box), and
    the head's zero padding reaches ``UNetWithFineHead.HEAD_REACH`` voxels in from the box's faces, so
    what the sampled vessels span, and ``FINE_HEAD_MARGIN - HEAD_REACH`` voxels round it, gets the
    whole-volume result.
    """
    channels = [c for c, name in spec.channel_vocab.items() if name in FINE_HEAD_CLASSES]
    step = FINE_HEAD_BOX_STRIDE  # the box is found on every second voxel: an argmax over all of them cost 0.25 s
    vessel = torch.isin(unet_logits[:, ::step, ::step, ::step].argmax(0), torch.tensor(channels))
    if not bool(vessel.any()):
        return None
    box = []
    for axis, size in enumerate(unet_logits.shape[1:]):
        present = torch.nonzero(vessel.any(dim=tuple(a for a in range(vessel.ndim) if a != axis))).flatten()
        first, last = int(present[0]) * step, int(present[-1]) * step + step - 1
        box.append(slice(max(0, first - FINE_HEAD_MARGIN), min(size, last + FINE_HEAD_MARGIN + 1)))
    return tuple(box)


def predict_channels(net: torch.nn.Module, image_hu: torch.Tensor, overlap: float = 0.25,
                     progress: bool = False, spec: "CTSpec | None" = None) -> torch.Tensor:
    """``[x, y, z]`` HU tensor on the model grid -> ``[x, y, z]`` channel labels (argmax of :func:`predict_logits`)."""
    return predict_logits(net, image_hu, overlap, progress, spec).argmax(0).to(torch.uint8)


def class_dice(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean Dice per class name over ``(prediction, truth)`` channel maps (NaN for a class never present)."""
    scores: dict[str, list[float]] = {n: [] for n in CLASSES[1:]}
    for pred, truth in pairs:
        for c, d in dice_per_class(pred, truth, range(1, len(CLASSES))).items():
            if not math.isnan(d):
                scores[CLASSES[c]].append(d)
    return {n: float(np.mean(v)) if v else float("nan") for n, v in scores.items()}


def evaluate_phantoms(net: torch.nn.Module, examples: Sequence[tuple[np.ndarray, np.ndarray]],
                      spec: "CTSpec", postprocess: bool = True) -> dict[str, float]:
    """Mean Dice per class name over phantom examples on the model grid (after post-processing when asked)."""
    def predicted(image: np.ndarray) -> np.ndarray:
        pred = predict_channels(net, torch.from_numpy(image), spec=spec).numpy()
        return clean_channels(pred, spec.spacing_mm) if postprocess else pred

    return class_dice((predicted(image), label) for image, label in examples)


def mean_dice_with_offsets(examples: Sequence[tuple[np.ndarray, np.ndarray]], offsets: np.ndarray,
                           spacing_mm: Iterable[float]) -> float:
    """Mean over classes of :func:`class_dice` after post-processing, for ``[C, x, y, z]`` logits
    plus ``offsets`` against ``[x, y, z]`` channel truth."""
    spacing = tuple(float(v) for v in spacing_mm)
    per_class = class_dice((clean_channels((logits + offsets[:, None, None, None]).argmax(0).astype(np.uint8),
                                           spacing), truth) for logits, truth in examples)
    scored = [d for d in per_class.values() if not math.isnan(d)]
    return float(np.mean(scored)) if scored else float("nan")


class Calibration(NamedTuple):
    """Per-channel logit offsets and the mean Dice on the calibration phantoms without and with them."""

    offsets: np.ndarray
    mean_dice_before: float
    mean_dice_after: float


def calibrate_logit_offsets(examples: Sequence[tuple[np.ndarray, np.ndarray]], classes: Iterable[int],
                            spacing_mm: Iterable[float], steps: Sequence[float] = OFFSET_STEPS, rounds: int = 2,
                            log: Callable[[str], None] = print) -> Calibration:
    """Per-channel logit offsets that raise :func:`mean_dice_with_offsets` on ``examples``.

    Coordinate ascent: each round tries every step from each class's current offset and keeps
    a step only when it raises the mean Dice. Why: the loss weights that make thin structures
    trainable leave some classes over- or under-called; adding a constant to a channel's logits
    shifts its prior (Saerens et al., Neural Comput 2002) without retraining. Fit it on phantoms
    that neither training nor the held-out figures use.
    """
    offsets = np.zeros(examples[0][0].shape[0], np.float32)
    best = before = mean_dice_with_offsets(examples, offsets, spacing_mm)
    log(f"calibration: mean Dice {best:.4f} without offsets")
    classes = list(classes)
    for _ in range(rounds):
        for c in classes:
            for step in steps:
                trial = offsets.copy()
                trial[c] += step
                score = mean_dice_with_offsets(examples, trial, spacing_mm)
                if score > best + 1e-4:
                    best, offsets = score, trial
                    log(f"calibration: {CLASSES[c]} {trial[c]:+.1f} -> mean Dice {best:.4f}")
    return Calibration(offsets, before, best)


def calibration_examples(net: torch.nn.Module, cfg: "CTTrainConfig") -> list[tuple[np.ndarray, np.ndarray]]:
    """``(logits, channel truth)`` of ``net`` on the plain phantoms ``cfg.calibration_seeds``."""
    spec = cfg.spec()
    return [(predict_logits(net, torch.from_numpy(image), spec=spec).numpy(), label)
            for image, label in cached_examples(cfg.calibration_seeds, cfg.cache_dir, cfg.spacing_mm)]


def _cosine(warmup: float = 0.03, floor: float = 0.02) -> Callable[[float], float]:
    def f(t: float) -> float:
        if t < warmup:
            return max(0.05, t / warmup)
        u = min(1.0, (t - warmup) / (1.0 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * u))
    return f


def run_training(cfg: CTTrainConfig, out_dir: str | Path, max_steps: int | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compare the candidate networks for ``compare_steps`` each, continue the best one for
    ``train_steps`` and write ``summary.json`` and ``model.pt`` (state dict) into ``out_dir``.
    With ``init_from`` the comparison is skipped: that bundle's network continues for ``train_steps``
    (e.g. on a finer grid), and the summary carries the comparison of the run that chose it.

    Step counts (not wall time) fix the run, so the same seed gives the same model.
    ``max_steps`` (smoke tests) caps the optimiser steps of every phase.
    """
    torch.set_num_threads(max(1, int(cfg.num_threads)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def capped(steps: int) -> int:
        return steps if max_steps is None else min(steps, max_steps)

    start = _start_network(cfg) if cfg.init_from else None  # checked before anything is generated
    lo, hi = cfg.train_seeds
    train = cached_examples(range(lo, hi), cfg.cache_dir, cfg.spacing_mm, cfg.variation())
    val = cached_examples(cfg.val_seeds, cfg.cache_dir, cfg.spacing_mm)
    log(f"{len(train)} training phantoms, {len(val)} validation phantoms ready in {time.time() - t0:.0f} s")
    spec = cfg.spec()
    if start is not None:
        net, source = start
        name = source["network"]
        if cfg.fine_head:
            net, name = with_fine_head(net), FINE_HEAD_NETWORK
        log(f"fine-tuning {name} from {cfg.init_from} {source['version']} for {capped(cfg.train_steps)} steps")
        tr = _Trainer(name, cfg, train, net=net)
        tr.train_for(capped(cfg.train_steps), _cosine(), log=log)
        summary = {"network": name, "comparison": source.pop("comparison"), "initialised_from": source}
        return _finish(tr, cfg, val, out, summary, t0, log)
    comparison: dict[str, Any] = {}
    trainers: dict[str, _Trainer] = {}
    for name in cfg.networks:
        tr = _Trainer(name, cfg, train)
        tr.train_for(capped(cfg.compare_steps), lambda t: 1.0 if t > 0.05 else max(0.1, t / 0.05), log=log)
        val_dice = evaluate_phantoms(tr.net, val, spec, postprocess=False)
        mean = float(np.nanmean(list(val_dice.values())))
        comparison[name] = {"steps": tr.step, "seconds": round(tr.seconds, 1),
                            "seconds_per_step": round(tr.seconds / max(tr.step, 1), 3),
                            "parameters": sum(p.numel() for p in tr.net.parameters()),
                            "val_mean_dice": round(mean, 4),
                            "val_dice": {k: round(v, 4) for k, v in val_dice.items()}}
        log(f"compare {name}: {tr.step} steps, mean validation Dice {mean:.3f}")
        trainers[name] = tr
    best = max(comparison, key=lambda n: comparison[n]["val_mean_dice"])
    tr = trainers[best]
    trainers.clear()
    log(f"continuing {best} for {cfg.train_steps} steps")
    tr.train_for(capped(cfg.train_steps), _cosine(), log=log)
    summary = {"network": best, "comparison": comparison}
    return _finish(tr, cfg, val, out, summary, t0, log)


def _finish(tr: _Trainer, cfg: CTTrainConfig, val: Sequence[tuple[np.ndarray, np.ndarray]], out: Path,
            summary: dict[str, Any], t0: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Log the validation Dice and write ``model.pt`` and ``summary.json`` of a finished run."""
    val_dice = evaluate_phantoms(tr.net, val, cfg.spec())
    for name, d in val_dice.items():
        log(f"validation Dice {name:36s} {d:.3f}")
    summary = {**summary, "steps": tr.step, "train_seconds": round(tr.seconds, 1), "val_dice": val_dice,
               "total_seconds": round(time.time() - t0, 1), "config": _config_dict(cfg)}
    torch.save(tr.net.state_dict(), out / "model.pt")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def init_bundle_path(init_from: str) -> Path:
    """``init_from`` as a bundle folder: a path, or the name of a bundle shipped in ``models/``."""
    from segmentation.bundle import default_bundle_path

    path = Path(init_from).expanduser()
    return path if path.exists() or path.is_absolute() or len(path.parts) > 1 else default_bundle_path(init_from)


def _start_network(cfg: CTTrainConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network a fine-tuning run continues (``init_from``) and what to record about it.

    The start weights must match ``init_sha256`` when the config gives one (else the bundle's
    own record), so a config reproduces its model only from the same starting weights.
    """
    from segmentation.bundle import read_bundle, sha256_of

    source = read_bundle(init_bundle_path(str(cfg.init_from)))
    actual = sha256_of(source.weights_path) if cfg.init_sha256 and source.weights_path.is_file() else None
    if actual is not None and actual != cfg.init_sha256:
        raise ModelError(f"{source.weights_path}: sha256 {actual[:12]}... is not the "
                         f"init_sha256 {cfg.init_sha256[:12]}... this config fine-tunes; point init_from at the "
                         f"bundle with those weights (an earlier version is in the git history of models/), or "
                         f"remove init_sha256 to fine-tune these")
    net = source.load_network(cfg.init_sha256)
    name = str(source.ours.get("network") or "")
    if name not in ("unet", "segresnet", FINE_HEAD_NETWORK):
        raise ModelError(f"{source.root}: init_from needs one of our CT bundles (plexus_planner.network unet, "
                         f"{FINE_HEAD_NETWORK} or segresnet), found {name or 'no network name'}")
    evaluation = source.root / "docs" / "evaluation.json"
    previous = json.loads(evaluation.read_text()).get("training", {}) if evaluation.is_file() else {}
    return net, {"network": name, "bundle": source.name, "version": source.metadata.get("version"),
                 "model_sha256": source.ours.get("model_sha256"), "steps": previous.get("steps"),
                 "train_seconds": previous.get("train_seconds"), "spacing_mm": source.ours.get("model_spacing_mm"),
                 "config": previous.get("config", {}), "comparison": previous.get("comparison", {}),
                 "blended_with_start": previous.get("blended_with_start"),
                 "initialised_from": previous.get("initialised_from")}


def _config_dict(cfg: CTTrainConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


# ---------------------------------------------------------------------------- post-processing
def clean_labels(pred: np.ndarray, single: Iterable[int], body: int | None, trees: Iterable[int] = (),
                 speck_voxels: int = 0) -> np.ndarray:
    """Largest connected component for the ``single`` values, pieces smaller than ``speck_voxels``
    removed from the ``trees`` values, then holes filled per value.

    Components are 26-connected (as MONAI's ``KeepLargestConnectedComponent``), so a thin oblique
    vessel stays one piece. Removed voxels become ``body`` (when given; also filling unlabelled
    holes inside the body) or 0. Works on channel maps and on vocabulary label maps alike. Each
    value is processed inside its bounding box grown by one voxel, which gives the same result as
    the whole volume (every path out of the box crosses that free shell) in a fraction of the time.
    """
    from scipy import ndimage

    neighbours = np.ones((3, 3, 3), dtype=bool)

    out = np.array(pred, copy=True)
    boxes = ndimage.find_objects(out)  # value v -> boxes[v - 1]; voxels of v never leave it below

    def box(value: int) -> tuple[slice, ...] | None:
        found = boxes[value - 1] if 0 < value <= len(boxes) else None
        if found is None:
            return None
        return tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(found, out.shape))

    def pieces(value: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """``value``'s box (a view into ``out``), its mask there, piece labels and piece sizes."""
        where = box(value)
        if where is None:
            return None
        region = out[where]
        mask = region == value
        lab, _ = ndimage.label(mask, structure=neighbours)
        return region, mask, lab, np.bincount(lab.ravel())

    fill = 0 if body is None else body
    for c in single:
        found = pieces(int(c))
        if found is not None and len(found[3]) > 2:
            region, mask, lab, sizes = found
            region[mask & (lab != 1 + int(np.argmax(sizes[1:])))] = fill
    for c in trees if speck_voxels > 1 else ():
        found = pieces(int(c))
        if found is not None:
            region, mask, lab, sizes = found
            region[mask & (sizes[lab] < speck_voxels)] = fill
    if body is not None:
        inside = ndimage.binary_fill_holes(out > 0)
        out[(out == 0) & inside] = body
    for c in (int(v) for v in np.unique(out) if v and v != body):
        where = box(c)
        region = out[where]
        mask = region == c
        holes = ndimage.binary_fill_holes(mask) & ~mask & ((region == fill) | (region == 0))
        region[holes] = c
    return out


def tree_speck_voxels(spacing_mm: Iterable[float]) -> int:
    """The number of voxels of ``spacing_mm`` that hold :data:`TREE_SPECK_ML` (at least 1)."""
    return max(1, math.ceil(TREE_SPECK_ML * 1000.0 / float(np.prod([float(s) for s in spacing_mm]))))


def clean_channels(pred: np.ndarray, spacing_mm: Iterable[float]) -> np.ndarray:
    """:func:`clean_labels` on a map of this module's network channels (:data:`CLASSES`)."""
    return clean_labels(pred, [CLASSES.index(n) for n in SINGLE_COMPONENT], CLASSES.index("body"),
                        [CLASSES.index(n) for n in VESSEL_TREES], tree_speck_voxels(spacing_mm))


# ---------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class CTSpec:
    """How a CT bundle wants its input: grid, orientation, HU window, window size, classes."""

    spacing_mm: tuple[float, float, float] = (MODEL_SPACING_MM,) * 3  # MONAI pixdim (x, y, z)
    axcodes: str = "LPS"  # array axes after orientation (our phantoms: x left, y posterior, z superior)
    window: tuple[float, float, float, float] = (HU_WINDOW[0], HU_WINDOW[1], 0.0, 1.0)  # a_min, a_max, b_min, b_max
    roi_size: tuple[int, int, int] = INFER_ROI
    channel_vocab: Mapping[int, str] = field(default_factory=channel_vocabulary)
    max_voxels: int = MAX_VOXELS
    sw_batch_size: int = 2
    overlap: float | None = INFER_OVERLAP
    postprocess: bool = True
    precision: str = "fp32"  # forward pass: fp32, bf16, or auto (bf16 where the CPU computes it natively)
    logit_offsets: tuple[float, ...] | None = None  # per channel, added before the argmax (calibrate_logit_offsets)


def _find_transform(config: Any, name: str) -> dict[str, Any] | None:
    """First ``{"_target_": name...}`` mapping anywhere in a parsed bundle config."""
    if isinstance(config, Mapping):
        target = str(config.get("_target_", ""))
        if target == name or target.endswith("." + name):
            return dict(config)
        items = config.values()
    elif isinstance(config, list):
        items = config
    else:
        return None
    for item in items:
        found = _find_transform(item, name)
        if found is not None:
            return found
    return None


def _literal(value: Any, what: str, root: Path) -> Any:
    if isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise ModelError(f"{root}: {what} is an expression ({value!r}); only literal values can be read")
    return value


def spec_from_bundle(bundle: Any, max_voxels: int | None = None) -> CTSpec:
    """The :class:`CTSpec` of a bundle: ours from ``plexus_planner``, others from their
    ``inference.json`` (Orientationd, Spacingd, ScaleIntensityRanged, the inferer's roi_size).

    Raises:
        ModelError: when the bundle names no output labels.
    """
    vocab = bundle.channel_vocabulary
    if not vocab:
        raise ModelError(f"{bundle.root}: the bundle names no output labels (metadata network_data_format."
                         f"outputs.pred.channel_def or plexus_planner.channel_vocabulary); cannot map its output")
    ours = bundle.ours
    if ours.get("model_spacing_mm"):
        sp = ours["model_spacing_mm"]
        spacing = tuple(float(v) for v in (sp if isinstance(sp, list) else [sp] * 3))
        window = tuple(float(v) for v in ours.get("hu_window", HU_WINDOW)) + (0.0, 1.0)
        return CTSpec(spacing_mm=spacing, axcodes=str(ours.get("axcodes", "LPS")), window=window[:4],
                      roi_size=tuple(int(v) for v in ours.get("roi_size", INFER_ROI)), channel_vocab=vocab,
                      max_voxels=int(max_voxels or ours.get("max_voxels", MAX_VOXELS)),
                      overlap=float(ours.get("overlap", INFER_OVERLAP)),
                      precision=str(ours.get("inference_precision", "fp32")),
                      logit_offsets=_offsets_from(ours.get("logit_offsets"), vocab, bundle.root))
    inf, root = bundle.inference, bundle.root
    kw: dict[str, Any] = {}
    spacing = _find_transform(inf, "Spacingd") or _find_transform(inf, "Spacing")
    if spacing and "pixdim" in spacing:
        pix = _literal(spacing["pixdim"], "Spacingd.pixdim", root)
        kw["spacing_mm"] = tuple(float(v) for v in (pix if isinstance(pix, list) else [pix] * 3))
    orient = _find_transform(inf, "Orientationd") or _find_transform(inf, "Orientation")
    kw["axcodes"] = str(_literal(orient.get("axcodes", "RAS"), "Orientationd.axcodes", root)) if orient else "RAS"
    scale = _find_transform(inf, "ScaleIntensityRanged") or _find_transform(inf, "ScaleIntensityRange")
    if scale:
        kw["window"] = tuple(float(_literal(scale.get(k, d), f"ScaleIntensityRanged.{k}", root))
                             for k, d in (("a_min", -1024), ("a_max", 1024), ("b_min", 0.0), ("b_max", 1.0)))
    inferer = _find_transform(inf, "SlidingWindowInferer")
    if inferer and "roi_size" in inferer:
        kw["roi_size"] = tuple(int(v) for v in _literal(inferer["roi_size"], "roi_size", root))
    kw["overlap"] = float(_literal(inferer.get("overlap", 0.25), "overlap", root)) if inferer else 0.25
    kw["postprocess"] = False
    return CTSpec(channel_vocab=vocab, max_voxels=int(max_voxels or MAX_VOXELS), **kw)


def _offsets_from(raw: Any, vocab: Mapping[int, str], root: Path) -> tuple[float, ...] | None:
    """A bundle's ``plexus_planner.logit_offsets`` (class name -> offset) as one offset per channel."""
    if raw is None:
        return None
    channel_of = {name: c for c, name in vocab.items()}
    if not isinstance(raw, Mapping) or any(
            n not in channel_of or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            for n, v in raw.items()):
        raise ModelError(f"{root}: plexus_planner.logit_offsets = {raw!r} must map the bundle's class names "
                         f"({', '.join(channel_of)}) to finite numbers; fix or remove it")
    offsets = [0.0] * (max(vocab) + 1)
    for name, value in raw.items():
        offsets[channel_of[name]] = float(value)
    return tuple(offsets)


def looks_like_ct(volume: Volume) -> str | None:
    """Why ``volume`` is not a CT in HU (``None`` when it plausibly is)."""
    if volume.modality not in ("CT", "OT"):
        return f"its modality is {volume.modality!r}, not CT"
    arr = np.asarray(volume.array)
    step = max(1, arr.size // 2_000_000)
    sample = arr.reshape(-1)[::step].astype(np.float32)
    lo, hi = float(np.percentile(sample, 0.5)), float(np.percentile(sample, 99.5))
    if lo > -300.0 or hi < 0.0 or hi > 4000.0:
        return (f"its values ({lo:.0f} to {hi:.0f} at the 0.5/99.5 percentiles) are not Hounsfield units "
                f"(a CT has air near -1000 HU)")
    return None


def model_grid_voxels(volume: Volume, spec: CTSpec) -> int:
    extent = np.asarray(volume.shape[::-1], float) * np.asarray(volume.spacing_xyz)
    return int(np.prod(np.ceil(extent / np.asarray(spec.spacing_mm)) + 1))


def check_ct_volume(volume: Volume, spec: CTSpec, name: str = "the image") -> None:
    """Refuse what the CT model cannot segment, before anything large is allocated."""
    if min(volume.shape) < 2:
        raise VolumeError(f"{name} is a {'x'.join(map(str, volume.shape))} image: a CT model needs a 3D "
                          f"volume (at least 2 slices); give the whole series")
    n = int(np.prod(volume.shape))
    if n > spec.max_voxels or model_grid_voxels(volume, spec) > spec.max_voxels:
        raise VolumeError(f"{name} has {n:,} voxels ({'x'.join(map(str, volume.shape))}), above the limit of "
                          f"{spec.max_voxels:,}; crop the series or raise --max-voxels")
    reason = looks_like_ct(volume)
    if reason is not None:
        raise ModelError(f"{name} is not a CT image for this model: {reason}")


def labels_onto_grid(labels: np.ndarray, src_affine: Any, dst_affine: Any, shape: Sequence[int],
                     slab: int = 16) -> np.ndarray:
    """A label map on one grid (``src_affine``, index -> world) resampled onto another (``dst_affine``, ``shape``).

    Each label's mask is interpolated linearly and the largest value wins, so boundaries on a
    finer input grid follow the coarse model's shapes smoothly instead of in 4 mm steps (nearest
    neighbour). Points outside the source grid get 0. Works through the output in slabs of
    ``slab`` planes along its last axis, so memory stays at one slab times the number of labels.
    """
    import torch.nn.functional as F

    dst_to_src = np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine, np.float64)
    same = _same_voxels(labels, dst_to_src, shape)
    if same is not None:
        return same
    values = np.unique(labels)
    onehot = torch.from_numpy(np.stack([labels == v for v in values]).astype(np.float32))[None]
    half_extent = np.maximum(np.array(labels.shape, np.float64) - 1.0, 1.0) / 2.0
    nx, ny, nz = (int(n) for n in shape)
    ix, iy = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), indexing="ij")
    out = np.zeros((nx, ny, nz), np.uint8)
    for z0 in range(0, nz, slab):
        iz = np.arange(z0, min(nz, z0 + slab), dtype=np.float64)
        pts = np.stack(np.broadcast_arrays(ix[..., None], iy[..., None], iz[None, None, :]), axis=-1)
        src = pts @ dst_to_src[:3, :3].T + dst_to_src[:3, 3]
        norm = src / half_extent - 1.0  # align_corners=True: index 0 -> -1, n-1 -> +1
        grid = torch.from_numpy(np.ascontiguousarray(norm[..., ::-1], dtype=np.float32))[None]
        score = F.grid_sample(onehot, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        best, index = score.max(dim=0)
        chunk = values[index.numpy()]
        chunk[best.numpy() <= 0.0] = 0
        out[:, :, z0:z0 + len(iz)] = chunk
    return out


def _same_voxels(labels: np.ndarray, dst_to_src: np.ndarray, shape: Sequence[int]) -> np.ndarray | None:
    """``labels`` re-indexed onto the destination grid when both grids share their voxel centres
    (axes permuted or flipped, whole-voxel shifts: e.g. a 3 mm input on a 3 mm model grid),
    else ``None``. Exact where interpolation would only blur."""
    rot, shift = dst_to_src[:3, :3], dst_to_src[:3, 3]
    perm = np.rint(rot)
    if not (np.allclose(rot, perm, atol=1e-4) and np.allclose(shift, np.rint(shift), atol=1e-3)
            and np.array_equal(np.abs(perm).sum(axis=0), np.ones(3)) and np.array_equal(np.abs(perm).sum(axis=1), np.ones(3))):
        return None
    index = []
    for dst_axis in range(3):
        src_axis = int(np.flatnonzero(perm[:, dst_axis])[0])
        positions = perm[src_axis, dst_axis] * np.arange(int(shape[dst_axis])) + np.rint(shift[src_axis])
        index.append((src_axis, positions.astype(np.int64)))
    grids = np.meshgrid(*[pos for _, pos in index], indexing="ij", sparse=True)
    src_index: list[Any] = [None, None, None]
    inside = np.ones(tuple(int(n) for n in shape), bool)
    for (src_axis, _), grid in zip(index, grids):
        ok = (grid >= 0) & (grid < labels.shape[src_axis])
        inside &= ok
        src_index[src_axis] = np.clip(grid, 0, labels.shape[src_axis] - 1)
    return np.where(inside, labels[tuple(src_index)], 0).astype(np.uint8)


def segment_ct(volume: Volume, network: torch.nn.Module, spec: CTSpec | None = None,
               progress: bool = False) -> Volume:
    """Segment a CT ``Volume`` (HU) with ``network``; vocabulary labels on the input grid.

    Steps (MONAI): Orientation to ``spec.axcodes``, Spacing to ``spec.spacing_mm`` (bilinear),
    HU window, sliding-window inference, the spec's logit offsets, argmax, post-processing on the model grid, and
    :func:`labels_onto_grid` back onto the input grid; then vertebral levels counted up from
    the sacrum (:func:`planner.label_import.assign_vertebral_levels`) when the model has a
    level-less ``vertebrae`` class.
    """
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    spec = spec or CTSpec()
    check_ct_volume(volume, spec)
    ras = torch.as_tensor(np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine_lps(), dtype=torch.float64)
    xyz = np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0), dtype=np.float32)
    img = MetaTensor(torch.from_numpy(xyz)[None], affine=ras)
    img = Orientation(axcodes=spec.axcodes)(img)
    img = Spacing(pixdim=spec.spacing_mm, mode="bilinear", padding_mode="border")(img)
    channels = predict_channels(network.eval(), img[0].as_tensor(), progress=progress, spec=spec).numpy()
    lut = channel_to_vocabulary_lut(spec.channel_vocab)  # channels without a vocabulary name -> 0
    lut = np.concatenate([lut, np.zeros(max(0, int(channels.max(initial=0)) + 1 - lut.size), np.uint8)])
    labels = lut[channels]
    if spec.postprocess:
        named = set(spec.channel_vocab.values())
        single = [label_of(n) for n in SINGLE_COMPONENT if n in named]
        trees = [label_of(n) for n in VESSEL_TREES if n in named]
        body = label_of("body") if "body" in named else None
        labels = clean_labels(labels, single, body, trees, tree_speck_voxels(spec.spacing_mm))
    arr = labels_onto_grid(labels, img.affine, ras, xyz.shape).transpose(2, 1, 0)
    out = volume.with_array(np.ascontiguousarray(arr))
    if "vertebrae" in set(spec.channel_vocab.values()):
        from planner.label_import import assign_vertebral_levels

        out, message = assign_vertebral_levels(out)
        out = dataclasses.replace(out, warnings=tuple(out.warnings) + (message,))
    return out


def segment_volume(volume: Volume, bundle: Any, smooth_window: int = 1, batch_size: int = 2,
                   progress: bool = True, max_voxels: int | None = None,
                   expected_sha256: str | None = None) -> Volume:
    """``plexplan segment``'s CT pipeline: checks, bundle weights (sha256-verified), :func:`segment_ct`."""
    spec = spec_from_bundle(bundle, max_voxels)
    check_ct_volume(volume, spec)
    network = bundle.load_network(expected_sha256) if expected_sha256 else bundle.load_network()
    return segment_ct(volume, network, dataclasses.replace(spec, sw_batch_size=max(1, int(batch_size))),
                      progress=progress)


# ---------------------------------------------------------------------------- evaluation
#: structures scored against the real series' silver (TotalSegmentator) labels
SILVER_CLASSES: tuple[str, ...] = ("aorta", "liver", "spleen", "stomach", "pancreas", "inferior_vena_cava",
                                   "portal_vein", "vertebrae")
REAL_SERIES = "ct_abdomen_ts_dicom"


def _vertebra_mask(arr: np.ndarray) -> np.ndarray:
    from planner.anatomy import VERTEBRAL_LEVELS, vertebra_name

    values = [label_of("vertebrae")] + [label_of(vertebra_name(lv)) for lv in VERTEBRAL_LEVELS if lv != "S1"]
    return np.isin(arr, values)


def dice_by_name(pred: np.ndarray, truth: np.ndarray, names: Iterable[str]) -> dict[str, float]:
    """Dice per vocabulary name on two vocabulary label maps (``vertebrae`` = any lumbar/thoracic level)."""
    out = {}
    for name in names:
        if name == "vertebrae":
            p, t = _vertebra_mask(pred), _vertebra_mask(truth)
        else:
            p, t = pred == label_of(name), truth == label_of(name)
        denom = int(p.sum()) + int(t.sum())
        out[name] = float("nan") if denom == 0 else round(2.0 * float((p & t).sum()) / denom, 4)
    return out


def evaluate_held_out(network: torch.nn.Module, seeds: Iterable[int], spec: CTSpec | None = None,
                      spacing_mm: float = 3.0) -> dict[str, Any]:
    """Dice per class on phantoms never used in training, segmented end to end on a 3 mm grid.

    The truth is the phantom's exact label map with the rule targets, merged like the
    network classes (:func:`truth_in_network_classes`).
    """
    from planner.targets import add_targets
    from segmentation.phantom_ct import make_ct_phantom

    per: dict[str, list[float]] = {n: [] for n in CLASSES[1:]}
    for seed in seeds:
        ph = make_ct_phantom(phantom_params(int(seed)), spacing_mm=(spacing_mm,) * 3)
        try:
            truth = add_targets(ph.labels).array
        except PlannerError:
            truth = ph.labels.array
        truth = truth_in_network_classes(truth)
        pred = segment_ct(ph.image, network, spec).array
        for name, d in dice_by_name(pred, truth, CLASSES[1:]).items():
            if not math.isnan(d):
                per[name].append(d)
    return {n: {"mean": round(float(np.mean(v)), 4), "min": round(float(np.min(v)), 4), "n": len(v)}
            for n, v in per.items() if v}


def truth_in_network_classes(vocab_labels: np.ndarray) -> np.ndarray:
    """A vocabulary label map with the network's class merges applied (for fair scoring)."""
    lut = vocabulary_to_channel_lut()
    return channel_to_vocabulary_lut(channel_vocabulary())[lut[vocab_labels]]


def evaluate_real(network: torch.nn.Module, spec: CTSpec | None = None) -> dict[str, Any] | None:
    """Dice against the silver TotalSegmentator labels of the real series (None when absent)."""
    from planner.config import shared_data_path
    from planner.label_import import import_labels
    from planner.volume import load

    root = shared_data_path(REAL_SERIES)
    if root is None:
        return None
    image = load(root / "dicom")
    silver = import_labels(root / "silver_labels_totalseg.nii.gz", image, root / "labels_totalsegmentator_v2.json")
    pred = segment_ct(image, network, spec).array
    return {"series": f"{REAL_SERIES} ({'x'.join(map(str, image.shape))} voxels, "
                      f"{' x '.join(f'{s:.3g}' for s in image.spacing)} mm)",
            "dice": dice_by_name(pred, silver.labels.array, SILVER_CLASSES)}


# ---------------------------------------------------------------------------- bundle
#: version -> what it changed, newest first (the bundle's version, metadata changelog and model card)
BUNDLE_CHANGELOG: dict[str, str] = {
    "0.6.1": "0.6.0's head trained 1200 more steps (run K: celiac trunk and portal vein weighted 8 and 4, lr 5e-4, "
             "float32), logit offsets refitted: held-out mean 0.872 -> 0.873, celiac trunk 0.669 -> 0.673, portal vein "
             "0.733 -> 0.738; real mean 0.4573 -> 0.4579 (aorta 0.685 -> 0.681, stomach 0.543 -> 0.549)",
    "0.6.0": "a full-resolution head (segmentation.networks.UNetWithFineHead) on 0.5.1's frozen UNet, trained 2500 "
             "steps on run H's phantoms, run at inference once inside the box round the UNet's vessels; logit "
             "offsets refitted: held-out mean 0.866 -> 0.872, celiac trunk 0.656 -> 0.669, portal vein 0.726 -> "
             "0.733, iliac arteries 0.751 -> 0.764; real aorta 0.675 -> 0.685",
    "0.5.1": "0.5.0's weights with per-class logit offsets before the argmax, fitted on 8 phantoms that neither "
             "training nor the held-out figures use (target regions, SMA, portal vein, pancreas, crura, iliac veins, "
             "celiac trunk; not the aorta or IVC, whose phantom-fitted offsets cut the real aorta)",
    "0.5.0": "aortas against the spine and aortic walls in the phantoms, thin-vessel loss weights; 3000 more 3 mm "
             "steps from run G (0.4.0 before its blend); post-processing keeps the celiac trunk's pieces and counts "
             "pieces 26-connected: real-series aorta 0.590 -> 0.674, spleen 0.639 -> 0.865, held-out celiac trunk "
             "0.447 -> 0.656, portal vein 0.696 -> 0.729",
    "0.4.0": "phantoms with the real upper abdomen's anatomy (spleen along the left wall, higher diaphragm, "
             "ribs 7-9 with costal cartilage, food in the stomach); 3000 more 3 mm steps from 0.3.0, weights "
             "blended halfway back to 0.3.0: real-series spleen 0.160 -> 0.639, stomach 0.502 -> 0.609",
    "0.3.0": "3 mm model grid (was 4 mm): the 0.2.0 network fine-tuned on 3 mm phantoms, inference in "
             "128^3 windows",
    "0.2.0": "retrained: 160 phantoms, 12000 steps, bfloat16 training, contrast-phase augmentation; labels "
             "resampled linearly onto the input grid",
    "0.1.1": "inference in 96^3 windows without overlap (faster; better on the real series)",
    "0.1.0": "first model: UNet/SegResNet comparison, trained on synthetic phantoms",
}


def metadata_for(cfg: CTTrainConfig, summary: Mapping[str, Any], name: str) -> dict[str, Any]:
    """MONAI bundle metadata (spec fields plus our ``plexus_planner`` section)."""
    import monai

    channel_def = {str(i): n for i, n in enumerate(CLASSES)}
    offsets = logit_offsets_of(summary)
    shape = ["8*n", "8*n", "8*n"]
    return {
        "version": next(iter(BUNDLE_CHANGELOG)),
        "changelog": dict(BUNDLE_CHANGELOG),
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {},
        "name": name,
        "task": "Abdominal CT segmentation of vessels, organs, spine and nerve-plexus target regions for "
                "planning image-guided pain procedures (research and education only)",
        "description": f"3D {summary.get('network', 'unet')} on a {cfg.spacing_mm:g} mm isotropic grid, trained only "
                       "on seeded synthetic CT phantoms with domain randomisation. Not a medical device.",
        "authors": "plexus-planner contributors",
        "copyright": "Copyright (c) plexus-planner contributors",
        "data_source": "synthetic phantoms from segmentation/phantom_ct.py (seeds "
                       f"{cfg.train_seeds[0]}-{cfg.train_seeds[1] - 1}); no patient data in training",
        "data_type": "dicom or nifti CT in Hounsfield units",
        "image_classes": "one channel CT, HU windowed to [0, 1]",
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(CLASSES)),
        "pred_classes": f"{len(CLASSES)} channels (softmax logits)",
        "eval_metrics": {"val_mean_dice_phantoms": round(float(np.nanmean(list(summary.get("val_dice", {0: np.nan}).values()))), 4)},
        "intended_use": "Research and education only; not for diagnosis or treatment.",
        "references": ["Isensee F. et al. nnU-Net. Nat Methods 2021 (patch and spacing heuristics)",
                       "Wasserthal J. et al. TotalSegmentator. Radiol Artif Intell 2023 (class names)"],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": shape, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(CLASSES),
                                 "spatial_shape": shape, "dtype": "float32", "value_range": [0, 1],
                                 "is_onehot": True, "channel_def": channel_def}},
        },
        "plexus_planner": {"modality": "CT", "channel_vocabulary": {str(k): v for k, v in channel_vocabulary().items()},
                           "model_spacing_mm": [cfg.spacing_mm] * 3, "axcodes": "LPS", "hu_window": list(HU_WINDOW),
                           "roi_size": list(cfg.infer_roi), "overlap": INFER_OVERLAP, "training_patch": list(cfg.patch),
                           "max_voxels": MAX_VOXELS, "network": summary.get("network"),
                           "inference_precision": cfg.spec().precision,
                           **({"logit_offsets": offsets} if offsets else {})},
    }


def inference_extra(cfg: CTTrainConfig, logit_offsets: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The MONAI-style pre/post-processing of ``inference.json`` (what :func:`segment_ct` does)."""
    shift: list[dict[str, Any]] = []
    top_level: dict[str, Any] = {}
    if logit_offsets:
        top_level = {"logit_offsets": [float(logit_offsets.get(n, 0.0)) for n in CLASSES]}
        shift = [{"_target_": "Lambdad", "keys": "pred",
                  "func": "$lambda x: x + torch.tensor(@logit_offsets, dtype=x.dtype).view(-1, 1, 1, 1)"}]
    return {
        **top_level,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "LPS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [cfg.spacing_mm] * 3, "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": HU_WINDOW[0], "a_max": HU_WINDOW[1],
             "b_min": 0.0, "b_max": 1.0, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(cfg.infer_roi), "sw_batch_size": 2,
                    "overlap": INFER_OVERLAP, "mode": "gaussian", "padding_mode": "replicate"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            *shift,
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "KeepLargestConnectedComponentd", "keys": "pred",
             "applied_labels": [CLASSES.index(n) for n in SINGLE_COMPONENT]},
            {"_target_": "FillHolesd", "keys": "pred"}]},
    }


def write_ct_bundle(bundle_dir: str | Path, run_dir: str | Path, cfg: CTTrainConfig,
                    name: str = "ct_abdomen_phantom", notes: str = "") -> Any:
    """Package a training run as a MONAI bundle, with Dice on held-out phantoms and the real series.

    ``notes`` (Markdown) is the model card's "what was tried" section (``plexplan train`` reads it
    from the config's ``bundle.history`` file, e.g. ``segmentation/configs/ct_abdomen_phantom_history.md``).
    """
    from segmentation.bundle import write_bundle

    run = Path(run_dir)
    summary = json.loads((run / "summary.json").read_text())
    target, args = network_def(summary["network"])
    net = locate_network(target, args)
    net.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    if cfg.blend_with_start > 0:
        blend_with_start(net, cfg)
        summary["blended_with_start"] = cfg.blend_with_start
    with torch.no_grad():  # evaluate the weights as the bundle stores them (float16), not the run's float32
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    net.eval()
    spec = cfg.spec()
    if cfg.calibrated_classes:
        fit = calibrate_logit_offsets(calibration_examples(net, cfg),
                                      [CLASSES.index(n) for n in cfg.calibrated_classes], spec.spacing_mm)
        spec = dataclasses.replace(spec, logit_offsets=tuple(float(v) for v in fit.offsets))
        summary["calibration"] = {"seeds": list(cfg.calibration_seeds), "classes": list(cfg.calibrated_classes),
                                  "mean_dice_before": round(fit.mean_dice_before, 4),
                                  "mean_dice_after": round(fit.mean_dice_after, 4),
                                  "logit_offsets": {CLASSES[c]: float(v) for c, v in enumerate(fit.offsets) if v}}
    summary["evaluated_precision"] = resolved_precision(spec.precision)  # what "auto" was on the measuring CPU
    held_out = evaluate_held_out(net, cfg.test_seeds, spec)
    real = evaluate_real(net, spec)
    meta = metadata_for(cfg, summary, name)
    meta["eval_metrics"].update({f"held_out_phantom_dice_{k}": v["mean"] for k, v in held_out.items()})
    if real is not None:
        meta["eval_metrics"].update({f"real_silver_dice_{k}": v for k, v in real["dice"].items()})
    card = model_card(summary, held_out, real, cfg, notes)
    evaluation = {"held_out_phantoms": held_out, "real_series": real, "training": summary}
    return write_bundle(bundle_dir, state_dict=net.state_dict(), network_def={"_target_": target, **args},
                        metadata=meta, model_card=card,
                        inference_extra=inference_extra(cfg, logit_offsets_of(summary)),
                        extra_docs={"evaluation.json": json.dumps(evaluation, indent=2, default=str) + "\n"})


def blend_with_start(net: torch.nn.Module, cfg: CTTrainConfig) -> None:
    """Move a fine-tuned ``net`` back towards the weights it started from (``init_from``, checked
    against ``init_sha256``): each weight becomes ``share * start + (1 - share) * fine-tuned``.

    Why: fine-tuning on phantoms fits the phantoms and can lose what the start weights did well on
    patients; interpolating the weights keeps much of both (WiSE-FT, Wortsman et al., CVPR 2022).
    """
    share = float(cfg.blend_with_start)
    start, _ = _start_network(cfg)
    start_state = start.state_dict()
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(share * start_state[name].to(tensor.dtype) + (1.0 - share) * tensor)


def locate_network(target: str, args: Mapping[str, Any]) -> torch.nn.Module:
    from pydoc import locate

    return locate(target)(**dict(args))


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"


LARGE_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "lungs", "body")
VESSELS_AND_TARGETS = ("aorta", "inferior_vena_cava", "portal_vein", "celiac_trunk", "superior_mesenteric_artery",
                       "celiac_plexus_region", "superior_hypogastric_plexus_region", "splanchnic_nerve_zone")


def _targets_status(held_out: Mapping[str, Any], real: Mapping[str, Any] | None) -> str:
    """Plain statement of which acceptance figures are met (>= 0.90 / 0.75 phantoms, 0.8 real)."""
    def below(names: Iterable[str], limit: float, table: Mapping[str, Any]) -> list[str]:
        return [n for n in names if n in table and not (table[n] >= limit)]

    phantom = {k: v["mean"] for k, v in held_out.items()}
    lines = []
    miss = below(LARGE_ORGANS, 0.90, phantom)
    lines.append(f"- Large organs >= 0.90 on held-out phantoms: {'met' if not miss else 'NOT met for ' + ', '.join(miss)}.")
    miss = below(VESSELS_AND_TARGETS, 0.75, phantom)
    lines.append(f"- Vessels and target regions >= 0.75 on held-out phantoms: "
                 f"{'met' if not miss else 'NOT met for ' + ', '.join(miss)}.")
    if real is not None:
        miss = below(("aorta", "liver", "spleen"), 0.8, real["dice"])
        lines.append(f"- Aorta, liver, spleen >= 0.8 on the real series: {'met' if not miss else 'NOT met for ' + ', '.join(miss)}.")
    return "\n".join(lines)


def logit_offsets_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """The non-zero logit offsets (class name -> offset) a bundled run's calibration fitted."""
    return dict((summary.get("calibration") or {}).get("logit_offsets") or {})


def _offsets_text(summary: Mapping[str, Any]) -> str:
    """The model card's words for the logit offsets added before the argmax (empty without calibration)."""
    cal = summary.get("calibration")
    if not cal:
        return ""
    shown = ", ".join(f"{n} {v:+g}" for n, v in cal["logit_offsets"].items()) or "all 0"
    return (f"per-class logit offsets ({shown}; fitted by `calibrate_logit_offsets` for "
            f"{', '.join(cal['classes'])} on the plain phantoms {cal['seeds']}, which neither training nor the "
            f"held-out figures use: mean Dice there {cal['mean_dice_before']:.3f} -> {cal['mean_dice_after']:.3f}), ")


def _network_text(summary: Mapping[str, Any]) -> str:
    """The model card's name and short description of the network."""
    if summary.get("network") == FINE_HEAD_NETWORK:
        return (f"MONAI `unet` with a full-resolution head (`segmentation.networks.UNetWithFineHead`: two 3x3x3 "
                f"convolutions of {FINE_HEAD_CHANNELS} channels on the model grid over the image and the UNet's class "
                f"probabilities, adding a correction to its logits; trained with the UNet frozen; at inference the "
                f"UNet runs by window and the head once afterwards, only inside the box round the voxels the UNet "
                f"calls {', '.join(FINE_HEAD_CLASSES)}, {FINE_HEAD_MARGIN} voxels more on every side)")
    return f"MONAI `{summary.get('network')}`"


def _precision_text(precision: str) -> str:
    return {"auto": "in bfloat16 where the CPU computes it natively (AMX / AVX-512 BF16), else float32",
            "bf16": "in bfloat16", "fp32": "in float32"}[precision]


def _measured_text(summary: Mapping[str, Any]) -> str:
    """How the card's figures were computed, where the run recorded it (bundles before 0.6.1 did not)."""
    measured = summary.get("evaluated_precision")
    return f"; these and the real-series figures with a forward pass {_precision_text(measured)}" if measured else ""


def training_stages(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The training runs behind a model, oldest first: each later run continued the one before
    (``initialised_from``); the first one compared the candidate networks."""
    stages: list[Mapping[str, Any]] = []
    stage: Mapping[str, Any] | None = summary
    while stage:
        stages.append(stage)
        stage = stage.get("initialised_from")
    return stages[::-1]


def _stage_text(stage: Mapping[str, Any]) -> str:
    """One training run in words: steps, grid, patches, learning rate, loss settings, minutes."""
    c = stage.get("config", {})
    patch = f" {c['patch'][0]}^3" if c.get("patch") else ""  # not recorded by the oldest runs
    weights = c.get("class_weights") or {}
    loss = ", loss weights " + ", ".join(f"{n} {w:g}" for n, w in weights.items()) if weights else ""
    loss += ", Dice over the batch" if c.get("batch_dice") else ""
    phantoms = "".join(", " + f.card.format(low=c[f.setting][0], high=c[f.setting][1])
                       for f in VARIED_FIELDS if c.get(f.setting))
    share = stage.get("blended_with_start")
    blend = (f"; weights then blended {float(share):g} of the way back to the start weights (WiSE-FT)"
             if share else "")
    head = ", only a new full-resolution head trained, the UNet frozen" if c.get("fine_head") else ""
    return (f"{stage.get('steps')} steps on a {float(c.get('spacing_mm', 0)):g} mm grid (batch of "
            f"{c.get('samples_per_phantom')}{patch} patches, lr {float(c.get('lr', 0)):g}{loss}{phantoms}{head}), "
            f"{(stage.get('train_seconds') or 0) / 60:.0f} min{blend}")


def _training_text(summary: Mapping[str, Any]) -> str:
    """What the shipped weights were trained for: from scratch, or fine-tuned from earlier bundles."""
    stages = training_stages(summary)
    if len(stages) == 1:
        return f"Chosen: **{summary.get('network')}**, trained {_stage_text(summary)}."
    lines = []
    for k, stage in enumerate(stages, 1):  # earlier runs are recorded with the bundle they made
        made = (f"-> {stage.get('bundle')} {stage.get('version')} (sha256 {str(stage.get('model_sha256'))[:12]}...)"
                if stage.get("bundle") else "-> these weights")
        lines.append(f"{k}. {_stage_text(stage)} {made}")
    return (f"Chosen: **{summary.get('network')}** (table above). Trained in {len(stages)} runs, each continuing "
            f"the weights of the one before (linear warm-up and cosine decay in each):\n\n" + "\n".join(lines))


def model_card(summary: Mapping[str, Any], held_out: Mapping[str, Any], real: Mapping[str, Any] | None,
               cfg: CTTrainConfig, notes: str = "") -> str:
    """The bundle's ``docs/README.md``."""
    comp = summary.get("comparison", {})
    first = training_stages(summary)[0].get("config", {})  # the run that compared the networks
    comp_rows = "\n".join(f"| {n} | {c['parameters']:,} | {c['steps']} | {c['seconds_per_step']:.2f} | "
                          f"{c['val_mean_dice']:.3f} |" for n, c in comp.items())
    held_rows = "\n".join(f"| {n} | {_fmt(v['mean'])} | {_fmt(v['min'])} | {v['n']} |" for n, v in held_out.items())
    if real is not None:
        real_rows = "\n".join(f"| {n} | {_fmt(d)} |" for n, d in real["dice"].items())
        real_text = (f"Series: {real['series']}; silver labels are TotalSegmentator v2 *model output*, mapped to "
                     f"the vocabulary (vertebrae = T11 + T12). This one series also decided which candidate "
                     f"models and inference settings shipped (see What was tried), so its figures are "
                     f"optimistic for other patients.\n\n| structure | Dice |\n|---|---|\n{real_rows}\n")
    else:
        real_text = "The real series was not available when this card was written.\n"
    return f"""# ct_abdomen_phantom: abdominal CT segmentation trained on synthetic phantoms

**Research and education software. Not a medical device; not for diagnosis or treatment.**

## Intended use
Segment contrast-enhanced abdominal CT (roughly T10 to the sacrum) into the structures a
planner of image-guided cancer-pain procedures needs: aorta and branches, IVC, portal vein,
iliac vessels, kidneys, liver, spleen, pancreas, stomach, bowel, vertebrae (one class, level
not identified), sacrum, spinal canal, lungs, diaphragmatic crura, body, and the target
regions (celiac plexus region, superior hypogastric plexus region, splanchnic nerve zone).
Run with `plexplan segment SERIES --out DIR`; the planner re-derives the target regions
from the segmented anatomy by its explicit rules (`planner.targets`) and reports how well the
network's own target classes agree.

## Training data: synthetic only
Trained **only on synthetic CT phantoms** (`segmentation/phantom_ct.py`, seeds
{cfg.train_seeds[0]}-{cfg.train_seeds[1] - 1}, BMI 17-40, a pancreatic tumour in ~30 %), generated at
{cfg.spacing_mm:g} mm. No patient image was used for training. Labels are the phantoms' exact labels
with the target regions painted by `planner.targets.add_targets`.

## Model
{_network_text(summary)} ({len(CLASSES)} output channels), input one channel CT windowed
{HU_WINDOW[0]:g}..{HU_WINDOW[1]:g} HU to [0, 1], {cfg.spacing_mm:g} mm isotropic grid (LPS), patches
{cfg.patch[0]}^3 in training; inference in {cfg.infer_roi[0]}^3 sliding windows (overlap {INFER_OVERLAP:g}, replicate
padding; forward pass {_precision_text(cfg.spec().precision)}), {_offsets_text(summary)}argmax,
largest connected component (26-connected) for single organs, pieces under {TREE_SPECK_ML:g} ml removed from the
celiac trunk and its branches (which break into pieces on this grid), hole filling, resampling back onto the input grid
(each label's mask linearly, the largest wins). Weights stored as float16 (sha256 in metadata,
checked before use).

Domain randomisation (MONAI transforms): contrast phase (own transform: arterial and
venous/parenchymal enhancement above unenhanced HU scaled by separate random factors), per-tissue
HU offsets (own transform), global HU shift and scale, label-balanced crops, affine (rotation, scale, shear), elastic deformation,
thin-slab replication (own transform), resolution loss (downsample-upsample), Gaussian blur,
bias field, gamma/contrast, Gaussian noise.

## Network choice (measured)
Each candidate trained {first.get('compare_steps')} steps on the same phantoms ({first.get('num_threads', cfg.num_threads)} CPU
thread(s), {first.get('precision', cfg.precision)} forward pass), then scored on validation phantoms
{list(first.get('val_seeds', cfg.val_seeds))}; the best
continued for {first.get('train_steps')} steps (linear warm-up, cosine decay).
DynUNet (filters 16-128) was timed at about twice the UNet's seconds per step and left out.

| network | parameters | steps | s/step | mean validation Dice |
|---|---|---|---|---|
{comp_rows}

{_training_text(summary)}

## Dice on held-out phantoms
Seeds {list(cfg.test_seeds)} (never seen in training), segmented end to end from a 3 mm grid
and scored on that grid against the exact labels (merged like the network classes){_measured_text(summary)}:

| structure | mean Dice | min | n |
|---|---|---|---|
{held_rows}

## Dice on a real CT series
{real_text}
## Against the project's targets
{_targets_status(held_out, real)}

## What was tried
{notes or '- see the network comparison above.'}

## Limitations
- Trained on synthetic phantoms only: the real-series Dice above is the honest measure of
  usefulness on patients, and it is limited. Treat every output as a draft to review; prefer
  an imported segmentation (`plexplan segment --labels-from`, e.g. TotalSegmentator output)
  or a stronger bundle (`--model`, e.g. MONAI's wholeBody_ct_segmentation) when available.
- {cfg.spacing_mm:g} mm grid, and the UNet's first layer already halves it: small vessels (celiac trunk
  and its branches, intrahepatic portal vein, external iliac arteries, renal arteries) are 1-2 voxels wide
  and often missed; thin structures (crura) are coarse.
- Vertebral levels are not predicted by the network (one class `vertebrae`); they are counted
  up from the sacrum afterwards, so on a scan without the sacrum in view the levels stay
  unknown and rules that need them (splanchnic zone at T12, celiac fallback at T12-L1) cannot
  run on the network output.
- Phantom anatomy is idealised: contrast phases only by randomisation, no arms or table, no implants,
  no pathology other than a pancreatic mass, patients supine, abdomen only.
- Not validated clinically. Not a medical device.

## Licence and data attribution
Weights: same licence as the project. The real evaluation series is from the TotalSegmentator
repository test files (Apache-2.0); it was used for evaluation only.
"""


def run_training_command(args: Any, raw: Mapping[str, Any]) -> int:
    """``plexplan train ct_phantom.yaml``: train, print per-class validation Dice, optionally bundle."""
    raw = {k: v for k, v in raw.items() if k != "data_dir"}
    cfg = CTTrainConfig.from_mapping(raw)
    opts = cfg.bundle or {}
    notes = ""
    if args.bundle and opts.get("history"):  # the card's "what was tried"; checked before an hour of training
        history = Path(args.config).parent / str(opts["history"])
        if not history.is_file():
            raise ModelError(f"{args.config}: bundle.history {history} not found")
        notes = history.read_text()
    if args.bundle_only:
        if not args.bundle or not (Path(args.out) / "summary.json").is_file():
            raise ModelError(f"--bundle-only packages a finished run: give --bundle DIR and an --out folder with "
                             f"summary.json and model.pt ({Path(args.out) / 'summary.json'} not found)")
    else:
        summary = run_training(cfg, args.out, max_steps=args.max_steps)
        for name, d in summary["val_dice"].items():
            print(f"validation Dice {name:36s} {_fmt(d)}")
        print(f"trained {summary['network']} for {summary['steps']} steps; wrote {args.out}")
    if args.bundle:
        bundle = write_ct_bundle(args.bundle, args.out, cfg, name=opts.get("name", "ct_abdomen_phantom"), notes=notes)
        print(f"wrote bundle {bundle.root}")
    return 0

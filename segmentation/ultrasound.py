"""Ultrasound nerve and blood-vessel segmentation: data, transforms, network, training, inference.

Frames of any size are *letterboxed* onto a square grid (default 256x256): scaled to fit,
keeping the aspect ratio, placed at the top (the skin line stays at row 0) and centred
left-right, with zero padding. Predictions are mapped back onto the original frame, so the
output keeps the image's pixel grid and therefore its physical calibration.

Model output channels: 0 background, 1 nerve, 2 blood vessel (the order of the
``usgra-seg`` palette masks). The bundle's metadata maps them onto the anatomy vocabulary
(``brachial_plexus``, ``blood_vessel``), see :data:`CHANNEL_NAMES`.

This module imports torch and MONAI at module level: import it only inside command
``run`` functions (never from ``planner``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
)

from planner.config import reject_unknown_keys
from planner.errors import ModelError, VolumeError
from segmentation.precision import check_precision, training_autocast

log = logging.getLogger(__name__)

#: model output channel -> anatomy vocabulary name (0 is background)
CHANNEL_NAMES: dict[int, str] = {0: "background", 1: "brachial_plexus", 2: "blood_vessel"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------- letterbox
@dataclass(frozen=True)
class Letterbox:
    """Where a frame of ``height x width`` sits inside the ``size x size`` model grid."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return min(self.size / self.height, self.size / self.width)

    @property
    def content_hw(self) -> tuple[int, int]:
        return (max(1, min(self.size, round(self.height * self.scale))),
                max(1, min(self.size, round(self.width * self.scale))))

    @property
    def left(self) -> int:
        return (self.size - self.content_hw[1]) // 2


def letterbox(frames: torch.Tensor, size: int, mode: str = "bilinear") -> tuple[torch.Tensor, Letterbox]:
    """Scale ``[N, C, H, W]`` frames to fit ``size x size`` (aspect kept), top-aligned, zero padded.

    ``mode`` "nearest" is for label maps; "bilinear" uses antialiasing when shrinking.
    """
    n, c, h, w = frames.shape
    box = Letterbox(h, w, size)
    ch, cw = box.content_hw
    if (ch, cw) == (h, w):
        content = frames
    elif mode == "nearest":
        content = F.interpolate(frames, size=(ch, cw), mode="nearest")
    else:
        content = F.interpolate(frames.float(), size=(ch, cw), mode="bilinear", align_corners=False,
                                antialias=True)
    out = torch.zeros((n, c, size, size), dtype=content.dtype)
    out[:, :, :ch, box.left:box.left + cw] = content
    return out, box


def unletterbox(maps: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """Inverse of :func:`letterbox` for ``[N, C, size, size]`` probability maps (bilinear)."""
    ch, cw = box.content_hw
    content = maps[:, :, :ch, box.left:box.left + cw]
    if (ch, cw) == (box.height, box.width):
        return content
    return F.interpolate(content, size=(box.height, box.width), mode="bilinear", align_corners=False)


def to_greyscale(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, 3|4]`` frames to float32 greyscale in [0, 1] range of uint8 input."""
    arr = np.asarray(frames)
    if arr.ndim == 4:
        if arr.shape[-1] not in (3, 4):
            raise VolumeError(f"frames have {arr.shape[-1]} channels; expected greyscale or RGB")
        rgb = arr[..., :3].astype(np.float32)
        arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if arr.ndim != 3:
        raise VolumeError(f"expected frames [N, H, W], got shape {arr.shape}")
    arr = arr.astype(np.float32)
    top = float(arr.max()) if arr.size else 0.0
    if top > 255.0:  # 16-bit ultrasound: rescale its own range onto 8-bit
        arr = arr * (255.0 / top)
    return arr / 255.0


# ---------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class UltrasoundDataset:
    """Frames and masks letterboxed to the model grid, in memory.

    ``images`` ``[N, 1, S, S]`` float32 in [0, 1]; ``masks`` ``[N, 1, S, S]`` uint8 (0, 1, 2);
    ``content`` the letterbox of each frame; ``ids`` the file stems (frame numbers);
    ``native_masks`` each frame's mask on its own pixels (what held-out Dice is measured on).
    """

    ids: tuple[str, ...]
    images: torch.Tensor
    masks: torch.Tensor
    content: tuple[Letterbox, ...]
    native_masks: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> "UltrasoundDataset":
        idx = list(index)
        return UltrasoundDataset(tuple(self.ids[i] for i in idx), self.images[idx], self.masks[idx],
                                 tuple(self.content[i] for i in idx), tuple(self.native_masks[i] for i in idx))


def load_dataset(root: str | Path, size: int = 256, limit: int | None = None) -> UltrasoundDataset:
    """Read ``root/images/*.png`` with palette masks ``root/masks/*.png`` (1 nerve, 2 vessel)."""
    from PIL import Image

    root = Path(root)
    image_files = sorted((root / "images").glob("*.png"))
    if not image_files:
        raise VolumeError(f"{root}: no images/*.png found; point the config's data_dir at the usgra-seg dataset")
    if limit is not None:
        image_files = image_files[:limit]
    ids, images, masks, boxes, native = [], [], [], [], []
    for f in image_files:
        mask_file = root / "masks" / f.name
        if not mask_file.exists():
            raise VolumeError(f"{f}: no matching mask {mask_file}")
        with Image.open(f) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        with Image.open(mask_file) as mm:
            if mm.mode not in ("P", "L"):
                raise VolumeError(f"{mask_file}: expected a palette/index mask, got mode {mm.mode}")
            mask = np.array(mm, dtype=np.uint8)
        if mask.shape != grey.shape:
            raise VolumeError(f"{mask_file}: mask shape {mask.shape} differs from image {grey.shape}")
        if mask.max() > 2:
            raise VolumeError(f"{mask_file}: mask values {np.unique(mask).tolist()} outside 0 (bg), 1 (nerve), 2 (vessel)")
        img_t, box = letterbox(torch.from_numpy(grey)[None, None], size)
        mask_t, _ = letterbox(torch.from_numpy(mask)[None, None], size, mode="nearest")
        ids.append(f.stem)
        images.append(img_t[0])
        masks.append(mask_t[0])
        boxes.append(box)
        native.append(mask)
    return UltrasoundDataset(tuple(ids), torch.stack(images), torch.stack(masks), tuple(boxes), tuple(native))


def grouped_folds(ids: Sequence[str], n_folds: int, group_size: int, seed: int) -> list[list[int]]:
    """Seeded k-fold split that keeps runs of consecutive frame numbers together.

    The dataset records no volunteer or region per frame; frames acquired one after another
    carry consecutive numbers, so blocks of ``group_size`` numbers (``number // group_size``)
    are kept in one fold to limit leakage between neighbouring frames of one scan.
    Returns the held-out indices of each fold.
    """
    groups: dict[int, list[int]] = {}
    for i, frame_id in enumerate(ids):
        try:
            number = int(frame_id)
        except ValueError:
            number = i
        groups.setdefault(number // group_size, []).append(i)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    # greedy balance: next group goes to the currently smallest fold
    for key in keys:
        target = min(range(n_folds), key=lambda k: (len(folds[k]), k))
        folds[target].extend(groups[key])
    return [sorted(f) for f in folds]


# ---------------------------------------------------------------------------- transforms
class RandSpeckled(Randomizable, MapTransform):
    """Multiplicative speckle noise ``x * (1 + sigma * n)``, n ~ N(0, 1), clipped to [0, 1].

    Args:
        keys: image keys.
        prob: chance of applying.
        sigma: (low, high) range the per-sample noise strength is drawn from.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, sigma: tuple[float, float] = (0.05, 0.25)) -> None:
        MapTransform.__init__(self, keys)
        self.prob = prob
        self.sigma = sigma
        self._do = False
        self._sigma = 0.0

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        self._sigma = float(self.R.uniform(*self.sigma))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            noise = torch.from_numpy(self.R.standard_normal(img.shape).astype(np.float32))
            d[key] = (img * (1.0 + self._sigma * noise)).clamp(0.0, 1.0)
        return d


class RandDepthCropd(Randomizable, MapTransform):
    """Simulate a shallower depth setting: drop the bottom rows of the scan, then letterbox again.

    Works on letterboxed ``[1, S, S]`` image/label pairs whose content box is in
    ``data[box_key]`` (a :class:`Letterbox`); the kept part is rescaled to fit the grid as
    the scanner would show it (labels with nearest neighbour).

    Args:
        image_key / label_key / box_key: dictionary keys.
        prob: chance of applying.
        keep: (low, high) fraction of the depth kept.
    """

    def __init__(self, image_key: str, label_key: str, box_key: str, prob: float = 0.3,
                 keep: tuple[float, float] = (0.6, 0.95)) -> None:
        MapTransform.__init__(self, [image_key, label_key])
        self.image_key, self.label_key, self.box_key = image_key, label_key, box_key
        self.prob, self.keep = prob, keep
        self._do, self._keep = False, 1.0

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.rand() < self.prob
        self._keep = float(self.R.uniform(*self.keep))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        box: Letterbox = d[self.box_key]
        ch, cw = box.content_hw
        rows = max(8, int(round(ch * self._keep)))
        size = box.size
        img = torch.as_tensor(d[self.image_key])[None, :, :rows, box.left:box.left + cw]
        lab = torch.as_tensor(d[self.label_key])[None, :, :rows, box.left:box.left + cw]
        img_out, new_box = letterbox(img, size)
        lab_out, _ = letterbox(lab, size, mode="nearest")
        d[self.image_key] = img_out[0]
        d[self.label_key] = lab_out[0]
        d[self.box_key] = new_box
        return d


def train_transforms(seed: int) -> Compose:
    """Augmentations that fit ultrasound: depth crop, small rotation/scale, left-right flip,
    gain, gamma/contrast and speckle. Never up-down flips (the skin line is always on top)."""
    keys = ["image", "label"]
    chain = Compose([
        RandDepthCropd("image", "label", "box", prob=0.3, keep=(0.6, 0.95)),
        RandAffined(keys, prob=0.7, rotate_range=(math.radians(10),), scale_range=(0.1, 0.1),
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandFlipd(keys, prob=0.5, spatial_axis=1),  # [C, H, W]: axis 1 of (H, W) is left-right
        RandScaleIntensityd("image", factors=0.3, prob=0.5),  # gain
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.5),
        RandSpeckled("image", prob=0.5, sigma=(0.05, 0.25)),
    ])
    chain.set_random_state(seed=seed)
    return chain


class _AugmentedFrames(torch.utils.data.Dataset):
    def __init__(self, data: UltrasoundDataset, transform: Callable[[dict], dict]) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.transform({"image": self.data.images[i].clone(), "label": self.data.masks[i].float(),
                            "box": self.data.content[i]})
        image = torch.as_tensor(d["image"]).float().clamp(0.0, 1.0)
        label = torch.as_tensor(d["label"]).round().long()
        return image, label


# ---------------------------------------------------------------------------- network
#: name -> (MONAI class, constructor arguments, how many times it halves the frame): the networks a config may name
NETWORKS: dict[str, tuple[str, dict[str, Any], int]] = {
    "unet": ("monai.networks.nets.UNet", dict(spatial_dims=2, in_channels=1, out_channels=3,
                                              channels=[16, 32, 64, 128, 256], strides=[2, 2, 2, 2],
                                              num_res_units=2, dropout=0.1), 4),
    # one level deeper (bottom 1/32 of the frame): twice the receptive field, for nerves told apart by context
    "unet6": ("monai.networks.nets.UNet", dict(spatial_dims=2, in_channels=1, out_channels=3,
                                               channels=[16, 32, 64, 128, 256, 384], strides=[2, 2, 2, 2, 2],
                                               num_res_units=2, dropout=0.1), 5),
    "basicunet": ("monai.networks.nets.BasicUNet", dict(spatial_dims=2, in_channels=1, out_channels=3,
                                                        features=[16, 16, 32, 64, 128, 16]), 4),  # fixed depth
    "segresnet": ("monai.networks.nets.SegResNet", dict(spatial_dims=2, in_channels=1, out_channels=3,
                                                        init_filters=8), 3),  # default blocks_down (1, 2, 2, 4)
}


def _known_network(name: str) -> tuple[str, dict[str, Any], int]:
    if name not in NETWORKS:
        raise ModelError(f"unknown network {name!r}; use {', '.join(NETWORKS)}")
    return NETWORKS[name]


def grid_halvings(name: str) -> int:
    """How many times the network halves the frame (image sizes must be multiples of 2 to that power)."""
    return _known_network(name)[2]


def make_network(name: str = "unet", **kwargs: Any) -> torch.nn.Module:
    """A small 2D MONAI network of :data:`NETWORKS` ("unet", the default: channels 16..256)."""
    from pydoc import locate  # as the CT networks and bundle loading build theirs

    return locate(network_target(name))(**network_args(name, **kwargs))


def network_target(name: str) -> str:
    """MONAI bundle ``_target_`` for :func:`make_network` names."""
    return _known_network(name)[0]


def network_args(name: str, **kwargs: Any) -> dict[str, Any]:
    """The constructor arguments :func:`make_network` uses (JSON-ready, for inference.json)."""
    net = {k: list(v) if isinstance(v, list) else v for k, v in _known_network(name)[1].items()}
    net.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    return net


# ---------------------------------------------------------------------------- metrics
def dice_per_class(pred: np.ndarray, target: np.ndarray, labels: Iterable[int] = (1, 2)) -> dict[int, float]:
    """Dice of each label between two label maps; NaN where both are empty."""
    out = {}
    for lab in labels:
        p, t = pred == lab, target == lab
        denom = int(p.sum()) + int(t.sum())
        out[lab] = float("nan") if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom
    return out


def frame_dice(probs: torch.Tensor, box: Letterbox, truth: np.ndarray,
               background_scale: float = 1.0) -> tuple[float, float]:
    """Nerve and vessel Dice of one frame on its own pixels.

    ``probs`` ``[3, S, S]`` are model-grid probabilities; they go back onto the frame and are
    decided as :class:`UltrasoundSegmenter` does (:func:`frame_labels`), so the figure is that of
    the labels a user gets (not of the letterboxed grid, whose masks are downsampled).
    """
    d = dice_per_class(frame_labels(probs[None].float(), box, background_scale)[0].numpy(), truth)
    return d[1], d[2]


def bootstrap_ci(values: Sequence[float], seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of ``values`` (NaNs dropped)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


# ---------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    """Training settings (``segmentation/configs/us_nerve.yaml``)."""

    data_dir: str = ""
    image_size: int = 256
    network: str = "unet"
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    class_weights: tuple[float, float, float] = (0.5, 2.0, 2.0)
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    n_folds: int = 3
    group_size: int = 8
    folds_to_run: tuple[int, ...] | None = None
    final_model: bool = True
    seed: int = 20261201
    num_threads: int = 1
    #: worker processes training fold/final models at once (1: one after another, in this process)
    parallel_jobs: int = 1
    precision: str = "fp32"
    limit_frames: int | None = None
    #: let calibration pick left-right flip averaging (doubles inference time)
    allow_flip_tta: bool = False

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        reject_unknown_keys(cls, raw, "training setting(s)", ModelError, allowed=("task", "bundle"))
        values = {k: v for k, v in raw.items() if k in known}
        for key in ("class_weights", "folds_to_run"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        check_precision(cfg.precision, "ultrasound training settings")
        halvings = grid_halvings(cfg.network)  # an unknown name fails here, not after loading the frames
        if cfg.image_size % 2**halvings:
            raise ModelError(f"ultrasound training setting image_size = {cfg.image_size}: network {cfg.network} "
                             f"halves the grid {halvings} times, so give a multiple of {2**halvings}")
        return cfg


def _set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def warmup_cosine(total: int, warmup_fraction: float = 0.05, floor: float = 0.01) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then cosine decay to ``floor``."""
    warmup = max(1, int(round(total * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def train_model(cfg: TrainConfig, train: UltrasoundDataset, seed: int, max_steps: int | None = None,
                desc: str = "train") -> torch.nn.Module:
    """Train one network on ``train`` (DiceCE with class weights, AdamW, cosine schedule)."""
    from monai.losses import DiceCELoss
    from tqdm import tqdm

    _set_seed(seed)
    net = make_network(cfg.network)
    loader = torch.utils.data.DataLoader(
        _AugmentedFrames(train, train_transforms(seed)), batch_size=min(cfg.batch_size, len(train)),
        shuffle=True, drop_last=len(train) > cfg.batch_size, num_workers=0,
        generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = max(1, len(loader))
    total = cfg.epochs * steps_per_epoch if max_steps is None else min(max_steps, cfg.epochs * steps_per_epoch)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, squared_pred=False,
                         weight=torch.tensor(cfg.class_weights, dtype=torch.float32),
                         lambda_dice=cfg.lambda_dice, lambda_ce=cfg.lambda_ce)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total))
    net.train()
    step = 0
    bar = tqdm(total=total, desc=desc, unit="step", mininterval=5.0, disable=total < 10)
    running = 0.0
    while step < total:
        for image, label in loader:
            with training_autocast(cfg.precision):
                logits = net(image)
            loss = loss_fn(logits.float(), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running = 0.9 * running + 0.1 * loss.item() if step > 1 else loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)
            if step >= total:
                break
    bar.close()
    net.eval()
    return net


@torch.no_grad()
def predict_probabilities(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Softmax ``[N, 3, S, S]`` for letterboxed ``[N, 1, S, S]`` images in [0, 1]."""
    net.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        out.append(torch.softmax(net(images[start:start + batch_size].float()), dim=1))
    return torch.cat(out) if out else torch.zeros((0, 3) + tuple(images.shape[2:]))


def _train_job(cfg: TrainConfig, train_idx: Sequence[int], seed: int, max_steps: int | None, desc: str,
               state_path: str) -> float:
    """Train one network on the frames ``train_idx`` and save its weights; returns seconds taken.

    Loads the frames itself so that it runs unchanged in a worker process.
    """
    torch.set_num_threads(max(1, int(cfg.num_threads)))
    t0 = time.time()
    data = load_dataset(cfg.data_dir, cfg.image_size, limit=cfg.limit_frames)
    net = train_model(cfg, data.subset(list(train_idx)), seed=seed, max_steps=max_steps, desc=desc)
    torch.save(net.state_dict(), state_path)
    return round(time.time() - t0, 1)


def _load_state(cfg: TrainConfig, state_path: Path) -> torch.nn.Module:
    """The network of ``cfg`` with the weights a training run saved in ``state_path``, in eval mode."""
    net = make_network(cfg.network)
    net.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return net.eval()


def run_training(cfg: TrainConfig, out_dir: str | Path, max_steps: int | None = None) -> dict[str, Any]:
    """Cross-validate, then train the shipped model; writes ``out_dir`` and returns a summary.

    Writes ``cv_predictions.npz`` (held-out label maps at the model grid, the true masks, ids,
    fold of each frame), ``cv_metrics.json`` (per-frame Dice on the frame's own pixels, see
    :func:`frame_dice`; mean and 95% bootstrap intervals), ``fold{k}_state.pt`` per fold (both rewritten after every fold) and
    ``final_state.pt`` (weights trained on all frames, when ``final_model``).

    With ``parallel_jobs`` > 1 the fold and final models train in that many worker processes
    (``num_threads`` each); every model has its own seed, so the weights do not depend on it.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, int(cfg.num_threads)))
    t0 = time.time()
    data = load_dataset(cfg.data_dir, cfg.image_size, limit=cfg.limit_frames)
    folds = grouped_folds(data.ids, cfg.n_folds, cfg.group_size, cfg.seed)
    fold_of = np.full(len(data), -1, dtype=np.int16)
    preds = np.zeros((len(data), cfg.image_size, cfg.image_size), dtype=np.uint8)
    per_frame: list[dict[str, Any]] = []
    run_folds = range(cfg.n_folds) if cfg.folds_to_run is None else cfg.folds_to_run
    summary: dict[str, Any] = {"config": dict(cfg.__dict__), "folds": folds, "fold_seconds": {},
                               "per_frame": per_frame}
    # job name -> (training frames, seed); folds first, so their held-out figures arrive early
    jobs: dict[str, tuple[list[int], int]] = {
        f"fold{k}": ([i for f, idx in enumerate(folds) if f != k for i in idx], cfg.seed + k) for k in run_folds}
    if cfg.final_model:
        jobs["final"] = (list(range(len(data))), cfg.seed + 1000)
    position = {frame_id: i for i, frame_id in enumerate(data.ids)}

    def record_fold(k: int, seconds: float) -> None:
        held = folds[k]
        net = _load_state(cfg, out / f"fold{k}_state.pt")
        probs = predict_probabilities(net, data.images[held])
        summary["fold_seconds"][k] = seconds
        for j, i in enumerate(held):
            preds[i] = probs[j].argmax(0).numpy().astype(np.uint8)
            fold_of[i] = k
            nerve, vessel = frame_dice(probs[j], data.content[i], data.native_masks[i])
            per_frame.append({"id": data.ids[i], "fold": k, "dice_nerve": nerve, "dice_vessel": vessel})
        per_frame.sort(key=lambda r: (r["fold"], position[r["id"]]))  # folds may finish in any order
        nerve = [r["dice_nerve"] for r in per_frame if r["fold"] == k]
        vessel = [r["dice_vessel"] for r in per_frame if r["fold"] == k]
        print(f"fold {k}: nerve Dice {np.nanmean(nerve):.3f}  vessel Dice {np.nanmean(vessel):.3f}  "
              f"({seconds:.0f} s)", flush=True)
        for name in ("nerve", "vessel"):
            mean, lo, hi = bootstrap_ci([r[f"dice_{name}"] for r in per_frame], seed=cfg.seed)
            summary[f"dice_{name}"] = {"mean": mean, "ci95": [lo, hi], "n": int(
                np.isfinite([r[f"dice_{name}"] for r in per_frame]).sum())}
        # written after every fold, so a cut-short run still leaves its held-out predictions
        np.savez_compressed(out / "cv_predictions.npz", ids=np.array(data.ids), fold=fold_of, pred=preds,
                            truth=data.masks[:, 0].numpy())
        summary["total_seconds"] = round(time.time() - t0, 1)
        (out / "cv_metrics.json").write_text(json.dumps(summary, indent=1, default=str))

    def record(name: str, seconds: float) -> None:
        if name == "final":
            summary["final_seconds"] = seconds
            print(f"final model trained on {len(data)} frames ({seconds:.0f} s)", flush=True)
        else:
            record_fold(int(name.removeprefix("fold")), seconds)

    def job_args(name: str) -> tuple[Any, ...]:
        train_idx, seed = jobs[name]
        desc = "final" if name == "final" else f"fold {name.removeprefix('fold')}"
        return cfg, train_idx, seed, max_steps, desc, str(out / f"{name}_state.pt")

    if cfg.parallel_jobs <= 1:
        for name in jobs:
            record(name, _train_job(*job_args(name)))
    else:
        with ProcessPoolExecutor(max_workers=int(cfg.parallel_jobs), mp_context=get_context("spawn")) as pool:
            # the final model (most frames, longest) starts first, so it does not run alone at the end
            longest_first = sorted(jobs, key=lambda name: name != "final")
            pending = {pool.submit(_train_job, *job_args(name)): name for name in longest_first}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record(pending.pop(future), future.result())
    summary["total_seconds"] = round(time.time() - t0, 1)
    (out / "cv_metrics.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


# ---------------------------------------------------------------------------- inference
def smooth_temporal(probs: torch.Tensor, window: int) -> torch.Tensor:
    """Centred moving average of ``[N, C, H, W]`` probabilities over ``window`` frames (odd)."""
    if window <= 1 or probs.shape[0] < 2:
        return probs
    if window % 2 == 0:
        raise VolumeError(f"temporal smoothing window must be odd, got {window}")
    half = window // 2
    n = probs.shape[0]
    csum = torch.cat([torch.zeros_like(probs[:1]), probs.cumsum(0)])
    lo = torch.clamp(torch.arange(n) - half, 0, n)
    hi = torch.clamp(torch.arange(n) + half + 1, 0, n)
    counts = (hi - lo).to(probs.dtype).view(-1, 1, 1, 1)
    return (csum[hi] - csum[lo]) / counts


def probabilities(net: torch.nn.Module, images: torch.Tensor, flip_tta: bool = False) -> torch.Tensor:
    """Softmax of letterboxed ``[N, 1, S, S]`` images; with ``flip_tta`` averaged with the
    left-right mirrored prediction (the only flip that fits ultrasound)."""
    p = torch.softmax(net(images), dim=1)
    if flip_tta:
        p = 0.5 * (p + torch.softmax(net(images.flip(-1)), dim=1).flip(-1))
    return p


def decide(probs: torch.Tensor, background_scale: float = 1.0) -> torch.Tensor:
    """Channel labels from ``[N, 3, H, W]`` probabilities; ``background_scale`` > 1 makes the
    model more conservative (it weights the background probability before the argmax)."""
    if background_scale != 1.0:
        probs = probs.clone()
        probs[:, 0] *= background_scale
    return probs.argmax(1)


def frame_labels(probs: torch.Tensor, box: Letterbox, background_scale: float = 1.0) -> torch.Tensor:
    """Channel labels ``[N, H, W]`` on the frames' own pixels from model-grid ``[N, 3, S, S]`` probabilities."""
    return decide(unletterbox(probs, box), background_scale)


class UltrasoundSegmenter:
    """Run a trained network on frames of any size; returns channel label maps on the frame grid.

    Args:
        network: the trained network (eval mode is set here).
        image_size: the model grid frames are letterboxed onto.
        batch_size: frames per forward pass.
        background_scale / flip_tta: post-processing chosen by cross-validation (see
            :func:`calibrate`), stored in the bundle metadata.
    """

    def __init__(self, network: torch.nn.Module, image_size: int = 256, batch_size: int = 16,
                 background_scale: float = 1.0, flip_tta: bool = False) -> None:
        self.network = network.eval()
        self.image_size = image_size
        self.batch_size = batch_size
        self.background_scale = background_scale
        self.flip_tta = flip_tta

    @torch.inference_mode()
    def predict(self, frames: np.ndarray, smooth_window: int = 1, progress: bool = False) -> np.ndarray:
        """``[N, H, W]`` (or ``[N, H, W, 3]``) frames -> ``[N, H, W]`` uint8 channel labels (0, 1, 2).

        Args:
            frames: uint8 greyscale or RGB frames (16-bit is rescaled by its maximum).
            smooth_window: odd number of frames for a centred moving average of the class
                probabilities (cine loops); 1 is off.
            progress: show a tqdm bar over batches.
        """
        from tqdm import tqdm

        grey = to_greyscale(frames)
        n, h, w = grey.shape
        if n == 0 or h < 8 or w < 8:
            raise VolumeError(f"image of shape {grey.shape} is empty or too small to segment (need >= 8x8 pixels)")
        x, box = letterbox(torch.from_numpy(grey)[:, None], self.image_size)
        batches = range(0, n, self.batch_size)
        probs = []
        for start in tqdm(batches, desc="segment", unit="batch", disable=not progress or len(batches) < 2):
            probs.append(probabilities(self.network, x[start:start + self.batch_size], self.flip_tta))
        p = smooth_temporal(torch.cat(probs), smooth_window)
        out = np.empty((n, h, w), dtype=np.uint8)
        for start in range(0, n, self.batch_size):
            out[start:start + self.batch_size] = frame_labels(p[start:start + self.batch_size], box,
                                                              self.background_scale).numpy()
        return out


# ---------------------------------------------------------------------------- calibration
BACKGROUND_SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def calibrate(cfg: TrainConfig, run_dir: str | Path, scales: Sequence[float] = BACKGROUND_SCALES) -> dict[str, Any]:
    """Choose the post-processing (background scale, flip averaging) by nested cross-validation.

    For every fold k, the saved fold model predicts its held-out frames; the setting that
    maximises mean nerve+vessel Dice on the *other* folds' held-out frames is applied to
    fold k, so each reported Dice comes from a setting chosen without that frame. The
    shipped setting is the best over all held-out frames. Updates ``cv_metrics.json``
    (per-frame Dice on the frame's own pixels after post-processing, the plain-argmax Dice as
    ``*_raw``).
    """
    run = Path(run_dir)
    torch.set_num_threads(max(1, int(cfg.num_threads)))
    summary = json.loads((run / "cv_metrics.json").read_text())
    data = load_dataset(cfg.data_dir, cfg.image_size, limit=cfg.limit_frames)
    folds = summary["folds"]
    done = sorted({int(r["fold"]) for r in summary["per_frame"]})
    flips = (False, True) if cfg.allow_flip_tta else (False,)
    scales = sorted({1.0, *scales})  # 1.0 without flips is the plain argmax, reported as *_raw
    settings = [(s, t) for t in flips for s in scales]
    raw = (1.0, False)
    # dice[setting][frame] = (nerve, vessel)
    dice: dict[tuple[float, bool], dict[int, tuple[float, float]]] = {st: {} for st in settings}
    for k in done:
        net = _load_state(cfg, run / f"fold{k}_state.pt")
        held = folds[k]
        with torch.inference_mode():
            for tta in flips:
                probs = torch.cat([probabilities(net, data.images[held[i:i + 16]], tta)
                                   for i in range(0, len(held), 16)])
                for scale in scales:
                    for j, i in enumerate(held):
                        dice[(scale, tta)][i] = frame_dice(probs[j], data.content[i], data.native_masks[i], scale)

    def score(st: tuple[float, bool], frames: Iterable[int]) -> float:
        vals = [v for i in frames for v in dice[st][i] if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    chosen = {}
    for k in done:
        others = [i for f in done if f != k for i in folds[f]] or folds[k]
        chosen[k] = max(settings, key=lambda st: (score(st, others), -st[0], not st[1]))
    for r in summary["per_frame"]:
        i = data.ids.index(r["id"])
        st = chosen[int(r["fold"])]
        r["dice_nerve_raw"], r["dice_vessel_raw"] = dice[raw][i]
        r["dice_nerve"], r["dice_vessel"] = dice[st][i]
    all_held = [i for f in done for i in folds[f]]
    best = max(settings, key=lambda st: (score(st, all_held), -st[0], not st[1]))
    summary["postprocessing"] = {
        "background_scale": best[0], "flip_tta": best[1],
        "chosen_per_fold": {str(k): {"background_scale": v[0], "flip_tta": v[1]} for k, v in chosen.items()},
        "mean_dice_by_setting": {f"scale={s},flip_tta={t}": round(score((s, t), all_held), 4) for s, t in settings},
    }
    for name in ("nerve", "vessel"):
        for suffix in ("", "_raw"):
            values = [r[f"dice_{name}{suffix}"] for r in summary["per_frame"]]
            mean, lo, hi = bootstrap_ci(values, seed=cfg.seed)
            summary[f"dice_{name}{suffix}"] = {"mean": mean, "ci95": [lo, hi], "n": int(np.isfinite(values).sum())}
    (run / "cv_metrics.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


# ---------------------------------------------------------------------------- bundle
#: bundle versions, newest first (the first key is the version written); each says what it gained
BUNDLE_CHANGELOG: dict[str, str] = {
    "0.4.0": "224 px model grid instead of 256 (as accurate in fold probes, 0.77x the step time, faster "
             "inference) and 260 epochs instead of 150; Dice now measured on each frame's own pixels: "
             "cross-validated nerve Dice 0.656 -> 0.666, vessel 0.697 -> 0.699 (within the 95% intervals)",
    "0.3.0": "5-fold cross-validation (4/5 of the frames per fold model), 150 epochs instead of 100: "
             "cross-validated nerve Dice 0.629 (3-fold, 100 epochs) -> 0.658, vessel 0.663 -> 0.699",
    "0.2.0": "100 epochs instead of 20 (bfloat16 training): cross-validated nerve Dice 0.50 -> 0.63",
    "0.1.0": "first model: UNet trained on the usgra-seg frames",
}
#: assumed pixel spacing of the training frames (no spacing stored: ~40 mm depth over 512 rows)
TRAINING_PIXEL_MM = 0.08
#: per-frame held-out Dice of the cross-validation, in the bundle's docs/ folder
CV_RESULTS = "cross_validation.json"


def write_us_bundle(bundle_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, name: str = "us_nerve_seg",
                    weights: str = "final") -> Any:
    """Package a training run's weights and cross-validation metrics as a MONAI bundle.

    Args:
        weights: "final" (``final_state.pt``, all frames) or "fold<k>" (``fold<k>_state.pt``,
            the model of fold k, trained without that fold's frames).
    """
    from segmentation.bundle import write_bundle

    run = Path(run_dir)
    state_file = run / f"{weights}_state.pt"
    if not state_file.is_file():
        raise ModelError(f"{state_file}: no such weights in the training run (weights={weights!r})")
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    summary = json.loads((run / "cv_metrics.json").read_text()) if (run / "cv_metrics.json").exists() else {}
    summary["shipped_weights"] = weights
    metrics = {k: summary[k] for k in ("dice_nerve", "dice_vessel") if k in summary}
    size = cfg.image_size
    metadata = {
        "name": name,
        "version": next(iter(BUNDLE_CHANGELOG)),
        "changelog": dict(BUNDLE_CHANGELOG),
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {},
        "required_packages_version": {},
        "task": "Ultrasound nerve (brachial plexus / peripheral nerve) and blood vessel segmentation",
        "description": "2D UNet for regional-anaesthesia ultrasound frames; frames are letterboxed to "
                       f"{size}x{size} (aspect kept, top-aligned, zero padded), intensities scaled to [0, 1].",
        "authors": "plexus-planner developers",
        "copyright": "Apache-2.0 (code and weights); training data CC BY 4.0 (usgra-seg)",
        "data_source": "usgra-seg dataset (GitHub tmkand/usgra-seg, dataset/, commit 66dc77df), CC BY 4.0",
        "data_type": "png",
        "image_classes": "single-channel greyscale B-mode ultrasound, [0, 1]",
        "label_classes": "0 background, 1 nerve, 2 blood vessel",
        "pred_classes": "channel 0 background, 1 nerve (brachial_plexus), 2 blood vessel (blood_vessel)",
        "eval_metrics": {f"cv_{k}_mean": v["mean"] for k, v in metrics.items()},
        "intended_use": "Research and education only; not a medical device and not for clinical decisions.",
        "references": ["usgra-seg: ultrasound-guided regional anaesthesia segmentation dataset "
                       "(GitHub tmkand/usgra-seg), CC BY 4.0"],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "US", "num_channels": 1,
                                 "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                                 "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False,
                                 "channel_def": {"0": "background", "1": "nerve", "2": "blood vessel"}}},
        },
        "plexus_planner": {
            "modality": "US",
            "image_size": size,
            "channel_vocabulary": {str(k): v for k, v in CHANNEL_NAMES.items() if k},
            "pixel_spacing_mm": TRAINING_PIXEL_MM,
            "postprocessing": {k: summary["postprocessing"][k] for k in ("background_scale", "flip_tta")}
            if "postprocessing" in summary else {"background_scale": 1.0, "flip_tta": False},
            "cross_validation": {**metrics, "n_folds": cfg.n_folds, "group_size": cfg.group_size,
                                 "seed": cfg.seed},
            "training": {k: v for k, v in summary.get("config", dict(cfg.__dict__)).items() if k != "data_dir"},
        },
    }
    network_def = {"_target_": network_target(cfg.network), **network_args(cfg.network)}
    inference_extra = {"image_size": size, "preprocessing": "letterbox (top-aligned, centred, zero pad), /255",
                       "postprocessing": "softmax, optional temporal moving average, argmax on the frame grid"}
    return write_bundle(bundle_dir, state_dict=state, network_def=network_def, metadata=metadata,
                        model_card=model_card(metrics, summary, cfg), inference_extra=inference_extra,
                        extra_docs={CV_RESULTS: json.dumps(
                            {"folds": summary.get("folds", []), "per_frame": summary.get("per_frame", []),
                             "fold_seconds": summary.get("fold_seconds", {}),
                             "final_seconds": summary.get("final_seconds")}, indent=1) + "\n"})


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def shipped_text(summary: Mapping[str, Any]) -> str:
    """Which weights a bundle ships, in words for the model card."""
    weights = summary.get("shipped_weights", "final")
    if weights == "final":
        return "The shipped weights were trained on all frames with the same recipe."
    k = int(str(weights).removeprefix("fold"))
    fold = summary.get("folds", [[]] * (k + 1))[k]
    return (f"The shipped weights are the cross-validation model of fold {k} (trained on the other folds, "
            f"{len(fold)} frames held out), the fold with the best held-out nerve Dice; an all-frames "
            "model did not finish within this session's CPU budget.")


def wall_text(summary: Mapping[str, Any]) -> str:
    """Training time in words for the model card (per model, and in all when models trained at once)."""
    folds = summary.get("fold_seconds", {})
    parts = [f"{len(folds)} folds {sum(float(v) for v in folds.values()) / 60:.0f} min"] if folds else []
    if summary.get("final_seconds"):
        parts.append(f"all-frames model {float(summary['final_seconds']) / 60:.0f} min")
    if not parts:
        return "training time not recorded"
    jobs = int(summary.get("config", {}).get("parallel_jobs", 1))
    together = (f"; {jobs} models trained at once, {float(summary['total_seconds']) / 60:.0f} min in all"
                if jobs > 1 and summary.get("total_seconds") else "")
    return "training time " + ", ".join(parts) + together + " on a shared 2-core machine"


def aim_text(metrics: Mapping[str, Any]) -> str:
    """One honest line on the project's accuracy aim (nerve Dice >= 0.70)."""
    m = metrics.get("dice_nerve")
    if not m:
        return ""
    if m["mean"] >= 0.70:
        return f"\nThe project's aim of a cross-validated nerve Dice of at least 0.70 is met ({m['mean']:.3f}).\n"
    return (f"\n**The project's aim of a cross-validated nerve Dice of at least 0.70 is not met** "
            f"({m['mean']:.3f}). Training was limited to the CPU budget of a 2-core machine (times "
            "above). What each version gained:\n\n"
            + "".join(f"- {version}: {text}\n" for version, text in BUNDLE_CHANGELOG.items())
            + "\nLonger training and more training frames per model gave every gain so far, so a longer "
            "run (a GPU) is the first thing to try, then more data (other volunteers, probes).\n")


def post_text(summary: Mapping[str, Any]) -> str:
    """Model-card paragraph on the post-processing and the plain-argmax Dice."""
    post = summary.get("postprocessing")
    if not post:
        return "Predictions are the plain argmax of the softmax (no post-processing)."
    raw = []
    for name in ("nerve", "vessel"):
        m = summary.get(f"dice_{name}_raw")
        if m:
            raw.append(f"{name} {m['mean']:.3f} ({m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})")
    return (f"Post-processing, chosen by nested cross-validation (for each fold the setting that was best on "
            f"the other folds' held-out frames; the table uses those per-fold choices): background "
            f"probability weighted by {post['background_scale']} before the argmax, left-right flip "
            f"averaging {'on' if post['flip_tta'] else 'off'}. Plain argmax without post-processing: "
            + ", ".join(raw) + ".")


def model_card(metrics: Mapping[str, Any], summary: Mapping[str, Any], cfg: TrainConfig) -> str:
    """The bundle's ``docs/README.md``: data, split, metrics with intervals, limitations."""
    def line(name: str, key: str) -> str:
        m = metrics.get(key)
        if not m:
            return f"| {name} | not measured | |"
        return f"| {name} | {m['mean']:.3f} | {m['ci95'][0]:.3f} - {m['ci95'][1]:.3f} | {m['n']} |"

    folds = summary.get("fold_seconds", {})
    return f"""# us_nerve_seg: ultrasound nerve and blood-vessel segmentation

**Research and education software, not a medical device.** Do not use it to guide a needle,
choose a procedure or make any clinical decision.

## What it does
Segments the nerve (vocabulary `brachial_plexus`, "Brachial plexus / peripheral nerve") and
blood vessels (`blood_vessel`) in 2D B-mode ultrasound frames. A MONAI `UNet` (channels
16-32-64-128-256, strides 2, two residual units per level) sees the frame
letterboxed to {cfg.image_size}x{cfg.image_size} (aspect kept, top-aligned, zero padded,
greyscale /255); the softmax is mapped back onto the original frame grid, so outputs keep the
input's pixel calibration. Cine loops can be smoothed over time (`--smooth N` frames).

## Training data
The **usgra-seg** dataset (GitHub `tmkand/usgra-seg`, `dataset/`, commit 66dc77df),
licensed **CC BY 4.0**: 204 frames from volunteers, Mindray TE7 with an L14-6Ns linear
probe, five regions (supraclavicular/interscalene brachial plexus, infraclavicular/axillary,
elbow, femoral, popliteal sciatic), nerves and vessels hand-drawn in LabelMe. Please cite the
usgra-seg dataset when using this model. The images are not redistributed here.

## Training
`plexplan train segmentation/configs/us_nerve.yaml` (seed {cfg.seed}, {cfg.num_threads} CPU
thread(s), {cfg.precision} forward pass; {wall_text(summary)}): DiceCE loss (Dice over nerve and vessel, cross-entropy class weights
{list(cfg.class_weights)}), AdamW lr {cfg.lr} weight decay {cfg.weight_decay}, cosine schedule
after a 5% warm-up, {cfg.epochs} epochs, batch {cfg.batch_size}. Augmentations chosen for
ultrasound: depth cropping (bottom rows dropped, then re-letterboxed), rotation within
+/-10 degrees, scaling 0.9-1.1, left-right flips only (never up-down), gain (+/-30%), gamma
0.7-1.5, multiplicative speckle noise. {shipped_text(summary)} Weights are stored as float16.

## Evaluation: {cfg.n_folds}-fold cross-validation
The dataset records no volunteer or region per frame, so the split cannot be grouped by
volunteer. Frames acquired one after another carry consecutive numbers, so blocks of
{cfg.group_size} consecutive frame numbers were kept within one fold (seeded shuffle of the
blocks, seed {cfg.seed}) to limit leakage between neighbouring frames of one scan. Frames of
one volunteer may still sit in training and test folds, so these figures are likely
optimistic for a new patient. Dice is computed per held-out frame on the frame's own pixels
(the labels mapped back from the {cfg.image_size}x{cfg.image_size} model grid, as at inference,
against the hand-drawn mask); frames where the structure is absent in both truth and
prediction are left out; intervals are 95% percentile bootstrap over frames.

| structure | mean Dice | 95% CI | frames |
|---|---|---|---|
{line("nerve", "dice_nerve")}
{line("blood vessel", "dice_vessel")}

{post_text(summary)}
{aim_text(metrics)}
Folds run: {len(folds)} of {cfg.n_folds}.

## Limitations
- One scanner and probe (Mindray TE7, L14-6Ns linear), healthy volunteers, five regions,
  204 frames: expect lower accuracy on other probes (curvilinear, other vendors), patients,
  tumour-distorted anatomy and other blocks. It runs on other devices' images without
  error, but its accuracy there is unmeasured.
- No pixel spacing is stored in the training data; about {TRAINING_PIXEL_MM} mm/px
  (40 mm depth over 512 rows) is assumed. Areas on outputs use the input's own calibration
  (DICOM ultrasound regions or `--spacing`), never this assumption.
- "Nerve" merges brachial plexus, median/ulnar/radial, femoral and sciatic nerves into one class;
  "vessel" merges arteries and veins (no Doppler).
- A single frame per decision: no tracking beyond the optional moving average.
"""


# ---------------------------------------------------------------------------- segment
def segment_volume(volume: Any, bundle: Any, smooth_window: int = 1, batch_size: int = 16,
                   progress: bool = True) -> Any:
    """Segment every frame of an ultrasound ``Volume`` ``[frames, rows, columns]`` with ``bundle``.

    Returns a label ``Volume`` on the same grid (same calibration) holding anatomy
    vocabulary labels (``brachial_plexus``, ``blood_vessel``), 0 elsewhere.
    """
    from planner.anatomy import label_of

    if volume.array.size == 0:
        raise VolumeError("the image has no pixels; nothing to segment")
    frames = np.asarray(volume.array)
    if not np.isfinite(frames).all() or float(frames.max()) == float(frames.min()):
        raise VolumeError(f"the image is blank (every pixel is {float(frames.flat[0]):g}); nothing to segment")
    post = bundle.ours.get("postprocessing", {})
    segmenter = UltrasoundSegmenter(bundle.load_network(), image_size=bundle.image_size, batch_size=batch_size,
                                    background_scale=float(post.get("background_scale", 1.0)),
                                    flip_tta=bool(post.get("flip_tta", False)))
    channels = segmenter.predict(frames, smooth_window=smooth_window, progress=progress)
    lookup = np.zeros(max(CHANNEL_NAMES) + 1, dtype=np.uint16)
    for channel, name in bundle.channel_vocabulary.items():
        lookup[channel] = label_of(name)
    labels = lookup[channels]
    return volume.with_array(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))

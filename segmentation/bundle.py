"""MONAI bundles: write and load ``configs/metadata.json``, ``configs/inference.json``,
``models/model.pt`` and ``docs/README.md`` (the model card).

Reading the metadata (:func:`read_bundle`) needs no torch, so a command can pick the right
pipeline from ``Bundle.modality`` before anything heavy loads. The weights load only after
their sha256 matches the one recorded in ``metadata.json`` and only as plain tensors
(``torch.load(..., weights_only=True)``); the network class must be one of MONAI's, or one of ours
built from MONAI parts (``ALLOWED_TARGETS``).

Our own fields sit in ``metadata["plexus_planner"]``: ``modality``, ``model_sha256``,
``image_size``, ``channel_vocabulary`` (output channel -> anatomy vocabulary name) and
``pixel_spacing_mm`` (the spacing the training frames were assumed to have).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from planner.errors import ModelError
from planner.volume import atomic_output

if TYPE_CHECKING:  # pragma: no cover
    import torch

METADATA = Path("configs") / "metadata.json"
INFERENCE = Path("configs") / "inference.json"
WEIGHTS = Path("models") / "model.pt"
MODEL_CARD = Path("docs") / "README.md"
#: network classes a bundle may name (never an arbitrary callable from a config file)
ALLOWED_TARGETS = (
    "monai.networks.nets.UNet",
    "monai.networks.nets.BasicUNet",
    "monai.networks.nets.SegResNet",
    "monai.networks.nets.SwinUNETR",
    "monai.networks.nets.DynUNet",
    "segmentation.networks.UNetWithFineHead",
)
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A bundle folder with its parsed metadata and inference config (weights not loaded)."""

    root: Path
    metadata: dict[str, Any]
    inference: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.root.name))

    @property
    def ours(self) -> dict[str, Any]:
        return dict(self.metadata.get("plexus_planner", {}))

    @property
    def is_foreign(self) -> bool:
        """True for a MONAI bundle from elsewhere (no ``plexus_planner`` section, e.g. the Model Zoo)."""
        return "plexus_planner" not in self.metadata

    @property
    def modality(self) -> str:
        if self.is_foreign:
            image = self.metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
            return str(image.get("modality", "")).upper() if isinstance(image, Mapping) else ""
        return str(self.ours.get("modality", "")).upper()

    @property
    def label_names(self) -> dict[int, str]:
        """Output channel -> label name from ``network_data_format.outputs.pred.channel_def`` (MONAI spec)."""
        pred = self.metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
        names = pred.get("channel_def", pred.get("label_def", {})) if isinstance(pred, Mapping) else {}
        try:
            return {int(k): str(v) for k, v in dict(names).items()}
        except (TypeError, ValueError):
            raise ModelError(f"{self.root / METADATA}: network_data_format.outputs.pred.channel_def must map "
                             f"channel numbers to label names") from None

    @property
    def unmapped_labels(self) -> list[str]:
        """Label names of a foreign bundle that are not in the anatomy vocabulary (left as background)."""
        from planner.anatomy import from_external_name

        return sorted(n for k, n in self.label_names.items()
                      if k and n.lower() != "background" and from_external_name(n) is None)

    @property
    def image_size(self) -> int:
        return int(self.ours.get("image_size", 256))

    @property
    def channel_vocabulary(self) -> dict[int, str]:
        """Output channel -> anatomy vocabulary name (background excluded).

        A foreign bundle's label names are mapped through the vocabulary's external names
        (TotalSegmentator v1/v2 names, which MONAI's wholeBody_ct_segmentation uses).
        """
        if self.is_foreign:
            from planner.anatomy import from_external_name

            found = {k: from_external_name(n) for k, n in self.label_names.items() if k}
            return {k: s.name for k, s in found.items() if s is not None}
        return {int(k): str(v) for k, v in self.ours.get("channel_vocabulary", {}).items()}

    @property
    def weights_path(self) -> Path:
        return self.root / WEIGHTS

    def verify_weights(self, expected_sha256: str | None = None) -> None:
        """Raise :class:`ModelError` unless ``models/model.pt`` matches the recorded sha256.

        ``expected_sha256`` (e.g. the publisher's figure for a foreign bundle, whose metadata
        records none) takes precedence over the metadata.
        """
        expected = expected_sha256 or self.ours.get("model_sha256")
        if not expected and self.is_foreign and self.weights_path.is_file():
            raise ModelError(f"{self.root}: a MONAI bundle from elsewhere records no weights checksum; check "
                             f"models/model.pt against its publisher and pass --model-sha256 "
                             f"{sha256_of(self.weights_path)} to use it")
        if not expected:
            raise ModelError(f"{self.root / METADATA}: no plexus_planner.model_sha256; the bundle cannot be verified")
        if not self.weights_path.is_file():
            raise ModelError(f"{self.weights_path}: model weights missing; reinstall or re-download the bundle")
        actual = sha256_of(self.weights_path)
        if actual != expected:
            raise ModelError(f"{self.weights_path}: sha256 {actual[:12]}... does not match metadata "
                             f"{str(expected)[:12]}...; the weights are corrupt or from another model")

    def load_network(self, expected_sha256: str | None = None) -> "torch.nn.Module":
        """Build the network named in ``inference.json`` and load the verified weights (eval mode)."""
        import torch
        from pydoc import locate

        self.verify_weights(expected_sha256)
        spec = dict(self.inference.get("network_def", {}))
        target = spec.pop("_target_", None)
        if isinstance(target, str) and "." not in target:  # MONAI configs may name "SegResNet"
            target = "monai.networks.nets." + target
        expressions = [k for k, v in spec.items() if isinstance(v, str) and v[:1] in ("$", "@", "%")]
        if expressions:
            raise ModelError(f"{self.root / INFERENCE}: network_def arguments {expressions} are expressions; "
                             f"only literal values are accepted")
        if target not in ALLOWED_TARGETS:
            raise ModelError(f"{self.root / INFERENCE}: network_def._target_ {target!r} is not an allowed "
                             f"network ({', '.join(ALLOWED_TARGETS)})")
        try:
            network = locate(target)(**spec)
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "state_dict" in state:
                state = state["state_dict"]
            network.load_state_dict({k: v.float() for k, v in state.items()})
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.weights_path}: weights do not fit {target} ({first})") from None
        return network.eval()


def read_bundle(path: str | Path, allow_foreign: bool = False) -> Bundle:
    """Parse a bundle folder's configs (no torch). Raises :class:`ModelError` when malformed.

    ``allow_foreign`` accepts a MONAI bundle without our ``plexus_planner`` section when its
    metadata names its output labels (``network_data_format.outputs.pred.channel_def``).
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelError(f"{root}: model bundle folder not found")
    parsed = []
    for rel in (METADATA, INFERENCE):
        f = root / rel
        try:
            parsed.append(json.loads(f.read_text()))
        except FileNotFoundError:
            raise ModelError(f"{f}: missing; a MONAI bundle needs configs/metadata.json and configs/inference.json") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{f}: not valid JSON ({exc})") from None
    metadata, inference = parsed
    if allow_foreign and isinstance(metadata, dict) and "plexus_planner" not in metadata:
        bundle = Bundle(root, metadata, inference if isinstance(inference, dict) else {})
        if not any(k for k in bundle.label_names):
            raise ModelError(f"{root / METADATA}: the bundle names no output labels "
                             f"(network_data_format.outputs.pred.channel_def); cannot map its output to anatomy")
        return bundle
    if not isinstance(metadata, dict) or "plexus_planner" not in metadata:
        raise ModelError(f"{root / METADATA}: no plexus_planner section (modality, model_sha256); not a plexus-planner bundle")
    return Bundle(root, metadata, inference)


def default_bundle_path(name: str) -> Path:
    """The shipped bundle ``name`` inside the installed ``models/`` folder."""
    from planner.resources import models_dir

    return models_dir() / name


def write_bundle(root: str | Path, *, state_dict: Mapping[str, Any], network_def: Mapping[str, Any],
                 metadata: Mapping[str, Any], model_card: str, inference_extra: Mapping[str, Any] | None = None,
                 half: bool = True, extra_docs: Mapping[str, str] | None = None) -> Bundle:
    """Write a bundle folder (each file atomically) and return it read back.

    Args:
        state_dict: network weights; stored as float16 when ``half`` (smaller file, cast back
            to float32 on load).
        network_def: ``{"_target_": one of ALLOWED_TARGETS, **constructor arguments}``.
        metadata: MONAI metadata; must contain ``plexus_planner`` with at least ``modality``.
            ``model_sha256`` is filled in here.
        model_card: Markdown text for ``docs/README.md``.
        extra_docs: more ``docs/`` files, name -> text (e.g. per-frame evaluation results).
    """
    import torch

    out = Path(root)
    if network_def.get("_target_") not in ALLOWED_TARGETS:
        raise ModelError(f"network_def._target_ {network_def.get('_target_')!r} is not an allowed network")
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().contiguous()
               for k, v in state_dict.items()}
    buffer = io.BytesIO()  # not the temporary file: torch.save names the archive after it, so the sha256 would vary
    torch.save(tensors, buffer)
    with atomic_output(out / WEIGHTS) as tmp:
        tmp.write_bytes(buffer.getvalue())
    (out / WEIGHTS).chmod(0o644)
    meta = json.loads(json.dumps(dict(metadata)))
    meta.setdefault("schema", META_SCHEMA)
    meta["plexus_planner"] = {**meta.get("plexus_planner", {}), "model_sha256": sha256_of(out / WEIGHTS)}
    inference = {"imports": ["$import torch"], "bundle_root": ".", "device": "$torch.device('cpu')",
                 "network_def": dict(network_def), "network": "$@network_def.to(@device)",
                 **dict(inference_extra or {})}
    for rel, text in ((METADATA, json.dumps(meta, indent=2) + "\n"),
                      (INFERENCE, json.dumps(inference, indent=2) + "\n"), (MODEL_CARD, model_card),
                      *((MODEL_CARD.parent / name, text) for name, text in (extra_docs or {}).items())):
        with atomic_output(out / rel) as tmp:
            tmp.write_text(text)
        (out / rel).chmod(0o644)
    return read_bundle(out)

"""Training arithmetic precision shared by the CT and ultrasound trainers.

``bf16`` runs the forward pass under ``torch.autocast`` in bfloat16 (weights, optimiser
state and the loss stay float32). On CPUs with AMX or AVX-512 BF16 (the project's 2-core
machine) a training step of either network takes about half to two thirds of the float32
time; elsewhere it is correct but may be slower. Inference runs in float32 unless a bundle
asks for ``auto`` (CT): bfloat16 where the CPU computes it natively, float32 elsewhere.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from planner.errors import ModelError

PRECISIONS = ("fp32", "bf16")
INFERENCE_PRECISIONS = ("fp32", "bf16", "auto")


def check_precision(value: str, where: str) -> str:
    """Return ``value`` when it is a known precision, else a clear error naming ``where``."""
    if value not in PRECISIONS:
        raise ModelError(f"{where}: precision={value!r} is not one of {', '.join(PRECISIONS)}")
    return value


def training_autocast(precision: str) -> ContextManager[object]:
    """The context a training forward pass runs in for ``precision``."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16), so bf16 is the faster choice."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolved_precision(precision: str) -> str:
    """What an inference ``precision`` runs in on this CPU: ``auto`` becomes bf16 where it is native, else fp32."""
    if precision not in INFERENCE_PRECISIONS:
        raise ModelError(f"inference precision {precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def inference_autocast(precision: str) -> ContextManager[object]:
    """The context a CPU inference forward pass runs in (see :func:`resolved_precision`)."""
    if resolved_precision(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()

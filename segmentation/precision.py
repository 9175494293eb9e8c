"""Training arithmetic precision shared by the CT and ultrasound trainers.

``bf16`` runs the forward pass under ``torch.autocast`` in bfloat16 (weights, optimiser
state and the loss stay float32). On CPUs with AMX or AVX-512 BF16 (the project's 2-core
machine) a training step of either network takes about half to two thirds of the float32
time; elsewhere it is correct but may be slower. Inference always runs in float32.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from planner.errors import ModelError

PRECISIONS = ("fp32", "bf16")


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

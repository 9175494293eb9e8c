"""Where the bundled models and sample cases are, in a checkout or an installed wheel.

In the repository they are the top-level ``models/`` and ``sample_dicom/`` folders; the
wheel installs the same folders as ``planner.bundled_models`` and
``planner.bundled_samples`` (see ``pyproject.toml``), and an editable install maps those
names back onto the repository folders. ``PLANNER_MODELS_DIR`` overrides the models.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from planner.errors import PlannerError


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PlannerError(f"bundled data package {package!r} is not installed; reinstall plexus-planner")
    return Path(list(spec.submodule_search_locations)[0])


def models_dir() -> Path:
    override = os.environ.get("PLANNER_MODELS_DIR")
    return Path(override) if override else _package_dir("planner.bundled_models")


def samples_dir() -> Path:
    return _package_dir("planner.bundled_samples")

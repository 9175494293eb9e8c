"""Shared fixtures: real data found through one setting, skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.config import SHARED_DATA_ENV, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real imaging data folder (``PLANNER_SHARED_DATA``, default ``../shared/data``)."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real imaging data not found at {root} (set {SHARED_DATA_ENV})")
    return root


def shared_path(*parts: str) -> Path:
    """A path inside the shared data, skipping the calling test when it is absent."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (set {SHARED_DATA_ENV} to the shared data folder)")
    return path


def pydicom_test_file(name: str) -> Path:
    """A file from the ``pydicom-data`` wheel (or pydicom itself), skipping when absent."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"pydicom test file {name} not available (pip install pydicom-data)")
    return Path(found)

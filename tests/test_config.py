"""planner.config: the one shared-data setting and strict settings parsing."""

from __future__ import annotations


def test_unknown_settings_are_named_not_ignored():
    import dataclasses

    import pytest

    from planner.config import reject_unknown_keys
    from planner.errors import PlannerError

    @dataclasses.dataclass
    class Settings:
        epochs: int = 1
        seed: int = 0

    reject_unknown_keys(Settings, {"epochs": 3}, "setting(s)", PlannerError)
    reject_unknown_keys(Settings, {"task": "x"}, "setting(s)", PlannerError, allowed=("task",))
    with pytest.raises(PlannerError, match=r"unknown setting\(s\) epoch, sed; known: epochs, seed"):
        reject_unknown_keys(Settings, {"epoch": 3, "sed": 1}, "setting(s)", PlannerError)


def test_shared_data_is_found_through_one_setting(monkeypatch, tmp_path):
    from planner.config import SHARED_DATA_ENV, shared_data_dir, shared_data_path

    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    assert shared_data_path("absent") is None
    (tmp_path / "x").mkdir()
    assert shared_data_path("x") == tmp_path.resolve() / "x"

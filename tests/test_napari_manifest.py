"""The npe2 manifest is valid, every python_name imports, and plugin start-up stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "napari_plugin" / "napari.yaml"
HEAVY = ("torch", "monai")


def _manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _python_names() -> list[str]:
    return [c["python_name"] for c in _manifest()["contributions"]["commands"]]


def test_npe2_validates_the_installed_manifest():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("plexus-planner")
    assert manifest.name == "plexus-planner"
    manifest.validate_imports()  # raises when a python_name does not resolve


def test_npe2_cli_validate_passes():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "plexus-planner"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_imports(python_name):
    module_name, attr = python_name.split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr)), python_name


def test_every_command_is_used_by_a_contribution():
    contributions = _manifest()["contributions"]
    used = {r["command"] for r in contributions.get("readers", [])}
    used |= {w["command"] for w in contributions.get("writers", [])}
    used |= {w["command"] for w in contributions.get("widgets", [])}
    used |= {s["command"] for s in contributions.get("sample_data", [])}
    assert {c["id"] for c in contributions["commands"]} == used


def test_sample_data_covers_every_registered_case():
    from planner.samples import all_cases

    keys = [s["key"] for s in _manifest()["contributions"]["sample_data"]]
    assert keys == [case.name for case in all_cases()]
    from napari_plugin import _sample_data

    with pytest.raises(AttributeError):
        _sample_data.no_such_case  # noqa: B018


def _heavy_modules_loaded_by(code: str) -> list[str]:
    """The modules of HEAVY that ``code`` has imported when run in a fresh interpreter."""
    code += "import sys; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=ROOT).stdout.split()
    return [m for m in HEAVY if m in out]


def test_importing_every_python_name_loads_neither_torch_nor_monai():
    imports = "; ".join(f"import {n.split(':')[0]}" for n in _python_names())
    code = (f"{imports}\n"
            "import importlib\n"
            f"for n in {_python_names()!r}:\n"
            "    m, a = n.split(':'); getattr(importlib.import_module(m), a)\n")
    loaded = _heavy_modules_loaded_by(code)
    assert not loaded, f"plugin start-up imported {loaded}"


def test_widget_start_up_work_loads_neither_torch_nor_monai():
    """What the dock widget does when it opens (bundle list, presets, outcome form, a sample)."""
    code = ("from napari_plugin._session import available_bundles, available_presets, clinical_fields\n"
            "available_bundles(); available_presets(); clinical_fields()\n"
            "from planner.samples import case_names\n"
            "from napari_plugin._sample_data import sample_layers\n"
            "[sample_layers(n) for n in case_names()[:1]]\n")
    loaded = _heavy_modules_loaded_by(code)
    assert not loaded, f"widget start-up imported {loaded}"

"""The distribution installs what users need and nothing heavy at import time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from planner.resources import models_dir, samples_dir

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "monai", "PyQt5", "qtpy", "napari")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return set(out.split())


@pytest.mark.parametrize("code", [
    "import planner",
    "import planner.volume, planner.anatomy, planner.cli",
    "import napari_plugin, napari_plugin._reader",
    "from planner.cli import build_parser; build_parser()",
])
def test_core_imports_stay_light(code):
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded], f"{code!r} imported {sorted(m for m in HEAVY if m in loaded)}"


def test_editable_install_finds_bundled_folders():
    assert models_dir().resolve() == (ROOT / "models").resolve()
    assert samples_dir().resolve() == (ROOT / "sample_dicom").resolve()


@pytest.mark.slow
def test_built_wheel_carries_models_and_samples_but_not_tests(tmp_path):
    # build from a copy so that no stale build/ folder of the checkout leaks into the wheel
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("plexus_planner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_plugin/napari.yaml" in names
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        package = init.parent.relative_to(ROOT).as_posix()
        if package.split("/")[0] in ("planner", "segmentation", "napari_plugin"):
            assert f"{package}/__init__.py" in names, f"package {package} missing from pyproject packages"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    repo_models = {p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    repo_samples = {p.relative_to(ROOT / "sample_dicom").as_posix() for p in (ROOT / "sample_dicom").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    assert {f"planner/bundled_models/{n}" for n in repo_models} <= set(names)
    assert {f"planner/bundled_samples/{n}" for n in repo_samples} <= set(names)

    # installed from the wheel alone (no site, no editable finder), the folders resolve inside it
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = ("from planner.resources import models_dir, samples_dir; "
            "print(models_dir()); print(samples_dir())")
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target)}).stdout.split()
    assert Path(out[0]) == target / "planner" / "bundled_models"
    assert Path(out[1]) == target / "planner" / "bundled_samples"

"""``plexplan info``: the facts it prints, and one clear line on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from planner.cli import main
from planner.volume import load
from tests.conftest import pydicom_test_file, shared_path

JSON_KEYS = {"modality", "shape_zyx", "spacing_zyx_mm", "origin_lps_mm", "direction", "warnings"}


def run_info(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["info", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_facts_match_the_loaded_volume(capsys):
    folder = shared_path("ct_thigh_sts001", "dicom", "image")
    code, out, err = run_info(capsys, str(folder), "--json")
    assert code == 0 and err == ""
    facts = json.loads(out)
    assert JSON_KEYS <= facts.keys()
    volume = load(folder)
    assert facts["modality"] == "CT"
    assert facts["shape_zyx"] == [59, 202, 198]
    np.testing.assert_allclose(facts["spacing_zyx_mm"], volume.spacing, atol=1e-6)
    np.testing.assert_allclose(facts["origin_lps_mm"], volume.origin, atol=1e-6)
    np.testing.assert_allclose(facts["direction"], volume.direction, atol=1e-6)
    assert facts["warnings"] == [] and facts["series_count"] == 1


def test_text_output_lists_every_warning(capsys):
    code, out, _ = run_info(capsys, str(shared_path("ct_gantry_tilt_ge")))
    assert code == 0
    assert "gantry tilt" in out and "non-uniform slice steps" in out and "LICENSE_BSD2.txt" in out
    assert out.count("warning ") == 3


def test_json_for_ultrasound_and_nifti(capsys):
    code, out, _ = run_info(capsys, str(pydicom_test_file("OBXXXX1A_2frame.dcm")), "--json")
    facts = json.loads(out)
    assert code == 0 and facts["modality"] == "US" and facts["shape_zyx"] == [2, 600, 800]
    assert any("z is time" in w for w in facts["warnings"])
    code, out, _ = run_info(capsys, str(shared_path("ct_thigh_sts001", "nifti", "image", "image.nii.gz")), "--json")
    assert code == 0 and json.loads(out)["series_count"] == 1


def test_series_selection_through_the_cli(tmp_path, capsys):
    for source in (shared_path("ct_3slice_seg", "ct-3slice"), shared_path("ct_thigh_sts001", "dicom", "image")):
        shutil.copytree(source, tmp_path / source.name)
    code, _, err = run_info(capsys, str(tmp_path))
    assert code == 2 and "2 image series" in err and len(err.strip().splitlines()) == 1
    uid = load(shared_path("ct_3slice_seg", "ct-3slice")).source.series_instance_uid
    code, out, _ = run_info(capsys, str(tmp_path), "--series", uid[:40], "--json")
    facts = json.loads(out)
    assert code == 0 and facts["shape_zyx"] == [3, 512, 512] and facts["series_count"] == 2


@pytest.mark.parametrize("kind", ["missing", "seg", "empty"])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, kind):
    path = {"missing": tmp_path / "nope", "seg": shared_path("ct_3slice_seg", "liver.dcm"), "empty": tmp_path}[kind]
    code, out, err = run_info(capsys, str(path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plexplan info: error: ") and str(path) in lines[0]
    assert "Traceback" not in err


def test_console_script_exit_code_and_debug_traceback(tmp_path):
    cmd = [sys.executable, "-m", "planner.cli"]
    plain = subprocess.run([*cmd, "info", str(tmp_path)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == f"plexplan info: error: {tmp_path}: empty folder, no files found; point at the DICOM series folder"
    debug = subprocess.run([*cmd, "--debug", "info", str(tmp_path)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DicomSeriesError" in debug.stderr


def test_the_program_prints_everything_and_returns_the_command_status(tmp_path):
    """``plexplan`` is :func:`planner.cli.run_process` (main, then a frozen heap at exit): the
    command's whole output arrives and its status is the process's."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="plexplan")
    assert script.value == "planner.cli:run_process"
    path = pydicom_test_file("CT_small.dcm")
    done = subprocess.run([sys.executable, "-m", "planner.cli", "info", str(path), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shape_zyx"] == list(load(path).shape)

"""``plexplan demo``: the README's main-job command (its full run is covered by test_report.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from planner.cli import main
from planner.commands.demo import DEFAULT_CASE, plan_args
from planner.plan import Plan
from planner.samples import case_names, get_case

needs_sample = pytest.mark.skipif(DEFAULT_CASE not in case_names(),
                                  reason=f"sample case {DEFAULT_CASE} is not bundled (python -m segmentation.make_samples)")


@needs_sample
def test_demo_runs_plan_with_the_reference_labels(tmp_path):
    args = plan_args(DEFAULT_CASE, tmp_path)
    case = get_case(DEFAULT_CASE)
    assert args.path == str(case.image_path) and args.labels == str(case.labels_path)
    assert args.procedure == case.presets[0]
    assert args.labels_source == {"source": "sample reference", "case": DEFAULT_CASE, "file": "labels.nii.gz"}
    segmenting = plan_args(DEFAULT_CASE, tmp_path, segment=True)
    assert segmenting.labels is None and segmenting.labels_source is None


def test_demo_unknown_case_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--case", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown sample case 'nope'" in err and DEFAULT_CASE in err
    assert not (tmp_path / "o").exists()


def test_report_modules_import_without_torch_or_qt():
    code = ("import planner.report, planner.practice, planner.reslice, planner.commands.demo, "
            "planner.commands.practice, planner.commands.plan, sys; print(' '.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert not loaded & {"torch", "monai", "PyQt5", "qtpy", "matplotlib", "reportlab"}


@needs_sample
@pytest.mark.slow
def test_demo_with_the_ct_model(tmp_path, capsys):
    """``--segment``: the shipped CT bundle makes the labels and the report names the model."""
    from planner.resources import models_dir

    if not (models_dir() / "ct_abdomen_phantom" / "models" / "model.pt").exists():
        pytest.skip("the CT segmentation bundle is not installed")
    out = tmp_path / "seg"
    rc = main(["demo", "--segment", "--out", str(out)])
    assert (out / "labels.nii.gz").exists()  # the model's labels are kept next to the plan
    if rc == 2:  # the labels may not allow a plan: then a clear planner error, and no report
        assert "plexplan demo: error:" in capsys.readouterr().err
        assert not (out / "report.pdf").exists()
        return
    plan = Plan.load(out / "plan.json")
    assert plan.models["labels"]["source"] == "model"
    assert (out / "report.pdf").exists()
    assert "CT segmentation model" in (out / "report.html").read_text(encoding="utf-8")

"""Batch runner: real Dask clusters, a killed worker, the ledger, SEG read-back, de-identification.

The model is a tiny real MONAI bundle with seeded random weights (tests/_batch_fixture.py):
these tests check orchestration, not segmentation accuracy.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest

import _batch_fixture as fx
from planner.config import shared_data_path
from planner.dicom_seg import read_seg
from planner.errors import PlannerError
from planner.volume import load_nifti
from segmentation.batch import (LEDGER_NAME, LOCK_NAME, SERIES_DIR, TMP_MARK, Rules, UidMap, _exclusive,
                                discover, input_hash, run_batch)

REAL_CT = ("ct_abdomen_crlm1004/image", "ct_abdomen_ts_dicom/dicom")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return fx.write_tiny_bundle(tmp_path_factory.mktemp("model") / "tiny_ct_test", seed=0)


def _link_real_ct(root: Path) -> list[str]:
    """Symbolic links to the real CT series (inputs are never copied or modified)."""
    linked = []
    for rel in REAL_CT:
        src = shared_data_path(*rel.split("/"))
        if src is None:
            continue
        folder = root / "real" / rel.split("/")[0]
        folder.mkdir(parents=True)
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            (folder / f.name).symlink_to(f)
        linked.append(rel)
    return linked


def _out_files(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _check_seg_matches_nifti(series_dir: Path, source_uids: set[str] | None) -> None:
    import highdicom as hd

    labels = load_nifti(series_dir / "labels.nii.gz")
    seg = hd.seg.segread(series_dir / "seg.dcm")
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence}
    if source_uids is not None:
        assert referenced <= source_uids and referenced
    names = {str(seg.get_segment_description(n).segment_label) for n in seg.get_segment_numbers()}
    assert names <= set(fx.TINY_VOCABULARY.values()) | {"celiac_plexus_region", "splanchnic_nerve_zone",
                                                        "superior_hypogastric_plexus_region"}
    assert np.array_equal(read_seg(series_dir / "seg.dcm", labels).array, labels.array)
    if (series_dir / "rtstruct.dcm").exists():  # contours fill back to the same voxels
        from planner.label_import import import_rtstruct

        assert np.array_equal(import_rtstruct(series_dir / "rtstruct.dcm", labels).labels.array, labels.array)


@pytest.mark.slow
def test_two_worker_cluster_survives_a_killed_worker_and_rerun_recomputes_nothing(bundle, tmp_path):
    from distributed import Client, LocalCluster

    root, out = tmp_path / "archive", tmp_path / "out"
    real = _link_real_ct(root)
    n_phantoms = 18 if len(real) == len(REAL_CT) else 21  # at least 20 series in all
    fx.write_phantom_series(root, seeds=list(range(n_phantoms // 3)), crops=3)
    bad = fx.add_bad_inputs(root)
    killed: list[int] = []

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2

        def kill_a_busy_worker(result: dict) -> None:
            if killed:
                return
            busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
            if busy:
                killed.append(pids[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)

        summary = run_batch(root, out, model=bundle.root, client=client,
                            progress=False, on_result=kill_a_busy_worker)

    assert killed, "no worker was busy to kill"
    n_series = n_phantoms + len(real)
    assert summary.selected == n_series + 1  # + the broken CT series
    assert summary.done == n_series and summary.computed == n_series + 1
    # the broken series was tried twice, reported, and did not stop the batch
    assert len(summary.failed) == 1
    failure = summary.failed[0]
    assert failure["attempt"] == 2 and "no ImagePositionPatient" in failure["error"]
    assert str(bad["no_position"]) in failure["error"]
    # every series done exactly once: one ledger row each, one output folder each, no temporaries
    with sqlite3.connect(out / LEDGER_NAME) as db:
        rows = db.execute("SELECT series_uid, status FROM series").fetchall()
    done_uids = [uid for uid, status in rows if status == "done"]
    assert len(done_uids) == len(set(done_uids)) == n_series
    assert sorted(p.name for p in (out / SERIES_DIR).iterdir()) == sorted(done_uids)
    leftovers = [p for p in out.rglob("*") if TMP_MARK in p.name or (p.name.startswith(".") and p.name != LOCK_NAME)]
    assert leftovers == []
    # the model was loaded once per worker process (the restarted worker loads it once too)
    loads: dict[int, set[int]] = {}
    for r in summary.results:
        if r.get("ok") and "pid" in r:
            loads.setdefault(r["pid"], set()).add(r["model_loads"])
    assert all(v == {1} for v in loads.values()) and len(loads) >= 2
    # bad inputs are each reported with a reason
    reasons = {s.path: s.reason for s in summary.skipped}
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "DICOM SEG" in reasons[str(bad["seg_only"])]
    assert "unreadable" in reasons[str(bad["unreadable"])]
    assert "modality MR is not selected" in reasons[str(bad["mr"].parent)]
    with open(out / "skipped.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(summary.skipped)
    # every SEG reads back with highdicom, references its source, and equals the NIfTI labels
    source_uids = {r["uid"]: None for r in summary.results}
    for job in discover(root, Rules())[0]:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in job.files]
        # an anonymiser emptied SOPInstanceUID in one real series; its file meta keeps the UID
        source_uids[job.uid] = {str(h.SOPInstanceUID or h.file_meta.MediaStorageSOPInstanceUID) for h in headers}
    for uid in done_uids:
        _check_seg_matches_nifti(out / SERIES_DIR / uid, source_uids[uid])
    # one statistics CSV for the whole batch; voxel counts agree with the label maps
    with open(out / "structures.csv") as fh:
        stats = list(csv.DictReader(fh))
    assert {r["series_uid"] for r in stats} == set(done_uids)
    one = done_uids[0]
    labels = load_nifti(out / SERIES_DIR / one / "labels.nii.gz").array
    assert sum(int(r["voxel_count"]) for r in stats if r["series_uid"] == one) == int((labels > 0).sum())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == bundle.ours["model_sha256"]
    assert manifest["counts"]["failed"] == 1 and manifest["failures"][0]["attempts"] == 2
    assert {"torch", "monai", "dask", "highdicom"} <= set(manifest["software"])

    # a rerun recomputes nothing: no cluster, every series from the ledger, outputs untouched
    before = _out_files(out / SERIES_DIR)
    again = run_batch(root, out, model=bundle.root, progress=False)
    assert again.computed == 0 and again.reused == n_series + 1 and again.done == n_series
    assert json.loads((out / "manifest.json").read_text())["cluster"] == {}
    assert _out_files(out / SERIES_DIR) == before


@pytest.fixture()
def threaded_client():
    """An in-process Dask cluster (threads): fast to start, same scheduler protocol."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_deidentified_outputs_carry_no_identifiers_and_consistent_uids(bundle, tmp_path, threaded_client):
    root, out = tmp_path / "archive", tmp_path / "out"
    folders = fx.write_phantom_series(root, seeds=[5], crops=2, spacing_mm=12.0)  # one patient and study
    sources = {f: [pydicom.dcmread(p) for p in sorted(f.iterdir())] for f in folders}
    summary = run_batch(root, out, model=bundle.root, client=threaded_client, rtstruct=True,
                        deidentify=True, progress=False, arguments={"input_dir": str(root), "out": str(out)})
    assert summary.done == 2 and not summary.failed
    with sqlite3.connect(out / LEDGER_NAME) as db:
        secret = db.execute("SELECT value FROM meta WHERE key = 'uid_secret'").fetchone()[0]
    uid_map = UidMap(secret)
    seg_study = set()
    for folder, datasets in sources.items():
        first = datasets[0]
        new_series = uid_map(first.SeriesInstanceUID)
        series_dir = out / SERIES_DIR / new_series
        seg = pydicom.dcmread(series_dir / "seg.dcm")
        rtstruct = pydicom.dcmread(series_dir / "rtstruct.dcm")
        for text in (str(seg), str(rtstruct)):
            for identifier in (str(first.PatientName), first.PatientID, first.SeriesInstanceUID,
                               first.StudyInstanceUID, first.FrameOfReferenceUID, first.StudyDate):
                assert identifier not in text
        assert rtstruct.StudyInstanceUID == seg.StudyInstanceUID and rtstruct.PatientID == seg.PatientID
        assert seg.PatientIdentityRemoved == "YES" and seg.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert seg.PatientName == seg.PatientID == uid_map.pseudonym(first.PatientID)
        assert seg.FrameOfReferenceUID == uid_map(first.FrameOfReferenceUID)
        referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                      for i in s.ReferencedInstanceSequence}
        assert referenced <= {uid_map(d.SOPInstanceUID) for d in datasets}
        assert seg.file_meta.MediaStorageSOPInstanceUID == seg.SOPInstanceUID
        seg_study.add(seg.StudyInstanceUID)
        _check_seg_matches_nifti(series_dir, None)
        for other in series_dir.iterdir():  # NIfTI, JSON, CSV: no identifier in their bytes either
            if other.suffix != ".dcm":
                data = other.read_bytes() if other.suffix != ".gz" else gzip.decompress(other.read_bytes())
                for identifier in (str(first.PatientName), first.PatientID, first.SeriesInstanceUID):
                    assert identifier.encode() not in data
    assert seg_study == {uid_map(sources[folders[0]][0].StudyInstanceUID)}  # same study -> same new UID
    # batch reports: new UIDs only, no input paths
    for name in ("structures.csv", "skipped.csv", "manifest.json"):
        text = (out / name).read_text()
        assert str(root) not in text and "Phantom" not in text
        for datasets in sources.values():
            assert datasets[0].SeriesInstanceUID not in text


def test_ledger_hash_detects_changed_inputs_and_failures_are_not_retried(bundle, tmp_path, threaded_client):
    root, out = tmp_path / "archive", tmp_path / "out"
    folders = fx.write_phantom_series(root, seeds=[2], crops=2)
    fx.add_bad_inputs(root)
    first = run_batch(root, out, model=bundle.root, client=threaded_client, progress=False)
    assert first.done == 2 and len(first.failed) == 1
    # touching one file of one series changes its input hash: only that series is recomputed
    touched = sorted(folders[1].iterdir())[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    second = run_batch(root, out, model=bundle.root, client=threaded_client, progress=False)
    assert second.computed == 1 and second.reused == 2  # the known failure is not retried
    assert [r for r in second.results if not r.get("reused")][0]["uid"] == \
        pydicom.dcmread(touched, stop_before_pixels=True).SeriesInstanceUID
    third = run_batch(root, out, model=bundle.root, client=threaded_client,
                      progress=False, retry_failed=True)
    assert third.computed == 1 and len(third.failed) == 1 and third.failed[0]["attempt"] == 2


def test_rules_select_by_modality_body_part_slices_and_description(tmp_path):
    root = tmp_path / "archive"
    fx.write_phantom_series(root, seeds=[1], crops=2, spacing_mm=12.0)
    fx.add_bad_inputs(root)
    jobs, skipped = discover(root, Rules())
    assert len(jobs) == 3  # two phantom slabs + the broken CT series (it fails later, at loading)
    rules = Rules.from_mapping({"modalities": "CT", "body_parts": ["abdomen"], "allow_missing_body_part": False,
                                "min_slices": 5, "description": r"slab 1"})
    jobs, skipped = discover(root, rules)
    assert [j.description for j in jobs] == ["phantom seed 1 slab 1 (synthetic)"]
    reasons = " | ".join(s.reason for s in skipped if s.kind == "series")
    assert "does not match /slab 1/" in reasons and "no BodyPartExamined" in reasons
    assert "modality MR is not selected" in reasons
    few = discover(root, Rules(min_slices=4))[1]
    assert any("3 slice(s), fewer than the 4" in s.reason for s in few)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("modalities: [CT]\nmin_slices: 2\ndescription: 'seed \\d'\n")
    assert Rules.from_file(rules_file) == Rules(modalities=("CT",), min_slices=2, description=r"seed \d")
    (tmp_path / "bad.json").write_text(json.dumps({"modality": "CT"}))
    with pytest.raises(PlannerError, match="unknown rule"):
        Rules.from_file(tmp_path / "bad.json")
    with pytest.raises(PlannerError, match="regular expression"):
        Rules(description="(")


def test_input_hash_follows_size_mtime_or_content(tmp_path):
    f = tmp_path / "a.dcm"
    f.write_bytes(b"x" * 10)
    stat_hash, content_hash = input_hash([f], tmp_path, "stat"), input_hash([f], tmp_path, "content")
    st = f.stat()
    f.write_bytes(b"y" * 10)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime, other bytes
    assert input_hash([f], tmp_path, "stat") == stat_hash
    assert input_hash([f], tmp_path, "content") != content_hash
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert input_hash([f], tmp_path, "stat") != stat_hash


def test_cli_batch_on_an_existing_scheduler(bundle, tmp_path, threaded_client, capsys):
    from planner.cli import main

    root, out = tmp_path / "archive", tmp_path / "out"
    fx.write_phantom_series(root, seeds=[3], crops=1, spacing_mm=12.0)
    (tmp_path / "rules.json").write_text(json.dumps({"modalities": ["CT"], "min_slices": 3}))
    argv = ["batch", str(root), "--out", str(out), "--model", str(bundle.root), "--rules", str(tmp_path / "rules.json"),
            "--scheduler", threaded_client.scheduler.address, "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "1 series selected: 1 done, 0 failed (1 run now, 0 from the ledger)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cluster"]["scheduler"] == threaded_client.scheduler.address
    assert manifest["arguments"]["scheduler"] == threaded_client.scheduler.address
    assert main(argv) == 0 and "(0 run now, 1 from the ledger)" in capsys.readouterr().out
    # problems with the run itself are one-line errors (exit 2): a missing model, a folder in use
    assert main(["batch", str(root), "--out", str(out), "--model", str(tmp_path / "nope")]) == 2
    assert "model bundle folder not found" in capsys.readouterr().err
    with _exclusive(out):
        assert main(argv) == 2
    assert "another plexplan batch is writing into this folder" in capsys.readouterr().err


def test_the_same_weights_written_twice_have_the_same_sha256(tmp_path):
    """A bundle's weights file depends on the weights only (not on the temporary file name), so
    its sha256 identifies them."""
    first = fx.write_tiny_bundle(tmp_path / "a" / "tiny_ct_test", seed=3)
    second = fx.write_tiny_bundle(tmp_path / "b" / "tiny_ct_test", seed=3)
    other = fx.write_tiny_bundle(tmp_path / "c" / "tiny_ct_test", seed=4)
    assert first.ours["model_sha256"] == second.ours["model_sha256"] != other.ours["model_sha256"]


def test_default_model_is_the_shipped_ct_bundle():
    from segmentation.batch import _resolve_model
    from segmentation.bundle import default_bundle_path
    from segmentation.commands.segment import DEFAULT_BUNDLES

    shipped = default_bundle_path(DEFAULT_BUNDLES["CT"])
    if not shipped.is_dir():
        with pytest.raises(PlannerError, match="bundle folder not found"):
            _resolve_model(None, Rules())
        return
    bundle = _resolve_model(None, Rules())
    assert bundle.root == shipped and bundle.modality == "CT"

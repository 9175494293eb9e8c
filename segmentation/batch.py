"""Batch segmentation of DICOM collections on one machine or a Dask cluster.

``run_batch(INPUT_DIR, OUT_DIR, ...)`` (and ``plexplan batch``) finds every image series
in a tree (:func:`planner.dicom_series.scan_series`), selects them by :class:`Rules`,
and runs the one-series pipeline of ``plexplan segment``
(:func:`segmentation.commands.segment.segment_series`) on each, as Dask tasks on a
``LocalCluster`` of worker processes or on an existing cluster (``scheduler=``).

Layout of ``OUT_DIR``::

    series/<SeriesInstanceUID>/   labels.nii.gz, labels.json, structures.csv, targets.json, seg.dcm
                                  (and rtstruct.dcm with ``rtstruct=True``)
    structures.csv                one row per (series, structure) of the whole batch
    skipped.csv                   every skipped series and file, with its reason
    manifest.json                 versions, model sha256, arguments, timings, failures
    ledger.sqlite                 what is finished (the resume state; see below)

Resuming and crashes:

* The **ledger** (SQLite, written only by the driver process) is keyed by
  SeriesInstanceUID, a hash of the series' input files and a hash of the configuration
  (model sha256, de-identification). A rerun skips series that are done, and also series
  that failed twice on the same inputs (``retry_failed=True`` tries them again).
* The **input hash** is sha256 over the sorted ``(relative path, size, mtime_ns)`` of the
  series' files (``hash_mode="stat"``, the default): it reads no pixel data, so discovery
  of a large archive stays a header scan, and it changes when a file is added, removed,
  renamed, rewritten or touched. It misses only an in-place rewrite that keeps both size
  and mtime (which only deliberate tools do); ``hash_mode="content"`` hashes the file
  bytes instead, at the cost of reading the archive once more.
* Each series is written into a hidden temporary folder ``series/.<name>.tmp-<token>``
  that is renamed to ``series/<name>`` only when every file is complete; batch-level files
  are written atomically. Temporary folders of killed workers are swept at the start and
  end of a run (a lock file keeps two runs off one output folder). So a crash or a killed
  worker loses at most the series in flight: Dask re-runs that task on another worker.
* A series that fails (bad DICOM, model error, anything) is retried once, then recorded
  as failed with its message; it never stops the batch.

The model is loaded once per worker process (:func:`_worker_bundle` caches the verified
network), and each worker runs one series at a time with one torch thread.

``deidentify=True`` writes outputs without patient identifiers (DICOM PS3.15 Annex E
Basic Application Level Confidentiality Profile, for the attributes the outputs carry;
see :func:`deidentify_dataset`): UIDs are replaced by UIDs derived from a per-output-folder
secret (the same source UID always maps to the same new UID), names and IDs are replaced
by a pseudonym, dates and times by dummies, descriptive and private attributes removed.
Output folder names and the batch reports then use the new UIDs and withhold input paths.
The ledger keeps the original UIDs and the secret: it is the re-identification key and
must not be shared with the outputs (``ledger=`` puts it elsewhere).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from planner.config import reject_unknown_keys
from planner.errors import ModelError, PlannerError
from planner.logs import get_logger, redact
from planner.volume import Volume, atomic_output
from segmentation.bundle import Bundle

log = get_logger("batch")

SERIES_DIR = "series"
LEDGER_NAME = "ledger.sqlite"
LOCK_NAME = ".batch.lock"
TMP_MARK = ".tmp-"
STATS_NAME = "structures.csv"
SKIPPED_NAME = "skipped.csv"
MANIFEST_NAME = "manifest.json"
HASH_MODES = ("stat", "content")
#: attempts per series (the first run and one retry)
MAX_ATTEMPTS = 2
STATS_FIELDS = ["series_uid", "structure", "label", "voxel_count", "volume_ml", "mean_hu", "sd_hu",
                "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
                "bbox_lps_min_mm", "bbox_lps_max_mm"]
WITHHELD = "[withheld: --deidentify]"


# ============================================================================ selection
@dataclass(frozen=True)
class Rules:
    """Which series to segment. Empty tuples / ``None`` accept anything.

    Args:
        modalities: accepted Modality values (upper case), e.g. ``("CT",)``.
        body_parts: accepted BodyPartExamined values (case-insensitive); a series without
            the tag passes only when ``allow_missing_body_part``.
        min_slices: fewest slices (frames) a series must have.
        description: regular expression searched (case-insensitive) in SeriesDescription.
    """

    modalities: tuple[str, ...] = ("CT",)
    body_parts: tuple[str, ...] = ()
    allow_missing_body_part: bool = True
    min_slices: int = 1
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(str(m).upper() for m in self.modalities))
        object.__setattr__(self, "body_parts", tuple(str(b).upper() for b in self.body_parts))
        if int(self.min_slices) < 1:
            raise PlannerError(f"rules: min_slices must be >= 1, got {self.min_slices}")
        if self.description is not None:
            try:
                re.compile(self.description)
            except re.error as exc:
                raise PlannerError(f"rules: description {self.description!r} is not a valid regular expression "
                                   f"({exc})") from None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "rules") -> "Rules":
        reject_unknown_keys(cls, raw, "rule(s)", lambda msg: PlannerError(f"{where}: {msg}"))
        values = dict(raw)
        for key in ("modalities", "body_parts"):
            if isinstance(values.get(key), str):
                values[key] = (values[key],)
            if key in values:
                values[key] = tuple(values[key] or ())
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "Rules":
        """Rules from a YAML or JSON mapping (keys as the fields of this class)."""
        import yaml

        p = Path(path)
        try:
            text = p.read_text()
            raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise PlannerError(f"{p}: cannot read the selection rules ({exc})") from None
        if not isinstance(raw, dict):
            raise PlannerError(f"{p}: selection rules must be a mapping, e.g. 'modalities: [CT]'")
        return cls.from_mapping(raw, where=str(p))

    def reject_reason(self, modality: str, body_part: str, n_slices: int, description: str) -> str | None:
        """Why a series does not pass the rules, or ``None``."""
        if self.modalities and modality.upper() not in self.modalities:
            return f"modality {modality or '?'} is not selected (rules: {', '.join(self.modalities)})"
        if self.body_parts:
            if not body_part:
                if not self.allow_missing_body_part:
                    return f"no BodyPartExamined (rules: {', '.join(self.body_parts)})"
            elif body_part.upper() not in self.body_parts:
                return f"body part {body_part} is not selected (rules: {', '.join(self.body_parts)})"
        if n_slices < self.min_slices:
            return f"{n_slices} slice(s), fewer than the {self.min_slices} the rules ask for"
        if self.description is not None and not re.search(self.description, description, re.IGNORECASE):
            return f"series description {description!r} does not match /{self.description}/"
        return None


@dataclass(frozen=True)
class SeriesJob:
    """One series to segment: where its files are and what identifies its inputs."""

    uid: str
    folder: str  # deepest folder holding every file of the series (loaded with series=uid)
    files: tuple[str, ...]
    input_hash: str
    modality: str
    description: str
    n_slices: int


@dataclass(frozen=True)
class Skipped:
    """A series or file left out of the batch, and why."""

    kind: str  # "series" or "file"
    uid: str
    path: str
    reason: str


def input_hash(files: Sequence[str | Path], root: str | Path, mode: str = "stat") -> str:
    """sha256 identifying a series' input files (see the module docstring for the choice)."""
    if mode not in HASH_MODES:
        raise PlannerError(f"hash mode must be one of {', '.join(HASH_MODES)}, got {mode!r}")
    digest = hashlib.sha256(mode.encode())
    for f in sorted(str(x) for x in files):
        rel = os.path.relpath(f, root)
        if mode == "stat":
            st = os.stat(f)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            from segmentation.bundle import sha256_of

            digest.update(f"{rel}\0{sha256_of(f)}\n".encode())
    return digest.hexdigest()


def discover(root: str | os.PathLike[str], rules: Rules, hash_mode: str = "stat"
             ) -> tuple[list[SeriesJob], list[Skipped]]:
    """Every image series under ``root`` that passes ``rules``, and everything skipped."""
    from planner.dicom_series import scan_series

    base = Path(root)
    if not base.is_dir():
        raise PlannerError(f"{base}: input folder not found")
    found, skipped_files = scan_series(base)
    skipped = [Skipped("file", "", str(s.path), s.reason) for s in skipped_files]
    jobs = []
    for summary, files in found:
        reason = rules.reject_reason(summary.modality, summary.body_part, summary.n_frames, summary.description)
        folder = os.path.commonpath([str(f.parent) for f in files])
        if reason:
            skipped.append(Skipped("series", summary.uid, folder, reason))
            continue
        try:
            digest = input_hash(files, base, hash_mode)
        except OSError as exc:
            skipped.append(Skipped("series", summary.uid, folder, f"input files unreadable ({exc.strerror})"))
            continue
        jobs.append(SeriesJob(uid=summary.uid, folder=folder, files=tuple(str(f) for f in files),
                              input_hash=digest, modality=summary.modality, description=summary.description,
                              n_slices=summary.n_frames))
    return jobs, skipped


# ============================================================================ de-identification
#: PS3.15 Annex E basic profile actions for attributes our outputs (SEG copied from a CT
#: series) can carry; "Z" empty, "X" remove, "D" dummy, "P" pseudonym. Every other PN is
#: emptied, every DA/TM/DT gets a dummy, every non-standard UID is remapped, private tags
#: are removed (see :func:`deidentify_dataset`).
BASIC_PROFILE: dict[str, str] = {
    "PatientName": "P", "PatientID": "P", "PatientBirthDate": "Z", "PatientSex": "Z",
    "PatientBirthTime": "X", "OtherPatientIDs": "X", "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X", "PatientBirthName": "X", "PatientMotherBirthName": "X",
    "IssuerOfPatientID": "X", "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X",
    "PatientAddress": "X", "PatientTelephoneNumbers": "X", "EthnicGroup": "X", "Occupation": "X",
    "MilitaryRank": "X", "AdditionalPatientHistory": "X", "PatientComments": "X",
    "MedicalRecordLocator": "X", "PregnancyStatus": "X", "SmokingStatus": "X",
    "AccessionNumber": "Z", "StudyID": "Z", "ReferringPhysicianName": "Z",
    "StudyDescription": "X", "AdmittingDiagnosesDescription": "X", "RequestAttributesSequence": "X",
    "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "StationName": "X", "OperatorsName": "X", "PerformingPhysicianName": "X",
    "NameOfPhysiciansReadingStudy": "X", "PhysiciansOfRecord": "X", "RequestingPhysician": "X",
    "DeviceSerialNumber": "D", "ImageComments": "X", "ContentCreatorName": "Z",
    "IrradiationEventUID": "U", "ClinicalTrialSponsorName": "X", "ClinicalTrialProtocolID": "X",
    "ClinicalTrialSubjectID": "X", "ClinicalTrialSiteID": "X", "ClinicalTrialTimePointID": "X",
}
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DEID_METHOD = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile (plexus-planner batch)"


class UidMap:
    """Consistent replacement UIDs derived from a secret (same input UID -> same output UID)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __call__(self, uid: str) -> str:
        from pydicom.uid import generate_uid

        return str(generate_uid(entropy_srcs=[self.secret, "uid", str(uid)]))

    def pseudonym(self, value: str) -> str:
        """A short stable pseudonym for a patient name/ID (``ANON-<10 hex>``)."""
        return "ANON-" + hashlib.sha256(f"{self.secret}\0patient\0{value}".encode()).hexdigest()[:10].upper()


def _is_standard_uid(uid: str) -> bool:
    from pydicom.uid import UID_dictionary

    return uid in UID_dictionary


def deidentify_dataset(ds: Any, uid_map: UidMap) -> Any:
    """De-identify ``ds`` in place (and its file meta) per :data:`BASIC_PROFILE`; returns it."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as PydicomSequence

    patient_key = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")

    def visit(dataset: Any) -> None:
        for elem in list(dataset):
            if elem.tag.is_private:
                del dataset[elem.tag]
                continue
            action = BASIC_PROFILE.get(elem.keyword)
            if action == "X":
                del dataset[elem.tag]
            elif action == "Z":
                elem.value = ""
            elif action == "P":
                elem.value = uid_map.pseudonym(patient_key) if patient_key else ""
            elif action == "D":
                elem.value = "0"
            elif elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
            elif elem.VR == "PN":
                elem.value = ""
            elif elem.VR == "DA" and elem.value:
                elem.value = DUMMY_DATE
            elif elem.VR == "TM" and elem.value:
                elem.value = DUMMY_TIME
            elif elem.VR == "DT" and elem.value:
                elem.value = DUMMY_DATE + DUMMY_TIME
            elif elem.VR == "UI" and elem.value:
                if elem.VM > 1:
                    elem.value = [v if _is_standard_uid(str(v)) else uid_map(str(v)) for v in elem.value]
                elif not _is_standard_uid(str(elem.value)):
                    elem.value = uid_map(str(elem.value))

    visit(ds)
    if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = PydicomSequence([code])
    return ds


def _deidentify_file(path: Path, uid_map: UidMap) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    deidentify_dataset(ds, uid_map)
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


# ============================================================================ statistics
def structure_statistics(image: Volume, labels: Volume, series_uid: str) -> list[dict[str, Any]]:
    """Per-structure voxel count, volume (ml), mean and SD of the image (HU), bounding box.

    The bounding box is inclusive voxel indices ``[z, y, x]`` and its two corners in
    patient LPS mm (voxel centres).
    """
    from scipy import ndimage

    from planner.anatomy import structure

    lab = np.asarray(labels.array)
    values = [int(v) for v in np.unique(lab) if v]
    if not values:
        return []
    grey = np.asarray(image.array, dtype=np.float64)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    with np.errstate(invalid="ignore", divide="ignore"):  # scipy divides by the counts of absent labels too
        counts = ndimage.sum_labels(np.ones_like(lab, dtype=np.int64), lab, values)
        means = ndimage.mean(grey, lab, values)
        sds = ndimage.standard_deviation(grey, lab, values)
    boxes = ndimage.find_objects(lab.astype(np.int32))
    rows = []
    for v, n, mean, sd in zip(values, counts, means, sds):
        box = boxes[v - 1]
        lo = [s.start for s in box]
        hi = [s.stop - 1 for s in box]
        corners = labels.index_to_lps(np.array([lo, hi], dtype=float))
        rows.append({
            "series_uid": series_uid, "structure": structure(v).name, "label": v, "voxel_count": int(n),
            "volume_ml": round(int(n) * voxel_ml, 4), "mean_hu": round(float(mean), 2), "sd_hu": round(float(sd), 2),
            "bbox_z0": lo[0], "bbox_y0": lo[1], "bbox_x0": lo[2], "bbox_z1": hi[0], "bbox_y1": hi[1], "bbox_x1": hi[2],
            "bbox_lps_min_mm": " ".join(f"{c:.1f}" for c in corners.min(axis=0)),
            "bbox_lps_max_mm": " ".join(f"{c:.1f}" for c in corners.max(axis=0)),
        })
    return rows


# ============================================================================ worker side
@dataclass(frozen=True)
class TaskConfig:
    """What every series task needs besides its series (small, pickled to the workers)."""

    out_dir: str
    model: str
    model_sha256: str
    pipeline: str | None = None
    deidentify: bool = False
    uid_secret: str = ""
    torch_threads: int = 1
    rtstruct: bool = False


@dataclass(frozen=True)
class _LoadedBundle(Bundle):
    """A bundle whose ``load_network`` returns the network loaded once (what pipelines call)."""

    network: Any = None

    def load_network(self, expected_sha256: str | None = None) -> Any:
        if expected_sha256 and expected_sha256 != self.ours.get("model_sha256"):
            raise ModelError(f"{self.weights_path}: sha256 does not match the expected {expected_sha256[:12]}...")
        return self.network


#: per-process cache: (bundle folder, sha256) -> bundle whose network is loaded
_BUNDLES: dict[tuple[str, str], Any] = {}
#: how many times this process loaded a network (reported with every result)
_LOADS = 0


def _worker_bundle(model: str, sha256: str, torch_threads: int) -> Any:
    """The bundle with its network loaded once per process (later calls reuse it)."""
    global _LOADS
    key = (model, sha256)
    if key not in _BUNDLES:
        import torch

        from segmentation.bundle import read_bundle

        torch.set_num_threads(max(1, int(torch_threads)))
        bundle = read_bundle(model)
        if bundle.ours.get("model_sha256") != sha256:
            raise ModelError(f"{model}: the bundle changed during the batch (sha256 differs from the one at start)")
        network = bundle.load_network()  # verifies the weights' sha256
        _LOADS += 1
        _BUNDLES[key] = _LoadedBundle(bundle.root, bundle.metadata, bundle.inference, network)
    return _BUNDLES[key]


def out_name(uid: str, cfg: TaskConfig) -> str:
    """Folder name of a series' outputs: its UID, or the replacement UID when de-identifying."""
    return UidMap(cfg.uid_secret)(uid) if cfg.deidentify else uid


def _replace_folder(tmp: Path, target: Path) -> None:
    """Put the complete folder ``tmp`` at ``target`` (replacing an older result)."""
    if target.exists():
        old = target.with_name(f".{target.name}{TMP_MARK}old-{secrets.token_hex(4)}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, PlannerError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def process_series(job: SeriesJob, cfg: TaskConfig, attempt: int = 1) -> dict[str, Any]:
    """Segment one series and write its outputs (runs in a worker). Never raises.

    Returns a result mapping: ``ok``, ``uid``, ``attempt``, ``seconds``, ``pid``,
    ``model_loads`` and either ``rows`` (statistics), ``out_name`` and ``files``, or ``error``.
    """
    from planner.dicom_series import load_dicom
    from segmentation.commands.segment import segment_series

    t0, cpu0 = time.perf_counter(), time.process_time()
    name = out_name(job.uid, cfg)
    series_root = Path(cfg.out_dir) / SERIES_DIR
    tmp = series_root / f".{name}{TMP_MARK}{secrets.token_hex(4)}"
    result: dict[str, Any] = {"uid": job.uid, "attempt": attempt, "pid": os.getpid(), "out_name": name}
    try:
        bundle = _worker_bundle(cfg.model, cfg.model_sha256, cfg.torch_threads)
        t_load = time.perf_counter()
        volume = load_dicom(job.folder, series=job.uid)
        if volume.modality != bundle.modality:
            raise ModelError(f"series {job.uid} is {volume.modality} but model {bundle.name} is for "
                             f"{bundle.modality} images")
        tmp.mkdir(parents=True)
        labels, written = segment_series(volume, bundle, tmp, pipeline=cfg.pipeline)
        notes = []
        if cfg.rtstruct and volume.source is not None:
            from planner.errors import LabelMapError
            from segmentation.rtstruct import write_rtstruct

            deid = (lambda ds: deidentify_dataset(ds, UidMap(cfg.uid_secret))) if cfg.deidentify else None
            try:
                written.append(write_rtstruct(labels, volume.source, tmp / "rtstruct.dcm", label=bundle.name,
                                              transform=deid))
            except LabelMapError as exc:  # e.g. a resampled (tilted) series: slices are not the source's
                notes.append(f"rtstruct.dcm not written: {exc}")
        if cfg.deidentify and (tmp / "seg.dcm").exists():
            _deidentify_file(tmp / "seg.dcm", UidMap(cfg.uid_secret))
        rows = structure_statistics(volume, labels, name)
        _replace_folder(tmp, series_root / name)
        result.update(ok=True, rows=rows, files=sorted(p.name for p in written), warnings=list(volume.warnings) + notes,
                      seconds_after_model_load=round(time.perf_counter() - t_load, 3))
    except Exception as exc:  # a failing series is reported, never fatal to the batch
        shutil.rmtree(tmp, ignore_errors=True)
        result.update(ok=False, error=redact(_one_line(exc)))
    result.update(seconds=round(time.perf_counter() - t0, 3), cpu_seconds=round(time.process_time() - cpu0, 3),
                  model_loads=_LOADS)
    return result


# ============================================================================ ledger
class Ledger:
    """SQLite record of finished and failed series (driver process only)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS series (
                series_uid TEXT NOT NULL, input_hash TEXT NOT NULL, config_hash TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
                attempts INTEGER NOT NULL, out_name TEXT, result_json TEXT NOT NULL, error TEXT,
                seconds REAL, finished_utc TEXT NOT NULL,
                PRIMARY KEY (series_uid, input_hash, config_hash));
        """)
        self.db.commit()

    def secret(self) -> str:
        """The per-output-folder secret for UID mapping (created on first use)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'uid_secret'").fetchone()
        if row:
            return str(row[0])
        value = secrets.token_hex(16)
        self.db.execute("INSERT INTO meta (key, value) VALUES ('uid_secret', ?)", (value,))
        self.db.commit()
        return value

    def lookup(self, job: SeriesJob, config_hash: str) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute("SELECT status, result_json FROM series WHERE series_uid = ? AND input_hash = ? "
                              "AND config_hash = ?", (job.uid, job.input_hash, config_hash)).fetchone()
        return (str(row[0]), json.loads(row[1])) if row else None

    def record(self, job: SeriesJob, config_hash: str, result: Mapping[str, Any]) -> None:
        status = "done" if result.get("ok") else "failed"
        self.db.execute(
            "INSERT OR REPLACE INTO series (series_uid, input_hash, config_hash, status, attempts, out_name, "
            "result_json, error, seconds, finished_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.uid, job.input_hash, config_hash, status, int(result.get("attempt", 1)), result.get("out_name"),
             json.dumps(dict(result)), result.get("error"), result.get("seconds"),
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        self.db.commit()

    def rows(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT series_uid, input_hash, config_hash, status, attempts, out_name, error "
                              "FROM series ORDER BY series_uid")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold a lock on ``out_dir`` so two batch runs never write into one output folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_NAME, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PlannerError(f"{out_dir}: another plexplan batch is writing into this folder; "
                               "wait for it or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sweep_temporaries(out_dir: Path) -> list[Path]:
    """Remove temporary series folders left by killed workers (no run may be in flight)."""
    removed = []
    root = out_dir / SERIES_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# ============================================================================ driver
@dataclass
class BatchSummary:
    """What a batch run did (also written to ``manifest.json``)."""

    out_dir: Path
    selected: int = 0
    computed: int = 0
    reused: int = 0
    done: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # one per selected series, in ``jobs`` order
    jobs: list[SeriesJob] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("plexus-planner", "torch", "monai", "numpy", "pydicom", "highdicom", "SimpleITK", "dask",
                 "distributed"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _resolve_model(model: str | os.PathLike[str] | None, rules: Rules) -> Any:
    from segmentation.bundle import default_bundle_path, read_bundle
    from segmentation.commands.segment import DEFAULT_BUNDLES

    if model is not None:
        return read_bundle(model)
    modality = rules.modalities[0] if len(rules.modalities) == 1 else "CT"
    name = DEFAULT_BUNDLES.get(modality)
    if name is None:
        raise ModelError(f"no shipped segmentation model for {modality} yet "
                         f"(available: {', '.join(DEFAULT_BUNDLES) or 'none'}); pass --model BUNDLE")
    return read_bundle(default_bundle_path(name))


@contextlib.contextmanager
def _client(workers: int, scheduler: str | None, client: Any) -> Iterator[Any]:
    """The Dask client: the one given, one connected to ``scheduler``, or a local cluster."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as c:
            yield c
        return
    import logging

    with LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as c:
        yield c


def _write_csv(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path) as tmp:
        tmp.write_text(buffer.getvalue())


def run_batch(input_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
              model: str | os.PathLike[str] | None = None, rules: Rules = Rules(), workers: int = 2,
              scheduler: str | None = None, client: Any = None, deidentify: bool = False,
              rtstruct: bool = False, hash_mode: str = "stat", retry_failed: bool = False, progress: bool = True,
              pipeline: str | None = None, ledger: str | os.PathLike[str] | None = None,
              on_result: Callable[[dict[str, Any]], None] | None = None,
              arguments: Mapping[str, Any] | None = None) -> BatchSummary:
    """Segment every selected series under ``input_dir`` into ``out_dir`` (see module docstring).

    Args:
        model: bundle folder; default the shipped bundle for the rules' modality.
        workers: local worker processes (ignored with ``scheduler`` or ``client``).
        scheduler: ``tcp://HOST:PORT`` of an existing Dask scheduler; its workers must see
            ``input_dir``, ``out_dir`` and ``model`` at the same paths.
        client: an existing ``distributed.Client`` to use (tests, notebooks).
        pipeline: "module:function" run instead of the bundle modality's pipeline.
        on_result: called in the driver with every task result as it arrives.
        arguments: what to record as the run's arguments in the manifest.

    Returns:
        :class:`BatchSummary`. Failures are in ``failed``; this raises only for problems
        with the run as a whole (no input folder, no model, output folder in use).
    """
    t_start = time.perf_counter()
    out = Path(out_dir).absolute()  # workers of a remote cluster need absolute paths
    input_dir = Path(input_dir).absolute()
    if int(workers) < 1:
        raise PlannerError(f"--workers must be >= 1, got {workers}")
    bundle = _resolve_model(model, rules)
    bundle.verify_weights()
    if pipeline is None:
        from segmentation.commands.segment import PIPELINES

        if bundle.modality not in PIPELINES:
            raise ModelError(f"{bundle.root}: bundle modality {bundle.modality!r} has no pipeline "
                             f"(known: {', '.join(PIPELINES)})")
    model_sha = str(bundle.ours["model_sha256"])
    with _exclusive(out):
        book = Ledger(ledger or out / LEDGER_NAME)
        try:
            return _run_locked(Path(input_dir), out, book, bundle, model_sha, rules, workers, scheduler, client,
                               deidentify, rtstruct, hash_mode, retry_failed, progress, pipeline, on_result,
                               arguments, t_start)
        finally:
            book.close()


def _run_locked(input_dir: Path, out: Path, book: Ledger, bundle: Any, model_sha: str, rules: Rules,
                workers: int, scheduler: str | None, client: Any, deidentify: bool, rtstruct: bool, hash_mode: str,
                retry_failed: bool, progress: bool, pipeline: str | None,
                on_result: Callable[[dict[str, Any]], None] | None, arguments: Mapping[str, Any] | None,
                t_start: float) -> BatchSummary:
    swept = sweep_temporaries(out)
    t0 = time.perf_counter()
    jobs, skipped = discover(input_dir, rules, hash_mode)
    discovery_s = time.perf_counter() - t0
    for job in [j for j in jobs if j.modality != bundle.modality]:
        skipped.append(Skipped("series", job.uid, job.folder,
                               f"modality {job.modality}: model {bundle.name} is for {bundle.modality} images"))
    jobs = [j for j in jobs if j.modality == bundle.modality]
    cfg = TaskConfig(out_dir=str(out.resolve()), model=str(Path(bundle.root).resolve()), model_sha256=model_sha,
                     pipeline=pipeline, deidentify=deidentify, uid_secret=book.secret() if deidentify else "",
                     rtstruct=rtstruct)
    config_hash = hashlib.sha256(json.dumps({"model_sha256": model_sha, "deidentify": deidentify,
                                             "pipeline": pipeline, "rtstruct": rtstruct},
                                            sort_keys=True).encode()).hexdigest()
    summary = BatchSummary(out_dir=out, selected=len(jobs), skipped=skipped)
    pending: list[SeriesJob] = []
    final: dict[str, dict[str, Any]] = {}
    for job in jobs:
        found = book.lookup(job, config_hash)
        if found and (found[0] == "done" or not retry_failed):
            final[job.uid] = {**found[1], "reused": True}
            summary.reused += 1
        else:
            pending.append(job)
    t_compute = time.perf_counter()
    cluster_info: dict[str, Any] = {}
    if pending:
        with _client(workers, scheduler, client) as c:
            cluster_info = {"scheduler": c.scheduler.address, "dashboard": c.dashboard_link,
                            "workers": len(c.scheduler_info().get("workers", {}))}
            if progress:
                print(f"dask dashboard: {c.dashboard_link}", file=sys.stderr)
            for result in _compute(c, pending, cfg, progress):
                job_uid = result["uid"]
                final[job_uid] = result
                summary.computed += 1
                book.record(next(j for j in pending if j.uid == job_uid), config_hash, result)
                if on_result is not None:
                    on_result(result)
    compute_s = time.perf_counter() - t_compute
    swept += sweep_temporaries(out)
    summary.jobs = list(jobs)
    summary.results = [final[j.uid] for j in jobs]
    summary.done = sum(1 for r in summary.results if r.get("ok"))
    summary.failed = [r for r in summary.results if not r.get("ok")]
    _write_reports(out, summary, input_dir, bundle, model_sha, cfg, rules, hash_mode, arguments, cluster_info,
                   {"discovery_s": round(discovery_s, 3), "compute_s": round(compute_s, 3),
                    "total_s": round(time.perf_counter() - t_start, 3)}, len(swept))
    return summary


def _compute(c: Any, pending: Sequence[SeriesJob], cfg: TaskConfig, progress: bool) -> Iterator[dict[str, Any]]:
    """Submit every pending series, retry a failure once, yield final results as they arrive."""
    from distributed import as_completed

    from tqdm import tqdm

    by_key: dict[str, tuple[SeriesJob, int]] = {}

    def submit(job: SeriesJob, attempt: int) -> Any:
        key = f"segment-series-{hashlib.sha256(job.uid.encode()).hexdigest()[:12]}-try{attempt}"
        by_key[key] = (job, attempt)
        return c.submit(process_series, job, cfg, attempt, key=key, pure=False)

    futures = as_completed([submit(j, 1) for j in pending])
    bar = tqdm(total=len(pending), desc="series", unit="series", disable=not progress, file=sys.stderr)
    try:
        for future in futures:
            job, attempt = by_key[future.key]
            try:
                result = future.result()
            except Exception as exc:  # e.g. KilledWorker: the task's workers died repeatedly
                result = {"uid": job.uid, "attempt": attempt, "ok": False, "out_name": out_name(job.uid, cfg),
                          "error": f"worker lost: {_one_line(exc)}", "seconds": None}
            future.release()
            if not result.get("ok") and attempt < MAX_ATTEMPTS:
                log.info("series %s failed (%s); retrying once", job.uid, result.get("error"))
                futures.add(submit(job, attempt + 1))
                continue
            bar.update(1)
            yield result
    finally:
        bar.close()


def _write_reports(out: Path, summary: BatchSummary, input_dir: Path, bundle: Any, model_sha: str,
                   cfg: TaskConfig, rules: Rules, hash_mode: str, arguments: Mapping[str, Any] | None,
                   cluster_info: Mapping[str, Any], timings: dict[str, Any], n_swept: int) -> None:
    """structures.csv, skipped.csv and manifest.json for the whole batch (atomically)."""
    uid_map = UidMap(cfg.uid_secret) if cfg.deidentify else None

    def show_uid(uid: str) -> str:
        return uid_map(uid) if uid_map and uid else uid

    def show_path(path: str) -> str:
        if uid_map:
            return WITHHELD
        return redact(path)

    def show_text(text: str) -> str:
        text = redact(text or "")
        if uid_map:
            for r in summary.results:
                text = text.replace(r["uid"], show_uid(r["uid"]))
            for s in summary.skipped:
                if s.uid:
                    text = text.replace(s.uid, show_uid(s.uid))
        return text

    rows = [row for r in summary.results if r.get("ok") for row in r.get("rows", [])]
    _write_csv(out / STATS_NAME, STATS_FIELDS, rows)
    _write_csv(out / SKIPPED_NAME, ["kind", "series_uid", "path", "reason"],
               ({"kind": s.kind, "series_uid": show_uid(s.uid), "path": show_path(s.path),
                 "reason": show_text(s.reason)} for s in summary.skipped))
    per_series = [{"series_uid": show_uid(r["uid"]), "status": "done" if r.get("ok") else "failed",
                   "reused_from_ledger": bool(r.get("reused")), "attempts": r.get("attempt"),
                   "seconds": r.get("seconds"), "cpu_seconds": r.get("cpu_seconds"), "output": f"{SERIES_DIR}/{r.get('out_name')}" if r.get("ok") else None,
                   "error": show_text(r.get("error", "")) or None,
                   "input": {"folder": show_path(job.folder), "files": len(job.files), "slices": job.n_slices,
                             "description": WITHHELD if uid_map else job.description,
                             "input_hash": job.input_hash},
                   "warnings": [show_text(w) for w in r.get("warnings", [])]}
                  for job, r in zip(summary.jobs, summary.results)]
    args = {k: (show_path(str(v)) if k in ("input_dir", "out", "model", "ledger") and uid_map else v)
            for k, v in dict(arguments or {}).items()}
    manifest = {
        "tool": "plexplan batch", "note": "Research and education software, not a medical device.",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software": _versions(),
        "model": {"name": bundle.name, "version": str(bundle.metadata.get("version", "")),
                  "modality": bundle.modality, "sha256": model_sha,
                  "path": show_path(str(bundle.root)), "pipeline": cfg.pipeline},
        "arguments": args,
        "input_dir": show_path(str(input_dir)),
        "rules": dataclasses.asdict(rules), "hash_mode": hash_mode, "deidentified": cfg.deidentify,
        "rtstruct": cfg.rtstruct,
        "cluster": dict(cluster_info),
        "counts": {"selected": summary.selected, "computed": summary.computed, "reused": summary.reused,
                   "done": summary.done, "failed": len(summary.failed), "skipped": len(summary.skipped),
                   "temporaries_swept": n_swept},
        "timings": timings,
        "failures": [p for p in per_series if p["status"] == "failed"],
        "series": per_series,
        "outputs": {"statistics": STATS_NAME, "skipped": SKIPPED_NAME, "series": f"{SERIES_DIR}/"},
    }
    summary.manifest = manifest
    with atomic_output(out / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")

"""``plexplan batch INPUT_DIR --out DIR``: segment every selected series of a DICOM tree.

Runs the ``plexplan segment`` pipeline on each series as Dask tasks: local worker
processes (``--workers N``) or an existing cluster (``--scheduler tcp://HOST:PORT``, whose
dashboard shows the progress). Resumable (SQLite ledger in DIR); see
:mod:`segmentation.batch` for the output layout. torch and Dask load inside :func:`run`.

Exit status: 0 when every selected series is done, 1 when some failed (they are listed
in DIR/manifest.json), 2 for a problem with the run itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "batch"
HELP = "segment every selected DICOM series under a folder (local workers or a Dask cluster), resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input_dir", help="folder searched recursively for DICOM series")
    parser.add_argument("--out", required=True, help="output folder (series/, structures.csv, manifest.json, ledger)")
    parser.add_argument("--model", default=None, help="MONAI bundle folder (default: the shipped bundle for CT)")
    parser.add_argument("--rules", default=None,
                        help="YAML/JSON selection rules: modalities, body_parts, allow_missing_body_part, "
                             "min_slices, description (regex); default: CT series")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    where.add_argument("--scheduler", default=None,
                       help="tcp://HOST:PORT of an existing Dask scheduler (workers must see the same paths)")
    parser.add_argument("--deidentify", action="store_true",
                        help="outputs without patient identifiers (DICOM PS3.15 basic profile); the ledger "
                             "keeps the key: do not share it")
    parser.add_argument("--rtstruct", action="store_true",
                        help="also write each series' structures as a DICOM RTSTRUCT (rtstruct.dcm)")
    parser.add_argument("--hash", dest="hash_mode", choices=("stat", "content"), default="stat",
                        help="identify input files by path+size+mtime (default) or by their bytes")
    parser.add_argument("--retry-failed", action="store_true", help="run series that failed in an earlier run again")
    parser.add_argument("--ledger", default=None, help="ledger file (default DIR/ledger.sqlite)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from segmentation.batch import MANIFEST_NAME, Rules, run_batch

    rules = Rules.from_file(args.rules) if args.rules else Rules()
    arguments = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    arguments["input_dir"] = str(Path(args.input_dir))
    summary = run_batch(args.input_dir, args.out, model=args.model, rules=rules, workers=args.workers,
                        scheduler=args.scheduler, deidentify=args.deidentify, rtstruct=args.rtstruct,
                        hash_mode=args.hash_mode, retry_failed=args.retry_failed, progress=not args.no_progress,
                        ledger=args.ledger, arguments=arguments)
    print(f"{summary.selected} series selected: {summary.done} done, {len(summary.failed)} failed "
          f"({summary.computed} run now, {summary.reused} from the ledger); {len(summary.skipped)} skipped")
    for item in summary.skipped:
        print(f"skipped {item.kind} {item.uid or item.path}: {item.reason}" if not args.deidentify
              else f"skipped {item.kind}: {item.reason}")
    for failure in summary.manifest.get("failures", []):
        print(f"failed {failure['series_uid']} after {failure['attempts']} attempt(s): {failure['error']}")
    print(f"wrote {Path(args.out) / MANIFEST_NAME}")
    return 1 if summary.failed else 0

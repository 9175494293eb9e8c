"""``plexplan outcome``: analgesia-duration estimate (predict), refit on a registry (fit),
synthetic cohort export (cohort), registry check (check) and the column schema (schema)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

NAME = "outcome"
HELP = "analgesia-duration estimate: predict, fit on a registry, export a synthetic cohort"

_BOOL_INPUTS = ("bilateral", "distant_metastases", "celiac_axis_encasement", "diabetes",
                "prior_upper_abdominal_surgery", "early_procedure", "repeat_procedure")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from planner.analgesia.features import APPROACHES, PROCEDURES, TUMOUR_SITES

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("predict", help="estimate for one patient (JSON on stdout)",
                       description="Estimate for one patient and plan. Inputs come from --json, --plan and "
                                   "flags; a value given twice is an error. Unset inputs take the reference "
                                   "patient's value (listed in the output).")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="JSON object of clinical inputs")
    p.add_argument("--plan", metavar="PLAN_JSON", help="plan.json: procedure, approach, bilateral, spread, encasement")
    p.add_argument("--model", metavar="FILE", help="model file (default: the shipped synthetic-cohort model)")
    p.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--procedure", choices=PROCEDURES)
    p.add_argument("--approach", choices=sorted({a for v in APPROACHES.values() for a in v}))
    p.add_argument("--tumour-site", choices=TUMOUR_SITES)
    p.add_argument("--spread-quadrants", type=int, choices=range(5))
    p.add_argument("--oral-morphine-mg-day", type=float)
    p.add_argument("--ecog", type=int, choices=range(5))
    p.add_argument("--baseline-pain", type=float)
    for name in _BOOL_INPUTS:
        p.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None)

    f = sub.add_parser("fit", help="fit a model file and card from a registry CSV",
                       description="Validate the registry (every bad row and column is reported), print "
                                   "cross-validated C-index, calibration (ICI) and integrated Brier score, and "
                                   "write DIR/analgesia_model_<version>.json with DIR/README.md.")
    f.add_argument("registry", help="registry CSV (see `plexplan outcome schema`)")
    f.add_argument("--out", required=True, metavar="DIR", help="output folder for the model file and its card")
    f.add_argument("--drop-bad-rows", action="store_true", help="leave reported bad rows out (and ignore extra columns)")
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    f.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    f.add_argument("--version", help="model version in the file name (default from the CSV hash)")

    c = sub.add_parser("cohort", help="write a seeded synthetic cohort CSV in the registry schema")
    c.add_argument("--n", type=int, default=5000, help="patients (default 5000)")
    c.add_argument("--seed", type=int, required=True, help="random seed")
    c.add_argument("--out", required=True, metavar="CSV", help="output CSV (a .provenance.json is written next to it)")

    k = sub.add_parser("check", help="validate a registry CSV and list every problem")
    k.add_argument("registry")

    sub.add_parser("schema", help="print the registry column schema")


def run(args: argparse.Namespace) -> int:
    return {"predict": _predict, "fit": _fit, "cohort": _cohort, "check": _check, "schema": _schema}[args.action](args)


def _read_json(path: str, what: str) -> Any:
    from planner.errors import OutcomeModelError

    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise OutcomeModelError(f"cannot read {what} {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise OutcomeModelError(f"{what} {path} is not valid JSON: {exc}") from exc


def _predict(args: argparse.Namespace) -> int:
    from planner.analgesia import ClinicalInputs, inputs_from_plan, load_model, predict
    from planner.errors import OutcomeModelError

    values: dict[str, Any] = {}
    if args.json_file:
        values = _read_json(args.json_file, "inputs file")
        if not isinstance(values, dict):
            raise OutcomeModelError(f"inputs file {args.json_file} must hold a JSON object")
    for field_ in fields(ClinicalInputs):
        flag = getattr(args, field_.name, None)
        if flag is None:
            continue
        if field_.name in values:
            raise OutcomeModelError(f"{field_.name} is given both in {args.json_file} and as a flag")
        values[field_.name] = flag
    if args.plan:
        inputs = inputs_from_plan(_read_json(args.plan, "plan"), **values)
    else:
        inputs = ClinicalInputs.from_mapping(values)
    estimate = predict(inputs, load_model(args.model) if args.model else None)
    text = json.dumps(estimate.to_dict(), indent=2)
    if args.out:
        from planner.volume import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(text + "\n")
    print(text)
    return 0


def _print_problems(problems: list, to_stdout: bool = False) -> None:
    stream = sys.stdout if to_stdout else sys.stderr
    for problem in problems:
        print(f"  {problem}", file=stream)


def _fit(args: argparse.Namespace) -> int:
    from planner.analgesia.refit import RefitBlocked, refit, summary

    try:
        result = refit(args.registry, args.out, drop_bad_rows=args.drop_bad_rows, folds=args.folds,
                       seed=args.seed, version=args.version)
    except RefitBlocked as exc:
        print(f"registry problems ({len(exc.result.problems)}):", file=sys.stderr)
        _print_problems(exc.result.problems)
        raise
    if result.problems:
        print(f"left out {len(result.dropped_rows)} bad row(s) and ignored extra columns; problems were:",
              file=sys.stderr)
        _print_problems(result.problems)
    assert result.model is not None
    report = {"label": result.model.label, "model_file": str(result.model_path), "card": str(result.card_path),
              "rows_used": result.model.meta["training"]["n"], "rows_dropped": result.dropped_rows,
              **{k: summary(v) for k, v in result.metrics.items()}}
    print(json.dumps(report, indent=2))
    return 0


def _cohort(args: argparse.Namespace) -> int:
    from planner.analgesia.refit import write_cohort

    csv_path, prov = write_cohort(args.n, args.seed, args.out)
    print(f"wrote {args.n} synthetic patients (seed {args.seed}) to {csv_path} with provenance {prov}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from planner.analgesia.registry import read_registry

    registry = read_registry(args.registry)
    if not registry.problems:
        print(f"{args.registry}: {len(registry.rows)} rows, no problems")
        return 0
    print(f"{args.registry}: {len(registry.problems)} problem(s), {len(registry.bad_rows)} bad row(s) "
          f"of {registry.n_rows_read}:")
    _print_problems(registry.problems, to_stdout=True)
    return 1


def _schema(args: argparse.Namespace) -> int:
    from planner.analgesia.registry import OPTIONAL_COLUMNS, SCHEMA

    for name, (kind, text) in SCHEMA.items():
        print(f"{name:32s} {kind:12s} {text}")
    for name, text in OPTIONAL_COLUMNS.items():
        print(f"{name:32s} {'optional':12s} {text}")
    return 0

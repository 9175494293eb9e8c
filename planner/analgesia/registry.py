"""Registry CSV schema: read with a full report of every bad row and column, write cohorts.

One row per procedure. Column schema (also in ``docs/registry_schema.md``): see
:data:`SCHEMA`. Nothing is silently dropped: :func:`read_registry` returns the good rows and a
list of :class:`Problem` (row number, column, reason); the caller decides whether to stop.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from planner.analgesia.features import APPROACHES, PROCEDURES, TUMOUR_SITES
from planner.errors import OutcomeModelError
from planner.volume import atomic_output

#: column -> (kind, description). kinds: category, bool, int, number, time (see _parse).
SCHEMA: dict[str, tuple[str, str]] = {
    "procedure": ("category", f"one of {', '.join(PROCEDURES)}"),
    "approach": ("category", "route allowed for the procedure: "
                 + "; ".join(f"{p}: {', '.join(a)}" for p, a in APPROACHES.items())),
    "bilateral": ("bool", "1 bilateral, 0 unilateral"),
    "tumour_site": ("category", f"one of {', '.join(TUMOUR_SITES)}"),
    "distant_metastases": ("bool", "1 if stage IV (distant metastases)"),
    "celiac_axis_encasement": ("bool", "1 if the tumour encases the celiac axis on CT"),
    "spread_quadrants": ("int 0-4", "celiac neurolysis: quadrants around the aorta/celiac trunk reached by the "
                         "injectate; other procedures: 4 (not assessed)"),
    "oral_morphine_mg_day": ("number >= 0", "oral morphine equivalent before the procedure, mg/day"),
    "ecog": ("int 0-4", "ECOG performance status"),
    "diabetes": ("bool", "1 if diabetes mellitus"),
    "prior_upper_abdominal_surgery": ("bool", "1 if prior upper-abdominal surgery"),
    "early_procedure": ("bool", "1 early neurolysis, 0 late/rescue"),
    "repeat_procedure": ("bool", "1 repeat neurolysis, 0 first"),
    "baseline_pain": ("number 0-10", "pain score (NRS) before the procedure"),
    "initial_response": ("bool", "1 if meaningful pain relief was reached after the procedure"),
    "relief_weeks": ("time > 0", "responders: weeks from the procedure to loss of relief, death while "
                     "relieved, or last follow-up still relieved; non-responders: empty"),
    "relief_lost": ("bool", "responders: 1 if relief was lost at relief_weeks; non-responders: empty or 0"),
    "died_relieved": ("bool", "responders: 1 if the patient died still relieved at relief_weeks; "
                      "non-responders: empty or 0"),
}
OPTIONAL_COLUMNS: dict[str, str] = {"patient_id": "free text, ignored by the model (never logged)"}
COLUMNS: tuple[str, ...] = tuple(SCHEMA)
_OUTCOMES = ("relief_weeks", "relief_lost", "died_relieved")


@dataclass(frozen=True)
class Problem:
    """One reason a row (or a whole column, ``row`` None) cannot be used."""

    row: int | None  # 1-based data row (blank lines not counted); None for a column problem
    column: str | None
    reason: str
    line: int | None = None  # line in the file where the row ends (header = line 1)

    def __str__(self) -> str:
        where = f"row {self.row} (line {self.line or self.row + 1})" if self.row is not None else "header"
        return f"{where}, column {self.column!r}: {self.reason}" if self.column else f"{where}: {self.reason}"


@dataclass
class Registry:
    """Parsed good rows (column arrays), the rows they came from, and all problems found."""

    columns: dict[str, np.ndarray]
    rows: list[int]
    problems: list[Problem] = field(default_factory=list)
    n_rows_read: int = 0

    @property
    def bad_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems if p.row is not None})

    @property
    def column_problems(self) -> list[Problem]:
        return [p for p in self.problems if p.row is None]


def _parse_bool(text: str) -> float:
    if text in ("0", "1"):
        return float(text)
    raise ValueError(f"must be 0 or 1, got {text!r}")


def _finite_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _parse_number(low: float, high: float, integer: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _finite_number(text)
        if integer and not value.is_integer():
            raise ValueError(f"must be a whole number, got {text!r}")
        if value < low or value > high:
            raise ValueError(f"must be from {low:g} to {high:g}, got {text!r}")
        return value
    return parse


def _parse_time(text: str) -> float:
    value = _finite_number(text)
    if value < 0:
        raise ValueError(f"negative time {text!r}")
    if value == 0:
        raise ValueError("time must be greater than 0 weeks")
    return value


_PARSERS: dict[str, Callable[[str], float]] = {
    "spread_quadrants": _parse_number(0, 4, integer=True),
    "oral_morphine_mg_day": _parse_number(0, 20000),
    "ecog": _parse_number(0, 4, integer=True),
    "baseline_pain": _parse_number(0, 10),
}


def _check_row(values: dict[str, str], row: int) -> tuple[dict[str, object], list[Problem]]:
    parsed: dict[str, object] = {}
    problems: list[Problem] = []

    def bad(column: str, reason: str) -> None:
        problems.append(Problem(row, column, reason))

    for column in COLUMNS:
        if column in _OUTCOMES:
            continue
        text = values.get(column, "").strip()
        kind = SCHEMA[column][0]
        if text == "":
            bad(column, "missing value")
            continue
        if kind == "category":
            parsed[column] = text
            continue
        try:
            parsed[column] = _parse_bool(text) if kind == "bool" else _PARSERS[column](text)
        except ValueError as exc:
            bad(column, str(exc))
    procedure = parsed.get("procedure")
    if procedure is not None and procedure not in PROCEDURES:
        bad("procedure", f"unknown category {procedure!r}; use one of {', '.join(PROCEDURES)}")
    elif procedure is not None and parsed.get("approach") is not None \
            and parsed["approach"] not in APPROACHES[str(procedure)]:
        bad("approach", f"unknown category {parsed['approach']!r} for {procedure}; "
                        f"use one of {', '.join(APPROACHES[str(procedure)])}")
    site = parsed.get("tumour_site")
    if site is not None and site not in TUMOUR_SITES:
        bad("tumour_site", f"unknown category {site!r}; use one of {', '.join(TUMOUR_SITES)}")

    responder = parsed.get("initial_response") == 1.0
    texts = {c: values.get(c, "").strip() for c in _OUTCOMES}
    if responder:
        if texts["relief_weeks"] == "":
            bad("relief_weeks", "missing duration for a responder")
        else:
            try:
                parsed["relief_weeks"] = _parse_time(texts["relief_weeks"])
            except ValueError as exc:
                bad("relief_weeks", str(exc))
        for column in ("relief_lost", "died_relieved"):
            if texts[column] == "":
                bad(column, "missing event indicator for a responder")
                continue
            try:
                parsed[column] = _parse_bool(texts[column])
            except ValueError as exc:
                bad(column, f"event {exc}")
        if parsed.get("relief_lost") == 1.0 and parsed.get("died_relieved") == 1.0:
            bad("died_relieved", "relief_lost and died_relieved cannot both be 1 (competing events)")
    elif "initial_response" in parsed:
        if texts["relief_weeks"] not in ("", "0", "0.0"):
            bad("relief_weeks", "non-responder with a relief duration; leave it empty")
        for column in ("relief_lost", "died_relieved"):
            if texts[column] not in ("", "0"):
                bad(column, f"non-responder must have {column} empty or 0, got {texts[column]!r}")
        parsed.update(relief_weeks=math.nan, relief_lost=0.0, died_relieved=0.0)
    return parsed, problems


def read_registry(path: Path | str) -> Registry:
    """Read and validate a registry CSV; every problem is reported, none silently fixed."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise OutcomeModelError(f"cannot open registry {path}: {exc}") from exc
    problems: list[Problem] = []
    good: list[dict[str, object]] = []
    rows: list[int] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise OutcomeModelError(f"registry {path} is empty; expected a header row with {', '.join(COLUMNS)}") from None
        except csv.Error as exc:
            raise OutcomeModelError(f"registry {path} is not valid CSV: {exc}") from exc
        seen: set[str] = set()
        for name in header:
            if name in seen:
                problems.append(Problem(None, name, "duplicate column"))
            seen.add(name)
            if name not in SCHEMA and name not in OPTIONAL_COLUMNS:
                problems.append(Problem(None, name, "extra column not in the schema (remove or rename it)"))
        for name in COLUMNS:
            if name not in seen:
                problems.append(Problem(None, name, "required column missing"))
        n_read = 0
        try:
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                n_read += 1
                row_number, line = n_read, reader.line_num
                if len(record) != len(header):
                    problems.append(Problem(row_number, None, f"{len(record)} fields, header has {len(header)}", line))
                    continue
                values = dict(zip(header, record))
                parsed, row_problems = _check_row(values, row_number)
                row_problems = [Problem(p.row, p.column, p.reason, line) for p in row_problems
                                if p.column in seen or p.column is None]
                problems.extend(row_problems)
                if not row_problems:
                    good.append(parsed)
                    rows.append(row_number)
        except csv.Error as exc:
            raise OutcomeModelError(f"registry {path} is not valid CSV near line {reader.line_num}: {exc}") from exc
    columns: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        categorical = SCHEMA[name][0] == "category"
        missing = None if categorical else math.nan  # only for a missing column, which blocks any fit
        columns[name] = np.array([r.get(name, missing) for r in good], dtype=object if categorical else float)
    return Registry(columns=columns, rows=rows, problems=problems, n_rows_read=n_read)


def write_registry(columns: dict[str, np.ndarray], path: Path | str) -> Path:
    """Write cohort/registry columns as CSV in the schema (atomically)."""
    path = Path(path)
    n = len(columns["procedure"])
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for i in range(n):
                writer.writerow([_format(name, columns[name][i]) for name in COLUMNS])
    return path


def _format(name: str, value: object) -> str:
    kind = SCHEMA[name][0]
    if kind == "category":
        return str(value)
    value = float(value)  # type: ignore[arg-type]
    if math.isnan(value):
        return ""
    if kind in ("bool", "int 0-4") or value.is_integer():
        return str(int(value))
    return f"{value:g}"

"""Clinical inputs of the analgesia-duration model and their encoding as model features.

One vocabulary for the cohort generator, the registry reader and the model: the categories
allowed for each input (:data:`PROCEDURES`, :data:`APPROACHES`, :data:`TUMOUR_SITES`), the
frozen :class:`ClinicalInputs` a caller fills in, and :func:`encode`, which turns inputs into
the feature vector (0 for every feature = the reference patient, :data:`REFERENCE`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from planner.errors import OutcomeModelError, PlanError

PROCEDURES: tuple[str, ...] = (
    "celiac_neurolysis",
    "splanchnic_neurolysis",
    "superior_hypogastric_neurolysis",
)
APPROACHES: dict[str, tuple[str, ...]] = {
    "celiac_neurolysis": ("posterior_retrocrural", "transcrural", "transaortic", "transdiscal",
                          "anterior", "eus"),
    "splanchnic_neurolysis": ("posterior",),
    "superior_hypogastric_neurolysis": ("posterior", "transdiscal"),
}
#: Routes through the skin (all but endoscopic ultrasound); the body/tail effect applies to them.
NON_PERCUTANEOUS = frozenset({"eus"})
TUMOUR_SITES: tuple[str, ...] = ("head", "body_tail", "pelvic")
#: Quadrant spread is assessed for celiac neurolysis only; other procedures are coded 4 (reference).
SPREAD_ASSESSED = frozenset({"celiac_neurolysis"})
NOT_ASSESSED_QUADRANTS = 4
OPIOID_THRESHOLD_MG = 150.0  # Oh 2018 cut-off (oral morphine equivalent, mg/day)
BASELINE_PAIN_CENTRE = 7.0

#: Model features in a fixed order: name -> what a value of 1 means (vs the reference patient).
FEATURES: dict[str, str] = {
    "spread_3q": "injectate spread 3 quadrants (reference 4)",
    "spread_le2": "injectate spread 2 quadrants or fewer (reference 4)",
    "celiac_axis_encasement": "tumour encases the celiac axis",
    "distant_metastases": "distant metastases (stage IV)",
    "body_tail_percutaneous": "body/tail tumour treated by a percutaneous route",
    "opioid_high": f"oral morphine equivalent >= {OPIOID_THRESHOLD_MG:g} mg/day",
    "ecog_2_3": "ECOG performance status 2 or worse (reference 0-1)",
    "rescue_procedure": "late/rescue procedure (reference early)",
    "unilateral": "unilateral procedure (reference bilateral)",
    "diabetes": "diabetes mellitus",
    "prior_upper_abdominal_surgery": "prior upper-abdominal surgery",
    "repeat_procedure": "repeat neurolysis (reference first)",
    "procedure_splanchnic": "splanchnic neurolysis (reference celiac plexus)",
    "procedure_superior_hypogastric": "superior hypogastric plexus neurolysis (reference celiac plexus)",
    "baseline_pain": f"baseline pain score, per point above {BASELINE_PAIN_CENTRE:g} (NRS 0-10)",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)

#: plan.json procedure presets (written by the trajectory planner) -> (procedure, approach).
PLAN_PRESETS: dict[str, tuple[str, str]] = {
    "celiac_posterior_retrocrural": ("celiac_neurolysis", "posterior_retrocrural"),
    "celiac_transcrural": ("celiac_neurolysis", "transcrural"),
    "celiac_transaortic": ("celiac_neurolysis", "transaortic"),
    "celiac_transdiscal": ("celiac_neurolysis", "transdiscal"),
    "celiac_anterior": ("celiac_neurolysis", "anterior"),
    "superior_hypogastric_posterior": ("superior_hypogastric_neurolysis", "posterior"),
    "superior_hypogastric_transdiscal": ("superior_hypogastric_neurolysis", "transdiscal"),
    "splanchnic": ("splanchnic_neurolysis", "posterior"),
}


@dataclass(frozen=True)
class ClinicalInputs:
    """One patient and plan, as the model sees them. Defaults are the reference patient.

    Plan-derived fields (procedure, approach, bilateral, spread, encasement) can be read from a
    ``plan.json`` with :func:`inputs_from_plan`; the rest come from the clinical record.
    """

    procedure: str = "celiac_neurolysis"
    approach: str = "posterior_retrocrural"
    bilateral: bool = True
    tumour_site: str = "head"
    distant_metastases: bool = False
    celiac_axis_encasement: bool = False
    spread_quadrants: int = 4
    oral_morphine_mg_day: float = 60.0
    ecog: int = 1
    diabetes: bool = False
    prior_upper_abdominal_surgery: bool = False
    early_procedure: bool = True
    repeat_procedure: bool = False
    baseline_pain: float = 7.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.procedure not in PROCEDURES:
            raise OutcomeModelError(f"procedure {self.procedure!r} is unknown; use one of {', '.join(PROCEDURES)}")
        allowed = APPROACHES[self.procedure]
        if self.approach not in allowed:
            raise OutcomeModelError(f"approach {self.approach!r} does not exist for {self.procedure}; "
                                    f"use one of {', '.join(allowed)}")
        if self.tumour_site not in TUMOUR_SITES:
            raise OutcomeModelError(f"tumour_site {self.tumour_site!r} is unknown; use one of {', '.join(TUMOUR_SITES)}")
        for name in ("bilateral", "distant_metastases", "celiac_axis_encasement", "diabetes",
                     "prior_upper_abdominal_surgery", "early_procedure", "repeat_procedure"):
            set_(self, name, _as_bool(name, getattr(self, name)))
        set_(self, "spread_quadrants", _as_int("spread_quadrants", self.spread_quadrants, 0, 4))
        set_(self, "ecog", _as_int("ecog", self.ecog, 0, 4))
        set_(self, "oral_morphine_mg_day", _as_float("oral_morphine_mg_day", self.oral_morphine_mg_day, 0.0, 20000.0))
        set_(self, "baseline_pain", _as_float("baseline_pain", self.baseline_pain, 0.0, 10.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ClinicalInputs":
        """Build from a dict (a JSON file); unknown keys are an error, not silently ignored."""
        from planner.config import reject_unknown_keys

        reject_unknown_keys(cls, values, "clinical input(s)", OutcomeModelError)
        return cls(**dict(values))



def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise OutcomeModelError(f"{name} must be true/false (or 0/1), got {value!r}")


def _as_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not float(value).is_integer() or not low <= value <= high:
        raise OutcomeModelError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _as_float(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise OutcomeModelError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


REFERENCE = ClinicalInputs()


def encode(inputs: ClinicalInputs) -> np.ndarray:
    """Feature vector (order :data:`FEATURE_NAMES`) of one patient; all zeros = reference."""
    percutaneous = inputs.approach not in NON_PERCUTANEOUS
    values = {
        "spread_3q": inputs.spread_quadrants == 3,
        "spread_le2": inputs.spread_quadrants <= 2,
        "celiac_axis_encasement": inputs.celiac_axis_encasement,
        "distant_metastases": inputs.distant_metastases,
        "body_tail_percutaneous": inputs.tumour_site == "body_tail" and percutaneous,
        "opioid_high": inputs.oral_morphine_mg_day >= OPIOID_THRESHOLD_MG,
        "ecog_2_3": inputs.ecog >= 2,
        "rescue_procedure": not inputs.early_procedure,
        "unilateral": not inputs.bilateral,
        "diabetes": inputs.diabetes,
        "prior_upper_abdominal_surgery": inputs.prior_upper_abdominal_surgery,
        "repeat_procedure": inputs.repeat_procedure,
        "procedure_splanchnic": inputs.procedure == "splanchnic_neurolysis",
        "procedure_superior_hypogastric": inputs.procedure == "superior_hypogastric_neurolysis",
        "baseline_pain": inputs.baseline_pain - BASELINE_PAIN_CENTRE,
    }
    return np.array([float(values[name]) for name in FEATURE_NAMES])


def encode_columns(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Feature matrix ``[n, features]`` from per-patient input arrays (cohort or registry).

    Vectorised twin of :func:`encode`; a test checks both agree row by row.
    """
    procedure = np.asarray(columns["procedure"])
    approach = np.asarray(columns["approach"])
    spread = np.asarray(columns["spread_quadrants"], dtype=float)
    b = lambda name: np.asarray(columns[name], dtype=float)  # noqa: E731
    percutaneous = ~np.isin(approach, list(NON_PERCUTANEOUS))
    values = {
        "spread_3q": spread == 3,
        "spread_le2": spread <= 2,
        "celiac_axis_encasement": b("celiac_axis_encasement"),
        "distant_metastases": b("distant_metastases"),
        "body_tail_percutaneous": (np.asarray(columns["tumour_site"]) == "body_tail") & percutaneous,
        "opioid_high": b("oral_morphine_mg_day") >= OPIOID_THRESHOLD_MG,
        "ecog_2_3": b("ecog") >= 2,
        "rescue_procedure": 1.0 - b("early_procedure"),
        "unilateral": 1.0 - b("bilateral"),
        "diabetes": b("diabetes"),
        "prior_upper_abdominal_surgery": b("prior_upper_abdominal_surgery"),
        "repeat_procedure": b("repeat_procedure"),
        "procedure_splanchnic": procedure == "splanchnic_neurolysis",
        "procedure_superior_hypogastric": procedure == "superior_hypogastric_neurolysis",
        "baseline_pain": b("baseline_pain") - BASELINE_PAIN_CENTRE,
    }
    return np.column_stack([np.asarray(values[name], dtype=float) for name in FEATURE_NAMES])


def inputs_from_plan(plan_json: Mapping[str, Any], **clinical: Any) -> ClinicalInputs:
    """Clinical inputs whose plan-derived part comes from a ``plan.json`` dict.

    Reads ``procedure`` (a preset name, see :data:`PLAN_PRESETS`), ``bilateral``, ``approach``,
    ``celiac_axis_encased`` and ``spread.quadrants`` (celiac neurolysis only; other procedures are
    coded 4, and a celiac plan whose spread rule says "not applicable" needs ``spread_quadrants``
    from the caller); the other inputs come from ``clinical``
    keyword arguments (defaults: the reference patient). A keyword that is also in the plan is an
    error, so a plan value is never silently overridden. Raises :class:`PlanError` when the plan is
    malformed.
    """
    if not isinstance(plan_json, Mapping):
        raise PlanError(f"plan must be a JSON object, got {type(plan_json).__name__}")
    preset = plan_json.get("procedure")
    if not isinstance(preset, str):
        raise PlanError(f"plan 'procedure' must be a preset name string, got {preset!r}")
    if preset in PROCEDURES:
        procedure, approach = preset, APPROACHES[preset][0]
    elif preset in PLAN_PRESETS:
        procedure, approach = PLAN_PRESETS[preset]
    else:
        raise PlanError(f"plan procedure {preset!r} has no analgesia model; known presets: "
                        f"{', '.join(PLAN_PRESETS)}")
    plan_approach = plan_json.get("approach")
    if plan_approach is not None:
        if not isinstance(plan_approach, str):
            raise PlanError(f"plan 'approach' must be a string, got {plan_approach!r}")
        normalised = plan_approach.strip().lower().replace("-", "_").replace(" ", "_")
        matches = [a for a in APPROACHES[procedure] if a == normalised or a in normalised.split("_")
                   or normalised.startswith(a)]
        if matches:
            approach = matches[0]
    bilateral = plan_json.get("bilateral")
    if not isinstance(bilateral, bool):
        raise PlanError(f"plan 'bilateral' must be true or false, got {bilateral!r}")
    spread = plan_json.get("spread")
    if not isinstance(spread, Mapping) or "quadrants" not in spread:
        raise PlanError(f"plan 'spread' must be an object with 'quadrants', got {spread!r}")
    quadrants = spread["quadrants"]
    if isinstance(quadrants, bool) or not isinstance(quadrants, int) or not 0 <= quadrants <= 4:
        raise PlanError(f"plan spread.quadrants must be a whole number 0-4, got {quadrants!r}")
    rule = spread.get("rule", "")
    if not isinstance(rule, str):
        raise PlanError(f"plan spread.rule must be a string, got {rule!r}")
    values: dict[str, Any] = {"procedure": procedure, "approach": approach, "bilateral": bilateral}
    if procedure not in SPREAD_ASSESSED:
        values["spread_quadrants"] = NOT_ASSESSED_QUADRANTS
    elif rule.strip().lower().startswith("not applicable"):
        if "spread_quadrants" not in clinical:
            raise PlanError(f"the plan has no spread estimate ({rule}); pass spread_quadrants (0-4) explicitly")
    else:
        values["spread_quadrants"] = quadrants
    encased = plan_json.get("celiac_axis_encased")
    if encased is not None:
        if not isinstance(encased, bool):
            raise PlanError(f"plan 'celiac_axis_encased' must be true, false or null, got {encased!r}")
        values["celiac_axis_encasement"] = encased
    clash = sorted(set(values) & set(clinical))
    if clash:
        raise PlanError(f"{', '.join(clash)} come(s) from the plan; do not pass them again")
    values.update(clinical)
    return ClinicalInputs.from_mapping(values)

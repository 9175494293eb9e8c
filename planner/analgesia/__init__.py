"""Analgesia-duration estimate: how long pain relief is expected to last after a procedure.

Research and education software, not a medical device. The shipped model is fit on a
synthetic cohort built from published figures (``planner/data/analgesia_cohort.json``) and
says so in every output; ``plexplan outcome fit`` refits it on an institution's registry.

    from planner.analgesia import ClinicalInputs, predict, load_model, inputs_from_plan
    estimate = predict(ClinicalInputs(spread_quadrants=3, ecog=2))
    estimate.to_dict()

Importing this package loads numpy only (no lifelines, pandas or scipy.optimize).
"""

from planner.analgesia.features import REFERENCE, ClinicalInputs, inputs_from_plan
from planner.analgesia.model import AnalgesiaModel, Estimate, fit_model, load_model, predict

__all__ = ["REFERENCE", "AnalgesiaModel", "ClinicalInputs", "Estimate", "fit_model", "inputs_from_plan",
           "load_model", "predict"]

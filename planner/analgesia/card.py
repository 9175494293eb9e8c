"""Model card (README.md) written next to every fitted analgesia model file."""

from __future__ import annotations

import math
from typing import Any

from planner.analgesia.features import FEATURE_NAMES, FEATURES
from planner.analgesia.model import DEFINITIONS, DISCLAIMER, AnalgesiaModel

LIBRARY_CHOICE = (
    "Fitting and prediction are our own numpy/scipy maximum-likelihood code (planner/analgesia/survival.py: "
    "logistic regression by damped Newton; the two Weibull hazards with their shared gamma frailty by L-BFGS "
    "on the analytic gradient, covariance from a finite-difference Hessian). Reasons: lifelines has no "
    "competing-risks model with a shared frailty and no logistic regression; the model file then holds every coefficient and its covariance as plain JSON, and a "
    "prediction for one patient is numpy arithmetic (about 15 ms, no lifelines or pandas import, which costs "
    "about 1 s) for the live napari widget; the covariance drives the parameter-uncertainty intervals. "
    "lifelines (0.30) is used only for validation: Harrell's C (lifelines.utils.concordance_index) and the Cox "
    "model behind the survival calibration curve; a test cross-checks our Weibull fit against lifelines' "
    "WeibullAFTFitter. scikit-survival is not installed here and adds nothing this model needs."
)

LIMITATIONS = [
    "Not a medical device; research and education only. Do not use it to decide on treatment.",
    "The shipped model was fit on a synthetic cohort. No published model predicts the duration of relief; "
    "every hazard ratio was converted from odds ratios of response models or assumed (see the parameter "
    "table). The model can only reproduce these assumptions, not discover real effects.",
    "The response model is calibrated to two published figures at once: the synthetic cohort's overall "
    "initial-response rate ({response_rate}; McGreevy 2013: 67% after a first neurolysis, Eisenberg 1995: "
    "89% at 2 weeks) and the reference (most favourable) patient's rate (Rykowski 2000: head tumours 33/36 = "
    "92%). Multiplied in full as if independent, the published odds ratios would make the reference patient "
    "respond almost always (0.996); instead every published log odds ratio is shrunk by one fitted common "
    "factor s = {shrinkage:.3f} (logit p = a + s x.beta), so each generator odds ratio is the published one "
    "to the power s. The shrinkage is an assumption (the published ratios are crude, not mutually adjusted); "
    "read P(response) at either end as its product. Repeat neurolysis is shrunk too, so repeats respond "
    "less often than first procedures but more often than McGreevy's 29% (see the table of published figures).",
    "Relief durations of the synthetic cohort are short against the published series: the generator's 12-week median is the "
    "reference patient's time to loss of relief, and the stacked hazard ratios and the competing death "
    "(median 16 weeks at reference) make the mean relief lived by responders shorter than McGreevy 2013's "
    "3.4 months after a first and 1.6 months after a repeat neurolysis (see the table). Read the durations "
    "as pessimistic.",
    "The model has the same structure as the generator (Weibull hazards, shared gamma frailty), so its "
    "validation on synthetic data is optimistic; a real registry will show how far the structure holds. "
    "The Cox-spline calibration estimator itself reads about 0.02-0.03 even for the generator's true "
    "probabilities (the 'oracle' ICI in the held-out table).",
    "Splanchnic and superior hypogastric neurolysis rest on very few figures (splanchnic treated like celiac "
    "neurolysis; superior hypogastric from two series of pelvic cancer).",
    "Baseline pain has no published effect and none in the generator; its coefficient is noise.",
    "Follow-up is 52 weeks; interval bounds beyond it are extrapolation and are flagged.",
    "Refit on a local registry (plexplan outcome fit) before any clinical research use, and check the "
    "cross-validated figures it prints.",
]


#: (cohort_marginals key, what, published figure and its source)
PUBLISHED_FIGURES = (
    ("response_overall", "initial response, whole cohort", "67% first neurolysis (McGreevy 2013); 89% good-to-excellent at 2 weeks (Eisenberg 1995)"),
    ("response_first", "initial response, first procedures", "67% (McGreevy 2013)"),
    ("response_repeat", "initial response, repeat procedures", "29% (McGreevy 2013)"),
    ("response_superior_hypogastric", "initial response, superior hypogastric neurolysis", "72% VAS < 4 (Plancarte 1997)"),
    ("response_reference_patient", "initial response, reference patient", "none (head tumours 33/36, Rykowski 2000)"),
    ("mean_relief_months_first", "mean relief lived by responders, first procedures (months, within follow-up)", "3.4 months (McGreevy 2013)"),
    ("mean_relief_months_repeat", "mean relief lived by responders, repeat procedures (months, within follow-up)", "1.6 months (McGreevy 2013)"),
    ("reference_median_weeks_to_relief_loss", "median weeks to loss of relief, reference patient, death ignored", "about 12 weeks (clinical.md suggestion)"),
)


def _published_table(generator: dict[str, Any]) -> list[str]:
    """The generator's whole-cohort figures next to the published ones they should reproduce."""
    from planner.analgesia.cohort import cohort_marginals

    figures = cohort_marginals(generator)
    lines = ["### The synthetic cohort against the published figures", "",
             "Expectations over the seeded calibration sample of the cohort's covariates.", "",
             "| figure | synthetic cohort | published |", "|---|---|---|"]
    for key, what, published in PUBLISHED_FIGURES:
        value = figures[key]
        shown = f"{100 * value:.1f}%" if key.startswith("response") else f"{value:.1f}"
        lines.append(f"| {what} | {shown} | {published} |")
    return lines + ["", f"Published response odds ratios are shrunk by the fitted common factor s = "
                        f"{figures['response_odds_ratio_shrinkage']:.3f} (logit p = a + s x.beta; intercept a from "
                        f"response.reference_rate, s from response.target_overall_rate); the generator values in "
                        f"the fitted-ratios table are the shrunk ones.", ""]


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def render(model: AnalgesiaModel, generator: dict[str, Any] | None = None,
           truth: dict[str, dict[str, float]] | None = None) -> str:
    """Markdown model card. ``generator``: cohort parameters (synthetic fits) for the source table;
    ``truth``: generator ratios per part and feature, shown next to the fitted ones."""
    from planner.analgesia.model import predict
    from planner.analgesia.features import REFERENCE

    meta = model.meta
    ref = predict(REFERENCE, model)
    training = meta.get("training", {})
    lines = [
        f"# Analgesia-duration model {model.version}",
        "",
        f"**{DISCLAIMER}** {model.label.capitalize()}.",
        "",
        f"- model file: `{meta.get('file_name', '?')}` (format `plexplan-analgesia-model` v1, JSON)",
        f"- created (UTC): {meta.get('created_utc', '?')}",
        f"- training data: {training.get('kind', '?')}; {training.get('n', '?')} patients, "
        f"{training.get('responders', '?')} responders, {training.get('relief_lost', '?')} losses of relief, "
        f"{training.get('died_relieved', '?')} deaths while relieved",
    ]
    for key in ("source", "seed", "parameters_version", "parameters_sha256", "csv_sha256", "rows_dropped"):
        if key in training:
            lines.append(f"- {key.replace('_', ' ')}: `{training[key]}`")
    lines += [
        "",
        "## What it predicts",
        "",
        "For one patient and plan: P(initial response); the median relief duration with an 80% interval; "
        "P(still relieved) at 4, 8 and 12 weeks with death as a competing event; per-feature factors that "
        "explain the estimate against the reference patient. Every output carries the training label.",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in DEFINITIONS.items()]
    lines += [
        "",
        "## Model",
        "",
        "1. `response`: logistic regression, all patients.",
        "2. `relief`: Weibull proportional-hazards model of losing relief, responders.",
        "3. `death`: Weibull PH model of dying while still relieved (the competing event), responders.",
        "",
        "Parts 2 and 3 are fit jointly and share one gamma frailty (mean 1, variance theta, estimated; weak "
        "normal prior on log theta, centre 0, sd 2). For a responder, P(relieved and alive at t) = "
        "(1 + theta (H_relief(t) + H_death(t)))^(-1/theta); the cumulative incidence of losing relief is the "
        "integral of h_relief (1 + theta H)^(-1/theta - 1), and likewise for death. Intervals come from 256 "
        "draws of the coefficients from N(estimate, inverse observed information), fixed seed; rare covariate "
        "combinations have wide coefficient uncertainty and so wider intervals.",
        "",
        f"Reference patient (all features at reference): P(response) {ref.p_response:.3f}; median relief "
        f"{ref.median_relief_weeks} weeks (80% prediction interval {ref.relief_weeks_prediction_interval_80[0]}-"
        f"{ref.relief_weeks_prediction_interval_80[1]}). The generator's 12-week median at reference is the time to "
        "loss of relief without death; death (median 16 weeks) competes and shortens the relief actually lived.",
        "",
        "**Library.** " + LIBRARY_CHOICE,
        "",
        "## Validation",
        "",
    ]
    for title, key in (("Cross-validated (training data)", "cross_validation"),
                       ("Held-out synthetic cohort, with the generator's oracle", "held_out")):
        figures = meta.get("metrics", {}).get(key)
        if figures:
            lines += [f"{title}:", "", "| figure | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in figures.items()]
            lines.append("")
    lines += [
        "Definitions: `c_index_relief` Harrell's C of the relief-loss risk among responders (death censors); "
        "`oracle_c_index_relief` the same with the generator's true hazard; `ici_*` integrated calibration "
        "index (Austin et al. 2020) of P(relief ended by t | responder) and of P(response); "
        "`integrated_brier_0_26w` IPCW Brier score of P(still relieved and alive), weeks 0-26, next to the "
        "covariate-free Kaplan-Meier value `integrated_brier_null`.",
        "",
        "## Fitted ratios",
        "",
        "Odds ratio of response, hazard ratios of losing relief and of dying while relieved (estimate with "
        "95% interval" + ("; generator value in brackets" if truth else "") + ").",
        "",
        "| feature | response OR | relief-loss HR | death HR |",
        "|---|---|---|---|",
    ]
    for name in FEATURE_NAMES:
        cells = []
        for part_name, part in (("response", model.response), ("relief", model.relief), ("death", model.death)):
            if name not in part.features:
                cells.append("not estimable")
                continue
            i = part.n_fixed + part.features.index(name)
            b, se = part.params[i], math.sqrt(part.cov[i, i])
            cell = f"{math.exp(b):.2f} ({math.exp(b - 1.96 * se):.2f}-{math.exp(b + 1.96 * se):.2f})"
            if truth and name in truth.get(part_name, {}):
                cell += f" [{truth[part_name][name]:.2f}]"
            cells.append(cell)
        lines.append(f"| {FEATURES[name]} | " + " | ".join(cells) + " |")
    shape_r, shape_d = math.exp(model.relief.params[0]), math.exp(model.death.params[0])
    lines += ["", f"Weibull shapes: relief {shape_r:.2f}, death {shape_d:.2f}; frailty variance "
              f"{model.frailty_variance:.2f}.", ""]
    if generator is not None:
        from planner.analgesia.cohort import parameter_leaves

        lines += ["## Synthetic cohort: every parameter and its source", "",
                  f"From `planner/data/analgesia_cohort.json` (version {generator.get('version')}). "
                  "Assumption = no publication gives the number directly.", "",
                  "| parameter | value | assumption | source |", "|---|---|---|---|"]
        for path, leaf in parameter_leaves(generator).items():
            value = str(leaf["value"]).replace("|", "/")
            lines.append(f"| {path} | {value} | {'yes' if leaf['assumption'] else 'no'} | {leaf['source']} |")
        lines.append("")
        lines += _published_table(generator)
    rate = training.get("responders", 0) / max(training.get("n", 1), 1)
    limitations = [item.replace("{response_rate}", f"{100 * rate:.0f}% here") for item in LIMITATIONS]
    if generator is not None:
        from planner.analgesia.cohort import response_shrinkage

        shrinkage = f"{response_shrinkage(generator):.3f}"
        limitations = [item.replace("{shrinkage:.3f}", shrinkage) for item in limitations]
    else:
        limitations = [item for item in limitations if "{shrinkage:.3f}" not in item]
    if not model.synthetic:
        limitations = [item for item in limitations if "synthetic" not in item and "response rate" not in item]
    lines += ["## Limitations", ""] + [f"- {item}" for item in limitations]
    lines += ["", "## Use", "", "```python",
              "from planner.analgesia import ClinicalInputs, inputs_from_plan, load_model, predict",
              "estimate = predict(ClinicalInputs(spread_quadrants=3, ecog=2))  # shipped model by default",
              "estimate = predict(inputs_from_plan(plan_dict, ecog=2), load_model('this_file.json'))",
              "estimate.to_dict()  # JSON-ready, label and disclaimer included", "```", "",
              "`plexplan outcome predict --spread-quadrants 3 --ecog 2 [--plan plan.json] [--json inputs.json] "
              "[--model FILE]` prints the same JSON."]
    if model.synthetic and "seed" in training:
        lines += ["", "## Regenerate this model", "",
                  "The cohort is exactly reproducible from the parameter file and the seed (a test checks the "
                  "shipped file's hashes); from the repository root:", "", "```sh",
                  f"plexplan outcome cohort --n {training.get('n')} --seed {training['seed']} --out /tmp/cohort.csv",
                  f"plexplan outcome fit /tmp/cohort.csv --out models/analgesia --version {model.version}",
                  "python benchmarks/bench_analgesia.py   # its output goes into the Benchmark section", "```"]
    lines += ["", "## Refit on a registry", "",
              "`plexplan outcome fit registry.csv --out DIR` (column schema: `docs/registry_schema.md`, "
              "or `plexplan outcome schema`). Every bad row and column is reported by row number and reason; "
              "no model is written unless `--drop-bad-rows` is given.", ""]
    return "\n".join(lines)

"""Analgesia model: fit recovers the generator, the shipped model's estimates point the right way,
intervals widen where data are thin, and one prediction needs neither lifelines nor pandas."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from planner.analgesia import ClinicalInputs, Estimate, fit_model, inputs_from_plan, load_model, predict
from planner.analgesia.cohort import generate, load_parameters
from planner.analgesia.features import FEATURE_NAMES
from planner.analgesia.model import DEFAULT_MODEL_NAME, AnalgesiaModel, default_model_path
from planner.analgesia.refit import true_ratios
from planner.analgesia.survival import fit_weibull_ph
from planner.errors import OutcomeModelError, PlanError

ROOT = Path(__file__).resolve().parent.parent
REF = ClinicalInputs()


@pytest.fixture(scope="module")
def shipped() -> AnalgesiaModel:
    return load_model()


def median(inputs: ClinicalInputs, model: AnalgesiaModel) -> float:
    return predict(inputs, model).median_relief_weeks


def test_shipped_model_file_is_versioned_json_with_card_and_synthetic_label(shipped):
    path = default_model_path()
    assert path.name == DEFAULT_MODEL_NAME and path.parent == ROOT / "models" / "analgesia"
    data = json.loads(path.read_text())
    assert data["format"] == "plexplan-analgesia-model" and data["format_version"] == 1
    assert data["model_version"] == "synthetic-1" and data["training"]["kind"] == "synthetic"
    assert path.stat().st_size < 200_000
    card = (path.parent / "README.md").read_text()
    for phrase in ("not a medical device", "synthetic cohort", "c_index_relief", "ici_relief_ended_max",
                   "integrated_brier_0_26w", "Library", "Han 2021", "Limitations", "target_overall_rate",
                   "against the published figures", "## Benchmark", "## Regenerate this model"):
        assert phrase.lower() in card.lower(), phrase
    assert shipped.synthetic and "synthetic cohort" in shipped.label


def test_every_output_says_synthetic_cohort(shipped):
    estimate = predict(REF)
    out = estimate.to_dict()
    json.dumps(out)  # JSON-ready
    assert "synthetic cohort" in out["label"]
    assert any("synthetic cohort" in w for w in out["warnings"])
    assert "not a medical device" in out["disclaimer"]
    assert "prediction interval" in out["definitions"]["relief_weeks_prediction_interval_80"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.p_response = 1.0  # type: ignore[misc]


def test_summary_text_carries_the_figures_and_the_label(shipped):
    e = predict(ClinicalInputs(spread_quadrants=3), shipped)
    text = e.summary()
    assert f"{e.median_relief_weeks:.1f} weeks" in text and "80% prediction interval" in text
    assert "injectate spread 3 quadrants" in text and "synthetic cohort" in text and "not a medical device" in text


def test_estimate_is_internally_consistent(shipped):
    e = predict(ClinicalInputs(spread_quadrants=3, distant_metastases=True, ecog=2), shipped)
    lo, hi = e.relief_weeks_prediction_interval_80
    assert 0 < lo < e.median_relief_weeks < hi
    m_lo, m_hi = e.median_relief_weeks_ci_80
    assert lo < m_lo <= e.median_relief_weeks <= m_hi < hi  # CI of the median is inside the PI
    assert e.p_response_interval_80[0] <= e.p_response <= e.p_response_interval_80[1]
    previous = 1.0
    for tp in e.timepoints:
        total = tp.p_relieved_if_response + tp.p_lost_relief_if_response + tp.p_died_relieved_if_response
        assert total == pytest.approx(1.0, abs=0.01)  # relieved, lost, died: the three states
        assert tp.p_relieved == pytest.approx(e.p_response * tp.p_relieved_if_response, abs=0.01)
        assert tp.p_relieved_if_response < previous
        previous = tp.p_relieved_if_response
    assert [tp.weeks for tp in e.timepoints] == [4.0, 8.0, 12.0]


def test_four_quadrants_last_longer_than_two_and_three(shipped):
    m4, m3, m2 = (median(dataclasses.replace(REF, spread_quadrants=q), shipped) for q in (4, 3, 2))
    assert m4 > m3 > m2
    assert predict(dataclasses.replace(REF, spread_quadrants=2), shipped).p_response <= 0.15


@pytest.mark.parametrize("change", [
    {"celiac_axis_encasement": True},
    {"oral_morphine_mg_day": 200.0},
    {"ecog": 2},
    {"ecog": 3},
    {"repeat_procedure": True},
])
def test_adverse_features_shorten_relief(shipped, change):
    base = predict(REF, shipped)
    worse = predict(dataclasses.replace(REF, **change), shipped)
    assert worse.median_relief_weeks < 0.85 * base.median_relief_weeks
    assert worse.timepoints[2].p_relieved < base.timepoints[2].p_relieved
    name = {"celiac_axis_encasement": "celiac_axis_encasement", "oral_morphine_mg_day": "opioid_high",
            "ecog": "ecog_2_3", "repeat_procedure": "repeat_procedure"}[next(iter(change))]
    (contribution,) = [c for c in worse.contributions if c.feature == name]
    assert contribution.median_factor < 0.85 and contribution.relief_loss_hazard_ratio > 1.3


def test_contributions_explain_the_estimate(shipped):
    e = predict(ClinicalInputs(spread_quadrants=3, repeat_procedure=True, bilateral=False), shipped)
    assert {c.feature for c in e.contributions} == {"spread_3q", "repeat_procedure", "unilateral"}
    factors = [c.median_factor for c in e.contributions]
    assert factors == sorted(factors, key=lambda f: -abs(math.log(f)))  # largest effect first
    assert predict(REF, shipped).contributions == ()
    assert e.reference_median_relief_weeks == pytest.approx(predict(REF, shipped).median_relief_weeks, rel=0.05)


def _log_width(interval) -> float:
    return math.log(interval[1] / interval[0])


def test_intervals_widen_for_rare_combinations(shipped):
    common = ClinicalInputs(distant_metastases=True, ecog=2)
    # 2-or-fewer-quadrant spread almost never responds (De Cicco 2001 cap), so few responders
    # teach the model how long such relief lasts
    # (no injectate spread at all, on a repeat procedure with encasement: a handful of responders)
    rare = ClinicalInputs(spread_quadrants=0, repeat_procedure=True, celiac_axis_encasement=True)
    assert shipped.meta["support"]["feature_nonzero_responders"]["spread_le2"] < 150  # of about 14000
    assert shipped.meta["support"]["feature_nonzero_responders"]["distant_metastases"] > 1000
    e_common, e_rare = predict(common, shipped), predict(rare, shipped)
    # uncertainty of the median: much wider
    assert _log_width(e_rare.median_relief_weeks_ci_80) > 2 * _log_width(e_common.median_relief_weeks_ci_80)
    # prediction interval: parameter uncertainty widens it more for the rare patient
    plug_common, plug_rare = predict(common, shipped, n_draws=1), predict(rare, shipped, n_draws=1)
    widen_common = _log_width(e_common.relief_weeks_prediction_interval_80) - \
        _log_width(plug_common.relief_weeks_prediction_interval_80)
    widen_rare = _log_width(e_rare.relief_weeks_prediction_interval_80) - \
        _log_width(plug_rare.relief_weeks_prediction_interval_80)
    assert widen_rare > widen_common + 0.02
    # probability intervals too, on the logit scale
    lo_c, hi_c = e_common.timepoints[1].p_relieved_if_response_interval_80
    lo_r, hi_r = e_rare.timepoints[1].p_relieved_if_response_interval_80
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert logit(hi_r) - logit(lo_r) > 2 * (logit(hi_c) - logit(lo_c))
    rarity = ("few comparable patients", "responders in the training data")
    assert any(r in w for w in e_rare.warnings for r in rarity)
    assert not any(r in w for w in e_common.warnings for r in rarity)


def test_prediction_is_deterministic(shipped):
    a, b = predict(ClinicalInputs(ecog=2), shipped), predict(ClinicalInputs(ecog=2), shipped)
    assert a == b


def test_fit_recovers_generator_ratios_and_round_trips(tmp_path):
    cohort = generate(20000, 99)
    model = fit_model(cohort.columns, {"kind": "synthetic"})
    params = load_parameters()
    truth = true_ratios()  # the generator's ratios, calibrated ones included
    for name in ("spread_3q", "spread_le2", "celiac_axis_encasement", "opioid_high", "ecog_2_3", "repeat_procedure"):
        true_hr = params["relief_loss"]["hazard_ratios"][name]["value"]
        i = model.relief.n_fixed + model.relief.features.index(name)
        se = math.sqrt(model.relief.cov[i, i])
        assert abs(model.relief.params[i] - math.log(true_hr)) < 4 * se + 0.05, name
        true_or = truth["response"][name]
        j = model.response.n_fixed + model.response.features.index(name)
        assert abs(model.response.params[j] - math.log(true_or)) < 4 * math.sqrt(model.response.cov[j, j]) + 0.05
    assert math.exp(model.relief.params[0]) == pytest.approx(params["relief_loss"]["shape"]["value"], abs=0.12)
    assert model.frailty_variance == pytest.approx(params["frailty"]["variance"]["value"], abs=0.25)
    path = model.save(tmp_path / "m.json")
    again = load_model(path)
    x = ClinicalInputs(spread_quadrants=3, diabetes=True)
    a, b = predict(x, again), predict(x, model)
    assert a.median_relief_weeks == pytest.approx(b.median_relief_weeks, rel=1e-6)
    assert a.timepoints == b.timepoints


def test_constant_feature_is_excluded_and_reported(tmp_path):
    cohort = generate(1500, 5)
    columns = dict(cohort.columns)
    columns["repeat_procedure"] = np.zeros_like(columns["repeat_procedure"])
    model = fit_model(columns)
    assert "repeat_procedure" in model.meta["excluded_features"]["relief"]
    e = predict(ClinicalInputs(repeat_procedure=True), model)
    (c,) = [c for c in e.contributions if c.feature == "repeat_procedure"]
    assert c.relief_loss_hazard_ratio == 1.0 and "not in the training data" in c.note
    assert any("rare in the training data" in w for w in e.warnings)


def test_weibull_fit_matches_lifelines():
    from lifelines import WeibullAFTFitter
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2))
    t = (rng.exponential(size=400) / np.exp(-3 + x @ [0.5, -0.3])) ** (1 / 1.4)
    c = np.minimum(t, 15.0)
    e = (t <= 15.0).astype(float)
    ours = fit_weibull_ph(c, e, x, ridge=0.0)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "T": c, "E": e})
    aft = WeibullAFTFitter().fit(frame, "T", "E")
    assert ours.loglik == pytest.approx(aft.log_likelihood_, rel=1e-6)
    rho = float(np.exp(aft.params_.loc[("rho_", "Intercept")]))
    assert math.exp(ours.params[0]) == pytest.approx(rho, rel=1e-4)
    ph = -rho * aft.params_.loc["lambda_"][["a", "b"]].to_numpy()  # AFT -> PH coefficients
    assert ours.params[2:] == pytest.approx(ph, rel=1e-3)


def test_prediction_needs_no_lifelines_pandas_or_optimiser():
    code = ("from planner.analgesia import predict, ClinicalInputs; predict(ClinicalInputs(ecog=2)); "
            "import sys; print(' '.join(sys.modules))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=ROOT).stdout.split())
    assert not loaded & {"lifelines", "pandas", "scipy.optimize", "torch", "monai"}


def test_inputs_are_validated():
    with pytest.raises(OutcomeModelError, match="procedure 'celiac'"):
        ClinicalInputs(procedure="celiac")
    with pytest.raises(OutcomeModelError, match="approach 'transaortic' does not exist"):
        ClinicalInputs(procedure="superior_hypogastric_neurolysis", approach="transaortic", tumour_site="pelvic")
    with pytest.raises(OutcomeModelError, match="spread_quadrants"):
        ClinicalInputs(spread_quadrants=5)
    with pytest.raises(OutcomeModelError, match="ecog"):
        ClinicalInputs(ecog=2.5)
    with pytest.raises(OutcomeModelError, match="true/false"):
        ClinicalInputs(bilateral="yes")  # type: ignore[arg-type]
    with pytest.raises(OutcomeModelError, match="unknown clinical input"):
        ClinicalInputs.from_mapping({"ecgo": 1})
    with pytest.raises(OutcomeModelError, match="ClinicalInputs"):
        predict({"ecog": 1})  # type: ignore[arg-type]


PLAN = {"procedure": "celiac_transcrural", "approach": "posterior transcrural", "bilateral": False,
        "celiac_axis_encased": True, "spread": {"quadrants": 3, "rule": "tip vs aorta and celiac origin"}}


def test_inputs_from_plan_reads_plan_fields():
    inputs = inputs_from_plan(PLAN, ecog=2, oral_morphine_mg_day=180)
    assert (inputs.procedure, inputs.approach, inputs.bilateral) == ("celiac_neurolysis", "transcrural", False)
    assert inputs.celiac_axis_encasement is True and inputs.spread_quadrants == 3 and inputs.ecog == 2
    aortic = inputs_from_plan({**PLAN, "procedure": "celiac_transaortic", "approach": "posterior left transaortic",
                               "celiac_axis_encased": None}, celiac_axis_encasement=False)
    assert aortic.approach == "transaortic" and aortic.celiac_axis_encasement is False
    shp = inputs_from_plan({**PLAN, "procedure": "superior_hypogastric_posterior", "approach": "posterior",
                            "spread": {"quadrants": 0, "rule": "not applicable to this procedure"}},
                           tumour_site="pelvic")
    assert shp.procedure == "superior_hypogastric_neurolysis" and shp.spread_quadrants == 4
    assert isinstance(predict(shp), Estimate)


@pytest.mark.parametrize("plan, message", [
    ([1, 2], "JSON object"),
    ({**PLAN, "procedure": 3}, "preset name"),
    ({**PLAN, "procedure": "supraclavicular_us_inplane"}, "no analgesia model"),
    ({**PLAN, "bilateral": "yes"}, "bilateral"),
    ({**PLAN, "spread": {"rule": "x"}}, "quadrants"),
    ({**PLAN, "spread": {"quadrants": 7, "rule": "x"}}, "0-4"),
    ({**PLAN, "celiac_axis_encased": "no"}, "celiac_axis_encased"),
    ({**PLAN, "approach": 5}, "approach"),
    ({**PLAN, "spread": {"quadrants": 0, "rule": "not applicable: no needle tip"}}, "pass spread_quadrants"),
])
def test_malformed_plans_raise_clear_errors(plan, message):
    with pytest.raises(PlanError, match=message):
        inputs_from_plan(plan)


def test_plan_values_are_not_silently_overridden():
    with pytest.raises(PlanError, match="come.* from the plan"):
        inputs_from_plan(PLAN, spread_quadrants=4)


def test_feature_order_is_stable():
    # the model file stores coefficients by name, but the order is part of the format
    assert FEATURE_NAMES[:3] == ("spread_3q", "spread_le2", "celiac_axis_encasement")


def test_every_ct_preset_of_the_planner_maps_to_the_model():
    from planner.presets import load_presets

    for name, preset in load_presets().items():
        plan = {"procedure": name, "approach": preset.approach, "bilateral": preset.bilateral,
                "celiac_axis_encased": False, "spread": {"quadrants": 3, "rule": "tip rule"}}
        if preset.modality != "CT":
            with pytest.raises(PlanError, match="no analgesia model"):
                inputs_from_plan(plan)
            continue
        site = "pelvic" if "hypogastric" in name else "head"
        inputs = inputs_from_plan(plan, tumour_site=site)
        assert inputs.bilateral == preset.bilateral
        assert inputs.approach.replace("_", " ") in preset.approach or inputs.approach == "posterior_retrocrural"
        assert isinstance(predict(inputs), Estimate)


def test_a_saved_plan_feeds_the_estimate(tmp_path):
    from planner.plan import Plan, Trajectory

    t = Trajectory(entry_lps_mm=(60.0, 110.0, 0.0), target_lps_mm=(20.0, 0.0, 0.0), length_mm=117.0,
                   feasible=True, min_clearance_mm={"aorta": 6.0}, risk=0.1, p_oar_contact=0.01,
                   gantry_angle_deg=0.0)
    plan = Plan(case="demo", procedure="celiac_transaortic", approach="posterior left transaortic",
                bilateral=False, celiac_axis_encased=True, spread={"quadrants": 2, "rule": "tip rule"},
                trajectories=(t,))
    data = json.loads(plan.save(tmp_path / "plan.json").read_text())
    inputs = inputs_from_plan(data, ecog=2)
    assert (inputs.approach, inputs.spread_quadrants, inputs.celiac_axis_encasement) == ("transaortic", 2, True)
    assert predict(inputs).p_response < predict(dataclasses.replace(inputs, spread_quadrants=4)).p_response


def test_shipped_model_is_reproducible_from_the_parameter_file(shipped, tmp_path):
    """The shipped model's cohort is exactly what the current code and parameter file generate;
    changing either without refitting (`plexplan outcome fit`) fails here."""
    from planner.analgesia.cohort import PARAMETERS_FILE
    from planner.analgesia.model import file_sha256
    from planner.analgesia.refit import write_cohort

    training = shipped.meta["training"]
    assert training["parameters_sha256"] == file_sha256(PARAMETERS_FILE)
    csv_path, _ = write_cohort(training["n"], training["seed"], tmp_path / "cohort.csv")
    assert file_sha256(csv_path) == training["csv_sha256"]


def test_summary_never_rounds_an_uncertain_probability_to_certainty(shipped):
    from planner.analgesia.model import format_percent

    assert format_percent(0.9964) == "99.6%" and format_percent(0.0004) == "0.0%" and format_percent(None) == "-"
    e = predict(ClinicalInputs(), shipped)  # the reference patient: the most favourable profile
    first_line = e.summary().splitlines()[0]
    assert f"P(initial response) {format_percent(e.p_response)}" in first_line
    assert e.p_response < 1.0 and "100.0%" not in first_line


def test_shipped_model_reference_patient_response_is_plausible(shipped):
    """Rykowski 2000: head tumours 33/36 = 92% responders; the reference (most favourable) patient
    must not read as near-certain, and the whole synthetic cohort stays near its 0.70 target."""
    from planner.analgesia.cohort import cohort_marginals, load_parameters

    assert 0.85 <= predict(ClinicalInputs(), shipped).p_response <= 0.96
    training = shipped.meta["training"]
    assert 0.62 <= training["responders"] / training["n"] <= 0.78
    assert 0.62 <= cohort_marginals(load_parameters())["response_overall"] <= 0.78

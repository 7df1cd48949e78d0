"""Baseline features (count-of-code of the history, age) and the baselines themselves."""

import numpy as np
import pytest
import scipy.sparse
from eval_builders import FIRST_DISCHARGE, hand_cohort, task
from sklearn.metrics import roc_auc_score

from scaling.data.meds_io import read_meds
from scaling.evaluate.baselines import FeatureSpace, fit_predict
from scaling.evaluate.labels import Cohort, prediction_times


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return Cohort.from_dataset(read_meds(hand_cohort(tmp_path_factory.mktemp("hand"))))


def test_features_count_history_codes_only(hand):
    times = prediction_times(hand, FIRST_DISCHARGE, "held_out")  # subjects 1, 2, 4
    space = FeatureSpace.fit(hand, times, min_code_count=1)
    x = space.transform(hand, times).toarray()
    column = {name: i for i, name in enumerate(space.names)}
    # subject 1 at its first discharge: one admission so far, not the readmission or the ED visits after
    assert x[0, column["HOSPITAL_ADMISSION//INPATIENT"]] == pytest.approx(np.log1p(1))
    assert x[0, column["GENDER//F"]] == pytest.approx(np.log1p(1))
    assert "VISIT//EMERGENCY" not in column  # only seen after the prediction times
    assert x[2, column["MEDICATION//ATC//A10BA02"]] == pytest.approx(np.log1p(1))  # same time as t: history
    np.testing.assert_allclose(x[:, column["age_years"]] * 100, [51.17, 61.94, 57.0], atol=0.01)


def test_baselines_learn_a_signal_and_say_why_they_cannot():
    rng = np.random.default_rng(0)
    x = scipy.sparse.csr_matrix(rng.normal(size=(400, 7)).astype(np.float32))
    y = (x.toarray()[:, 2] + 0.3 * rng.normal(size=400) > 0.5).astype(float)
    binary = task("b", "binary", FIRST_DISCHARGE, ("X",), 30)
    for name in ("logistic", "gbdt"):
        p, reason = fit_predict(name, binary, x[:300], y[:300], x[300:])
        assert reason is None and ((p >= 0) & (p <= 1)).all()
        assert roc_auc_score(y[300:], p) > 0.85
    counts = rng.poisson(np.exp(x.toarray()[:, 1]))
    count = task("c", "count", FIRST_DISCHARGE, ("X",), 30)
    for name in ("logistic", "gbdt"):
        estimate, _ = fit_predict(name, count, x[:300], counts[:300].astype(float), x[300:])
        assert np.corrcoef(estimate, counts[300:])[0, 1] > 0.5
    p, reason = fit_predict("gbdt", binary, x[:300], np.zeros(300), x[300:])
    assert p is None and "0 positives" in reason


def test_evaluate_table_shows_why_a_baseline_is_missing():
    """`scaling evaluate`'s table prints a baseline that could not be trained as its reason."""
    import io

    from rich.console import Console

    from scaling.cli.evaluate import print_report

    report = {"run": {"run_dir": "runs/final", "checkpoint_step": 8, "params": 10, "flops": 1.0, "val_loss": 2.0},
              "samples": 4, "simulation": {"seconds": 1.0, "truncated_fraction": 0.0, "prompts_cut_fraction": 0.0},
              "tasks": [{"name": "death", "kind": "binary", "n": 20, "prevalence": 0.0, "mean_label": 0.0,
                         "warnings": [], "model": {"brier": 0.1, "ci": {}},
                         "baselines": {"logistic": {"error": "0 positives in the train split"}, "gbdt": None},
                         "oracle": None}]}
    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    assert "0 positives in the train split" in console.file.getvalue()

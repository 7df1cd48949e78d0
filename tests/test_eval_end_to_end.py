"""`scaling evaluate` and `scaling simulate` on a tiny trained run of the synthetic test cohort."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from eval_builders import synth_cohort_and_store
from flax import nnx

from scaling.data.token_store import TokenStore
from scaling.train.run_dir import load_trained_model
from scaling.train.step import init_model
from scaling.train.trainer import train_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_e2e")
    meds, tokens = synth_cohort_and_store(root)
    config = {
        "data": str(tokens), "seed": 1,
        "model": {"d_model": 24, "n_layers": 1, "n_heads": 3, "n_kv_heads": 1, "d_ff": 40},
        "train": {"steps": 24, "batch_size": 8, "seq_len": 96, "lr": 1e-2, "warmup_steps": 2, "eval_every": 12,
                  "checkpoint_every": 12, "log_every": 6, "steps_per_dispatch": 6, "eval_tokens": 2000},
    }
    train_run(config, root / "run", progress=False)
    return root, meds, tokens, root / "run"


def test_load_trained_model_restores_the_trained_parameters(run):
    _, _, tokens, run_dir = run
    model, config, step = load_trained_model(run_dir)
    assert step == 24 and config.train.seq_len == 96
    fresh = nnx.merge(*init_model(model.shape, config.seed))
    split = TokenStore.open(tokens).split("held_out")
    window = jnp.asarray(np.asarray(split.tokens[:97], np.int32))[None]

    def loss(m):
        return float(optax.softmax_cross_entropy_with_integer_labels(m(window[:, :-1]), window[:, 1:]).mean())

    assert loss(model) < loss(fresh) - 0.5


def test_evaluate_reports_model_baselines_and_oracle(run, run_cli):
    root, _, _, run_dir = run
    out = root / "evaluation"
    code, stdout, stderr = run_cli("evaluate", run_dir, "--patients", 30, "--samples", 4, "--max-new-tokens", 48,
                                   "--bootstrap", 20, "--oracle-samples", 4, "--json", "--out", out)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["samples"] == 4 and report["run"]["checkpoint_step"] == 24
    assert {t["kind"] for t in report["tasks"]} == {"binary", "count", "duration"} and len(report["tasks"]) >= 5
    for task in report["tasks"]:
        assert task["n"] > 5
        assert set(task["baselines"]) == {"logistic", "gbdt"} and task["oracle"] is not None
        metric = "brier" if task["kind"] == "binary" else "mae"
        assert task["model"][metric] >= 0 and task["oracle"][metric] >= 0
        assert [p["samples"] for p in task["by_samples"]] == [1, 2, 4]
        # every synthetic task but the duration one has outcome tokens: the probability estimator scores it too
        has_probability = task["kind"] != "duration"
        assert (task["model_probability"] is not None) == has_probability
        assert all(("probability" in p) == has_probability for p in task["by_samples"])
        if task["kind"] == "binary" and task["model"]["auroc"] is None:
            assert any("too few positives" in w for w in task["warnings"])
        if task["kind"] == "binary" and task["model"]["auroc"] is not None:
            # scored against the oracle's probabilities, whose own ranking no estimator can beat
            ceiling = task["oracle"]["auroc_true_risk"]
            others = [b.get("auroc_true_risk") for b in (task["model"], task["model_probability"],
                                                         *task["baselines"].values())]
            if ceiling is not None:  # None only when the oracle drew no outcome at all (4 futures here)
                assert all(value <= ceiling + 1e-12 for value in others if value is not None)
            assert "auroc_true_risk" in task["by_samples"][-1]
            assert task["versus_baselines_true_risk"]["oracle"]["logistic"]["metric"] == "auroc_true_risk"
        if task["kind"] != "binary":
            assert "auroc_true_risk" not in (task["model"] or {}) and "versus_baselines_true_risk" not in task
    assert (out / "evaluation.json").is_file() and (out / "metric_vs_samples.png").is_file()
    predictions = pq.read_table(out / "predictions.parquet")
    assert set(predictions.column_names) >= {"task", "subject_id", "prediction_time", "label", "model",
                                             "model_probability", "logistic", "gbdt", "oracle"}
    assert predictions.num_rows == sum(t["n"] for t in report["tasks"])
    # binary tasks' predictions, per estimator, pass meds-evaluation's own schema validation
    from meds_evaluation.schema import PredictionSchema

    binary = [t for t in report["tasks"] if t["kind"] == "binary"]
    for task in binary:
        for estimator in ("model", "model_probability", "logistic", "gbdt", "oracle"):
            table = pq.read_table(out / "meds_predictions" / task["name"] / f"{estimator}.parquet")
            PredictionSchema.validate(table)  # raises on a schema it does not accept
            rows = predictions.filter(pc.equal(predictions["task"], task["name"]))
            assert table.num_rows == rows.num_rows
            assert table["boolean_value"].to_pylist() == [v == 1.0 for v in rows["label"].to_pylist()]
            np.testing.assert_allclose(table["predicted_boolean_probability"], rows[estimator], rtol=1e-6)
    assert not (out / "meds_predictions" / "ed_visits_1y").exists()  # a count task has no such schema
    # a saved evaluation rescored from its predictions.parquet gets the true-risk metrics the evaluation wrote
    from scaling.bench.true_risk_rescore import rescore

    stripped = json.loads(stdout)
    for task in stripped["tasks"]:
        task.pop("versus_baselines_true_risk", None)
        for block in [task["model"], task["model_probability"], task["oracle"], *task["baselines"].values()]:
            if block:
                block.pop("auroc_true_risk", None)
                block["ci"].pop("auroc_true_risk", None)
    rescored = rescore(stripped, predictions)
    for task, written in zip(rescored["tasks"], report["tasks"]):
        for name in ("model", "model_probability", "oracle"):
            value = (written[name] or {}).get("auroc_true_risk")
            assert (task[name] or {}).get("auroc_true_risk") == (None if value is None else pytest.approx(value))
        assert task.get("versus_baselines_true_risk") == written.get("versus_baselines_true_risk")
    code, _, stderr = run_cli("evaluate", run_dir, "--out", out)
    assert code == 2 and "already exists" in stderr


def test_evaluate_several_runs_draws_the_scaling_figures(run):
    from scaling.evaluate.evaluation import Evaluation, EvaluationSettings, write_evaluation
    from scaling.evaluate.tasks import load_tasks

    root, meds, _, run_dir = run
    tasks = [t for t in load_tasks("synth") if t.name in ("ed_visits_1y", "death_1y")]
    settings = EvaluationSettings(patients=20, samples=2, max_new_tokens=32, bootstrap=0, baselines=False,
                                  oracle=False)
    evaluation = Evaluation(meds, tasks, settings)
    reports = [evaluation.evaluate_run(run_dir) for _ in range(2)]
    reports[1]["run"]["flops"] *= 4
    written = write_evaluation(root / "scaling_eval", reports)
    names = {p.name for p in written}
    assert {"metric_vs_compute.png", "metric_vs_loss.png", "evaluation.json"} <= names
    assert reports[0]["tasks"][0]["oracle"] is None and reports[0]["tasks"][0]["baselines"]["gbdt"] is None


def test_simulate_writes_futures_as_events(run, run_cli):
    root, _, _, run_dir = run
    out = root / "futures"
    code, stdout, stderr = run_cli("simulate", run_dir, "--patients", 5, "--samples", 3, "--horizon-days", 60,
                                   "--max-new-tokens", 32, "--out", out, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["patients"] == 5 and summary["futures"] == 15
    futures = pq.read_table(out / "data" / "futures.parquet")
    assert futures.column_names[:6] == ["subject_id", "sample", "prediction_time", "time", "code", "numeric_value"]
    assert set(futures["sample"].to_pylist()) <= {0, 1, 2}
    minutes = np.asarray(futures["minutes"])
    elapsed = np.asarray(futures["time"].cast("int64")) - np.asarray(futures["prediction_time"].cast("int64"))
    assert (minutes >= 0).all()
    np.testing.assert_allclose(elapsed / 60e6, minutes, atol=1e-3)
    assert pq.read_table(out / "metadata" / "prompts.parquet").num_rows == 5


def test_evaluate_refuses_bad_input(run, run_cli, tmp_path):
    _, _, _, run_dir = run
    code, _, stderr = run_cli("evaluate", tmp_path / "missing")
    assert code == 2 and "not a run directory" in stderr
    bad = tmp_path / "tasks.toml"
    bad.write_text('[prediction.r]\nrule = "sometimes"\n')
    code, _, stderr = run_cli("evaluate", run_dir, "--tasks", bad)
    assert code == 2 and "prediction.r.rule = 'sometimes'" in stderr


def test_evaluate_takes_an_aces_config_and_its_label_file(run, run_cli):
    """The label file ACES would write for death within a year (here from the shipped task's own prediction
    times plus 12 hours and its labels, every split), read with an ACES config: the same labels come back,
    the train split's rows train the baselines, and predictions come out in meds-evaluation's schema."""
    from meds_evaluation.schema import PredictionSchema

    from scaling.data.meds_io import read_meds
    from scaling.evaluate.labels import Cohort, prediction_times, task_labels
    from scaling.evaluate.tasks import load_tasks

    root, meds, _, run_dir = run
    death = next(t for t in load_tasks("synth") if t.name == "death_1y")
    cohort = Cohort.from_dataset(read_meds(meds))
    times = prediction_times(cohort, death.prediction)
    keep, labels = task_labels(cohort, death, times)
    times = times.take(np.flatnonzero(keep))
    # ACES predicts at the end of an input window, here 12 hours after the event: futures start at the event
    # and are re-timed from the prediction time
    times.time_us = times.time_us + 12 * 3600 * 10**6
    label_file = root / "aces_death_1y.parquet"
    pq.write_table(pa.table({"subject_id": pa.array(cohort.subject_ids[times.subject], pa.int64()),
                             "prediction_time": pa.array(times.time_us, pa.int64()).cast(pa.timestamp("us")),
                             "boolean_value": pa.array(labels[keep] == 1.0)}), label_file)
    config = root / "death_1y.yaml"
    config.write_text("predicates:\n  death:\n    code: MEDS_DEATH\ntrigger: _ANY_EVENT\nwindows:\n"
                      "  input:\n    start: NULL\n    end: trigger\n    index_timestamp: end\n"
                      "  target:\n    start: input.end\n    end: start + 365 days\n    label: death\n")
    out = root / "aces_evaluation"
    code, stdout, stderr = run_cli("evaluate", run_dir, "--tasks", config, "--labels", label_file, "--patients", 40,
                                   "--samples", 2, "--max-new-tokens", 32, "--bootstrap", 0, "--no-oracle", "--json",
                                   "--out", out)
    assert code == 0, stderr
    (task,) = json.loads(stdout)["tasks"]
    held_out = cohort.splits[times.subject] == "held_out"
    assert task["name"] == "death_1y" and task["n"] == min(40, int(held_out.sum()))
    predictions = pq.read_table(out / "predictions.parquet")
    by_time = dict(zip(zip(cohort.subject_ids[times.subject].tolist(), times.time_us.tolist()), labels[keep]))
    got = zip(predictions["subject_id"].to_pylist(), predictions["prediction_time"].cast(pa.int64()).to_pylist(),
              predictions["label"].to_pylist())
    assert all(by_time[(s, when)] == label for s, when, label in got)
    assert task["baselines"]["logistic"] is not None
    PredictionSchema.validate(pq.read_table(out / "meds_predictions" / "death_1y" / "model.parquet"))

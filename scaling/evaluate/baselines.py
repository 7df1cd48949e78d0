"""Supervised baselines for a task: count-of-code features of the history plus age, trained on the
train split (as EHRSHOT and MEDS-Tab do), with scikit-learn and LightGBM.

Features of one prediction: log(1 + number of history rows of each code) for the codes seen at least
`min_code_count` times in the training histories (static codes such as GENDER//F are rows too, so sex
is among them), and the age in years at the prediction time. Only history rows enter, so the
baselines see exactly what the model's prompt holds.

    linear model   binary: LogisticRegression; count and duration: PoissonRegressor
    gbdt           LightGBM: binary objective; poisson for counts; l1 (the median) for durations

The report names the linear model "logistic" for every kind of task (one JSON shape for all tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from scaling.evaluate.labels import Cohort, PredictionTimes, age_years, history_rows
from scaling.evaluate.tasks import Task

BASELINES = ("logistic", "gbdt")


@dataclass
class FeatureSpace:
    columns: np.ndarray  # cohort code indices that are feature columns
    names: list[str]

    @classmethod
    def fit(cls, cohort: Cohort, times: PredictionTimes, min_code_count: int = 5, max_codes: int = 4000
            ) -> FeatureSpace:
        rows, _ = history_rows(cohort, times)
        counts = np.bincount(cohort.events.code_index[rows], minlength=len(cohort.events.codes))
        kept = np.flatnonzero(counts >= min_code_count)
        kept = kept[np.argsort(-counts[kept], kind="stable")[:max_codes]]
        kept = np.sort(kept)
        return cls(kept, [cohort.events.codes[i] for i in kept] + ["age_years"])

    def transform(self, cohort: Cohort, times: PredictionTimes) -> scipy.sparse.csr_matrix:
        """(n, n_codes + 1) float32: log1p code counts of each history, then the age (0 when unknown)."""
        rows, owner = history_rows(cohort, times)
        column_of_code = -np.ones(len(cohort.events.codes), np.int64)
        column_of_code[self.columns] = np.arange(len(self.columns))
        col = column_of_code[cohort.events.code_index[rows]]
        known = col >= 0
        counts = scipy.sparse.coo_matrix(
            (np.ones(int(known.sum()), np.float32), (owner[known], col[known])),
            shape=(len(times), len(self.columns)),
        ).tocsr()  # duplicates are summed
        counts.data = np.log1p(counts.data)
        age = np.nan_to_num(age_years(cohort, times), nan=0.0).astype(np.float32)[:, None]
        return scipy.sparse.hstack([counts, scipy.sparse.csr_matrix(age / 100.0)], format="csr")


def make_baseline(name: str, kind: str, seed: int = 0):
    """An unfitted estimator for a baseline and task kind."""
    # scikit-learn and LightGBM are imported when a baseline is made: they are slow to import.
    if name == "logistic":
        from sklearn.linear_model import LogisticRegression, PoissonRegressor

        if kind == "binary":
            return LogisticRegression(C=0.3, max_iter=2000)
        return PoissonRegressor(alpha=1e-2, max_iter=1000)
    if name == "gbdt":
        import lightgbm

        common = dict(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=20, subsample=0.8,
                      subsample_freq=1, colsample_bytree=0.8, random_state=seed, n_jobs=1, verbose=-1)
        if kind == "binary":
            return lightgbm.LGBMClassifier(**common)
        return lightgbm.LGBMRegressor(objective="poisson" if kind == "count" else "l1", **common)
    raise ValueError(f"unknown baseline {name!r}")


def fit_predict(name: str, task: Task, x_train, y_train: np.ndarray, x_test, seed: int = 0
                ) -> tuple[np.ndarray | None, str | None]:
    """Train a baseline on the train split and predict the held-out rows: (predictions, None), or
    (None, the reason it cannot be trained)."""
    if len(y_train) < 10:
        return None, f"{len(y_train)} training examples; need at least 10"
    if task.kind == "binary":
        positives = int(y_train.sum())
        if positives < 2 or positives > len(y_train) - 2:
            return None, f"{positives} positives in {len(y_train)} training examples; need both classes"
    estimator = make_baseline(name, task.kind, seed)
    x_train = x_train.astype(np.float64) if name == "logistic" else x_train
    x_test = x_test.astype(np.float64) if name == "logistic" else x_test
    estimator.fit(x_train, y_train.astype(int) if task.kind == "binary" else y_train)
    if task.kind == "binary":
        return estimator.predict_proba(x_test)[:, 1], None
    return np.maximum(estimator.predict(x_test), 0.0), None

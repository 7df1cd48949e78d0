"""Predictions in the ecosystem's format: one parquet per binary task and estimator in the schema that
meds-evaluation reads and validates (MEDS-DEV's `PredictionSchema`: the MEDS label schema plus
`predicted_boolean_probability`): subject_id int64, prediction_time timestamp[us], boolean_value bool,
predicted_boolean_probability float32. So a model evaluated here can be scored by MEDS-DEV's own tools
(`meds-evaluation-cli predictions_path=...`) next to the models of other groups.

Only binary tasks fit that schema (counts and durations have no predicted_* column there); rows where an
estimator has no estimate (the oracle where the generator could not replay a history) are left out of that
estimator's file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ESTIMATORS = ("model", "model_probability", "logistic", "gbdt", "oracle")  # the predictions table's estimate columns
SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("prediction_time", pa.timestamp("us")),
    ("boolean_value", pa.bool_()),
    ("predicted_boolean_probability", pa.float32()),
])


def meds_predictions(predictions: pa.Table, binary_tasks: list[str]) -> dict[tuple[str, str], pa.Table]:
    """{(task, estimator): table in SCHEMA} from an evaluation's predictions table (one row per task and
    prediction time: task, subject_id, prediction_time, label and one column per estimator)."""
    out = {}
    for task in binary_tasks:
        rows = predictions.filter(pc.equal(predictions["task"], task))
        for estimator in ESTIMATORS:
            if estimator not in rows.column_names:
                continue
            estimate = rows[estimator].to_numpy(zero_copy_only=False)
            keep = np.flatnonzero(~np.isnan(estimate))
            if not len(keep):
                continue
            kept = rows.take(keep)
            out[(task, estimator)] = pa.table({
                "subject_id": kept["subject_id"].cast(pa.int64()),
                "prediction_time": kept["prediction_time"].cast(pa.timestamp("us")),
                "boolean_value": pa.array(kept["label"].to_numpy(zero_copy_only=False) > 0.5),
                "predicted_boolean_probability": pa.array(estimate[keep].astype(np.float32)),
            }, schema=SCHEMA)
    return out

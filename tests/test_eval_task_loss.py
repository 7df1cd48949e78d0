"""A task's own loss per run (scaling.bench.task_loss) against the same quantities computed by hand in numpy
from the model's logits over the split's packed windows."""

import numpy as np
import pytest
from eval_builders import synth_cohort_and_store, task
from train_builders import tiny_run_config

from scaling.bench.task_loss import task_losses
from scaling.data.token_store import TokenStore
from scaling.evaluate.tasks import PredictionRule
from scaling.train.run_dir import load_trained_model
from scaling.train.trainer import train_run

SEQ = 24


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_loss")
    _, tokens = synth_cohort_and_store(root, patients=300)
    train_run(tiny_run_config(tokens, steps=12, seq_len=SEQ), root / "run", progress=False)
    return root / "run", tokens


def test_outcome_loss_and_bce_match_a_hand_computation_over_the_split(trained):
    run, tokens = trained
    yearly = PredictionRule("yearly", "random", min_history_days=365, probability=0.25)
    tasks = [task("death_1y", "binary", yearly, ("MEDS_DEATH",), 365),
             task("ckd_1y", "binary", yearly, ("DIAGNOSIS//ICD//10//N18",), 365),
             task("stay", "duration", yearly, ("HOSPITAL_DISCHARGE//INPATIENT",), 30)]
    got = task_losses(run, tasks, split="tuning")
    assert set(got["tasks"]) == {"death_1y", "ckd_1y"}  # a duration has no outcome token set

    store = TokenStore.open(tokens)
    flat = np.asarray(store.split("tuning").tokens, np.int64)
    n_windows = (len(flat) - 1) // SEQ
    windows = flat[np.arange(n_windows)[:, None] * SEQ + np.arange(SEQ + 1)]  # (W, SEQ + 1) tiling the split
    model, _, _ = load_trained_model(run)
    logits = np.concatenate([np.asarray(model(windows[i:i + 64, :-1].astype(np.int32)), np.float64)
                             for i in range(0, n_windows, 64)])  # (W, SEQ, V)
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    targets = windows[:, 1:]
    ce = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    assert got["val_loss"] == pytest.approx(ce.mean(), rel=1e-4)
    for name, prefix in (("death_1y", "MEDS_DEATH"), ("ckd_1y", "DIAGNOSIS//ICD//10//N18")):
        ids = [i for i, t in enumerate(store.vocab.tokens) if t.startswith(prefix)]
        y = np.isin(targets, ids)
        q = np.exp(log_p[..., ids]).sum(-1)
        want_bce = -np.where(y, np.log(q), np.log1p(-q)).mean()
        assert got["tasks"][name]["outcome_targets"] == np.isin(flat[1:n_windows * SEQ + 1], ids).sum() == y.sum()
        assert y.sum() > 0
        assert got["tasks"][name]["outcome_loss"] == pytest.approx(ce[y].mean(), rel=1e-4)
        assert got["tasks"][name]["outcome_bce"] == pytest.approx(want_bce, rel=1e-4)

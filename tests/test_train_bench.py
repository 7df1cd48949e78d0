"""`scaling bench train --json`: the figures of the project's training step, consistent with the accounting."""

import json

import pytest

from models.accounting import count_params
from models.ladder import family_shape


def test_train_bench_cli_prints_params_tokens_and_flops_per_second(run_cli):
    code, out, err = run_cli("bench", "train", "--d-model", 24, "--n-layers", 1, "--n-heads", 3, "--vocab", 37,
                             "--seq-len", 16, "--batch", 4, "--steps-per-dispatch", 3, "--seconds", 0.5, "--json")
    assert code == 0, err
    result = json.loads(out)
    shape = family_shape(24, 37, 16, n_layers=1, n_heads=3)
    assert result["params"] == count_params(shape)["total"]
    assert result["tokens_per_s"] > 0 and result["steps"] % 3 == 0
    assert result["flops_per_s"] == pytest.approx(6 * result["params"] * result["tokens_per_s"])
    assert "mfu" not in result  # no known peak on a CPU


def test_train_bench_cli_rejects_bad_flags_in_one_line(run_cli):
    code, out, err = run_cli("bench", "train", "--dtype", "float16", "--json")
    assert code == 2 and out == ""
    assert err.strip() == "error: --dtype float16; expected float32 or bfloat16"
    code, _, err = run_cli("bench", "train", "--d-model", 30, "--n-heads", 4)
    assert code == 2 and "model.d_model = 30 is not divisible by model.n_heads = 4" in err

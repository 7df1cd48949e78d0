"""Compute priced two ways: 6N and the detailed count of each ladder shape, the optimum under each, and a
results table repriced from its flops_detailed column."""

import json
import math

import numpy as np
import pytest

from analysis.compute_pricing import ComputePricing, reprice
from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table
from analysis.results_table import results_from_frame
from models.accounting import count_params, flops_per_token
from models.ladder import shape_for_params

DETAILED = ComputePricing("detailed", vocab_size=512, seq_len=4096)


def test_6n_optimum_is_the_closed_form():
    params, tokens = ComputePricing("6N").optimum(EXAMPLE_LAW, 1e20)
    assert params == pytest.approx(EXAMPLE_LAW.optimal_params(1e20), rel=1e-12)
    assert 6 * params * tokens == pytest.approx(1e20, rel=1e-12)


@pytest.mark.parametrize("target", [1e6, 1e7, 1e8])
def test_detailed_price_at_a_ladder_shape_is_its_accounting(target):
    # whole decades are among the tabulated targets: there the price is the shape's own detailed count
    shape = shape_for_params(target, 512, 4096)
    n = count_params(shape)["total"]
    assert DETAILED.flops_per_token(n) == pytest.approx(flops_per_token(shape, 4096, "detailed"), rel=1e-9)
    assert DETAILED.flops_per_token(n) > 6 * n  # attention over 4,096 tokens costs more than nothing


def test_detailed_optimum_beats_every_ladder_shape_on_the_same_budget():
    compute = 1e20
    params, tokens = DETAILED.optimum(EXAMPLE_LAW, compute)
    assert DETAILED.flops_per_token(params) * tokens == pytest.approx(compute, rel=1e-9)
    # brute force over real ladder shapes, each priced by its own detailed count
    best = min(
        (EXAMPLE_LAW.loss(n, compute / flops_per_token(s, 4096, "detailed")), n)
        for s in (shape_for_params(float(t), 512, 4096) for t in np.geomspace(params / 4, params * 4, 40))
        for n in [count_params(s)["total"]]
    )
    assert EXAMPLE_LAW.loss(params, tokens) <= best[0] * (1 + 1e-3)
    assert abs(math.log(best[1] / params)) < math.log(1.3)
    # a detailed count costs more per token, so the same FLOPs buy fewer tokens per parameter than under 6N
    six_params, six_tokens = ComputePricing("6N").optimum(EXAMPLE_LAW, compute)
    assert tokens / params < six_tokens / six_params


def test_reprice_uses_the_detailed_column_and_remeasures_each_budget():
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, noise=0.0)
    runs["flops_detailed"] = runs["flops"] * (1.0 + 1e4 / runs["params"])  # small models pay more per token
    table = reprice(results_from_frame(runs, "t"), "detailed")
    assert np.allclose(np.sort(table.runs["flops"]), np.sort(runs["flops_detailed"]))
    for budget in EXAMPLE_BUDGETS:
        group = runs[runs["budget"] == budget]
        expected = math.exp(np.log(group["flops_detailed"]).mean())
        assert (np.isclose(table.runs["budget"], expected, rtol=1e-12)).sum() == len(group)
    assert "priced as detailed" in table.notes[-1]


def test_fit_json_has_the_optimum_priced_both_ways(run_cli, tmp_path):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, noise=0.0)
    runs["vocab_size"], runs["seq_len"] = 512, 4096
    runs.to_csv(tmp_path / "r.csv", index=False)
    code, out, err = run_cli("fit", tmp_path / "r.csv", "--approach", "3", "--compute", "1e18", "--json")
    assert code == 0, err
    fit = json.loads(out)
    by = fit["optimum_by_pricing"]
    assert by["6N"]["params"] == pytest.approx(EXAMPLE_LAW.optimal_params(1e18), rel=0.01)
    expected = DETAILED.optimum(EXAMPLE_LAW, 1e18)
    assert by["detailed"]["params"] == pytest.approx(expected[0], rel=0.01)
    assert by["detailed"]["flops_per_token_over_6n"] > 1


@pytest.mark.parametrize("args, message", [
    (("--flops", "7N"), "--flops: '7N' is not a way to count compute; expected 6N or detailed"),
    (("--flops", "detailed"), "--flops detailed needs a flops_detailed value for every run"),
])
def test_bad_flops_exit_2_with_one_line(run_cli, tmp_path, args, message):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, noise=0.0)
    runs.to_csv(tmp_path / "r.csv", index=False)
    code, out, err = run_cli("fit", tmp_path / "r.csv", *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

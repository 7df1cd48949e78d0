"""Learning-rate transfer: each width's best rate from a width x lr sweep, and the drift across widths."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.lr_transfer import best_lr, transfer_summary

WIDTHS = (32, 64, 128, 256)
LRS = (2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)


def sweep(best_at) -> pd.DataFrame:
    """Loss = 2 + 0.1 (ln lr - ln best_at(d))^2 at every width and rate (a results table's columns)."""
    rows = [{"params": 1e4 * d, "tokens": 2.5e5, "d_model": d, "lr": lr, "loss": 2 + 0.1 * np.log(lr / best_at(d)) ** 2}
            for d in WIDTHS for lr in LRS]
    return pd.DataFrame(rows)


def test_best_rate_is_the_parabolas_minimum_and_the_drift_follows_width():
    standard = transfer_summary(sweep(lambda d: 2e-2 * (32 / d) ** 0.5))  # falls by sqrt(2) per doubling
    mup = transfer_summary(sweep(lambda d: 1.2e-2))
    # a quadratic in ln lr is met exactly by the parabola through the best run and its neighbours
    assert standard["best_lr"][64] == pytest.approx(2e-2 / 2 ** 0.5, rel=1e-9)
    assert mup["best_lr"] == pytest.approx({d: 1.2e-2 for d in WIDTHS}, rel=1e-9)
    assert mup["drift"] == pytest.approx(1.0)
    # from 2e-2 at width 32 to 2e-2 / sqrt(8) at 256, both inside the swept rates
    assert standard["drift"] == pytest.approx(8 ** -0.5, rel=1e-9)


def test_a_best_rate_at_the_edge_is_the_edge():
    runs = sweep(lambda d: 1e-3)  # below every swept rate
    assert best_lr(runs[runs["d_model"] == 32]) == LRS[0]


def test_lr_transfer_command_writes_the_figure_and_the_summary(run_cli, tmp_path):
    for name, best_at in (("lr_standard", lambda d: 2e-2 * (32 / d) ** 0.5), ("lr_mup", lambda d: 1.2e-2)):
        (tmp_path / name).mkdir()
        runs = sweep(best_at)
        if name == "lr_standard":  # a width only one table has is left out of the comparison
            runs = pd.concat([runs, runs[runs["d_model"] == 256].assign(d_model=512, loss=lambda r: r["loss"] + 1)])
        runs.to_csv(tmp_path / name / "results.csv", index=False)
    out = tmp_path / "fig.png"
    code, stdout, err = run_cli("lr-transfer", tmp_path / "lr_standard" / "results.csv",
                                tmp_path / "lr_mup" / "results.csv", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["lr_mup"]["drift"] == pytest.approx(1.0)
    assert summary["lr_standard"]["drift"] == pytest.approx(8 ** -0.5)
    assert sorted(int(d) for d in summary["lr_standard"]["best_lr"]) == list(WIDTHS)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

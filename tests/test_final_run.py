"""`scaling final`: the recommended model is trained, its predicted and actual losses written, and a
re-run reuses the recommendation and the finished run; under a data cap it trains the data-constrained
optimum on a nested subset and is graded against that law; on a Ray cluster (one task, or two hosts joined by
jax.distributed) it trains the same model to the same losses."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from train_builders import random_token_store, tiny_run_config, write_toml

from analysis.data_constrained import constrained_optimum
from analysis.example_table import synthetic_data_constrained_table, synthetic_isoflop_table
from analysis.forecast import fit_input_sha256
from analysis.loss_law import DataConstrainedLaw, LossLaw
from analysis.results_table import load_results
from scaling.common.errors import InputError
from scaling.data.token_store import TokenStore, train_subset
from scaling.pipeline.final import Cluster, check_fits, check_visible
from sweeps.cluster import check_reachable

LAW = LossLaw(E=1.5, A=40.0, B=60.0, alpha=0.35, beta=0.35)
SMALL_BUDGET = "3e9"  # a one-layer model and 20 steps: seconds of training


def known_law_sweep(root) -> tuple:
    """A token store and the results table of an IsoFLOP sweep drawn from LAW (no training needed)."""
    store = random_token_store(root / "tok")
    runs, _ = synthetic_isoflop_table(LAW, np.array([1e9, 3e9, 1e10]), seed=1)
    results = root / "results.csv"
    runs.to_csv(results, index=False)
    return store, results


def final_command(results, store, out, *extra) -> list[str]:
    return [sys.executable, "-m", "scaling", "final", str(results), "--compute", SMALL_BUDGET, "--data", str(store),
            "--out", str(out), "--bootstrap", "20", "--json", *extra]


def run_final(command: list[str], env: dict) -> dict:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def same_recommendation(source, out) -> None:
    """Start `out` from `source`'s recommendation.json and forecast.json, so both runs train one config and
    are graded against one forecast whatever the fit does."""
    out.mkdir()
    for name in ("recommendation.json", "forecast.json"):
        shutil.copy(source / name, out / name)


def assert_same_record(got: dict, expected: dict) -> None:
    """Equal keys and values; floats within 1e-6 (the XLA thread pools differ: the Ray task has one thread)."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same_record(got[key], value)
            continue
        assert got[key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key


def without_ray_address() -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.mark.slow
def test_final_run_trains_the_recommendation_and_reuses_it(tmp_path, run_cli):
    store, results = known_law_sweep(tmp_path)
    out = tmp_path / "final"
    code, stdout, err = run_cli("final", results, "--compute", "2e10", "--data", store, "--out", out,
                                "--bootstrap", "20", "--json")
    assert code == 0, err
    prediction = json.loads(stdout)
    rec = json.loads((out / "recommendation.json").read_text())["recommendation"]
    summary = json.loads((out / "summary.json").read_text())
    fit = rec["law"]
    n, d = summary["params"], summary["tokens"]
    expected = fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]
    assert prediction["predicted_loss"] == pytest.approx(expected)
    # the fit recovers the law the table was drawn from, so its prediction is the law's, within noise
    assert prediction["predicted_loss_at_recommendation"] == pytest.approx(LAW.loss(rec["params"], rec["tokens"]),
                                                                           rel=0.02)
    assert summary["status"] == "finished" and prediction["actual_loss"] == summary["val_loss"]
    assert abs(summary["params"] - rec["params"]) / rec["params"] < 0.15  # the ladder hits the target
    # the forecast was registered before training, at the run's own N and D, on exactly these runs
    forecast = json.loads((out / "forecast.json").read_text())
    assert forecast["made_before_training"] is True
    assert (forecast["params"], forecast["tokens"]) == (n, d)
    # the law's forecast at (N, D), and the point: the mean over budget windows when the sweep has refits
    assert forecast["free_E_predicted_loss"] == pytest.approx(expected)
    refits = [r["predicted_loss"] for r in forecast["without_smallest_budgets"]]
    point = sum([expected, *refits]) / (1 + len(refits))
    assert forecast["point_from"] == ("window_mean" if refits else "free_E")
    assert forecast["predicted_loss"] == pytest.approx(point)
    assert forecast["fit_input_sha256"] == fit_input_sha256(load_results(results))
    low, high = forecast["interval"]
    assert low <= forecast["predicted_loss"] <= high and low <= forecast["pinned_E"]["predicted_loss"] <= high
    graded = prediction["forecast"]
    assert graded["relative_error"] == pytest.approx((summary["val_loss"] - point) / point)
    assert graded["inside_interval"] == (low <= summary["val_loss"] <= high)
    before = (out / "summary.json").read_bytes()
    registered = (out / "forecast.json").read_bytes()
    code, stdout, err = run_cli("final", results, "--compute", "2e10", "--data", store, "--out", out, "--json")
    assert code == 0 and "reusing" in err
    assert (out / "summary.json").read_bytes() == before
    assert (out / "forecast.json").read_bytes() == registered  # never rewritten


def test_final_refuses_a_table_it_cannot_read(tmp_path, run_cli):
    bad = tmp_path / "results.csv"
    bad.write_text("params,tokens\n1,2\n")
    code, _, err = run_cli("final", bad, "--compute", "1e10", "--data", tmp_path, "--out", tmp_path / "f")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", [("--hosts", "2"), ("--gpus", "1"), ("--cpus", "4")])
def test_cluster_options_need_an_address(tmp_path, run_cli, monkeypatch, option):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, _, err = run_cli("final", tmp_path / "results.csv", "--compute", "1e10", "--out", tmp_path / "f", *option)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{option[0]} {option[1]}" in err and "--address" in err
    assert not (tmp_path / "f").exists()


def test_an_address_nothing_listens_on_is_refused_in_one_line(tmp_path, run_cli):
    code, _, err = run_cli("final", tmp_path / "results.csv", "--compute", "1e10", "--address", "127.0.0.1:1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in err


def cli_says(error: pytest.ExceptionInfo, pattern: str) -> None:
    """The library error names its arguments; the command line shows them as its flags: the text it shows matches."""
    assert re.search(pattern, error.value.cli_message()), error.value.cli_message()


def test_reachability_check_leaves_client_urls_to_ray_and_reads_ipv6():
    check_reachable("ray://10.0.0.1:10001")  # Ray Client URL: not a host:port to probe
    check_reachable("auto")
    with pytest.raises(InputError, match=r"address = \[::1\]:1: no Ray cluster answers there") as e:
        check_reachable("[::1]:1")
    cli_says(e, r"--address \[::1\]:1: no Ray cluster answers there")


def test_cluster_that_cannot_hold_the_run_is_refused_in_one_line():
    cpu_node = {"Alive": True, "Resources": {"CPU": 8.0}}
    gpu_node = {"Alive": True, "Resources": {"CPU": 32.0, "GPU": 8.0}}
    with pytest.raises(InputError, match=r"gpus = 1: the Ray cluster at h:6379 has no GPU") as e:
        check_fits(Cluster("h:6379", gpus=1), {"CPU": 16.0}, [cpu_node, cpu_node])
    cli_says(e, r"^--gpus 1: the Ray cluster at h:6379 has no GPU .*; on a CPU cluster leave --gpus out$")
    with pytest.raises(InputError, match=r"hosts = 2 gpus = 8 cpus = 8: .* has 1 node\(s\)") as e:
        check_fits(Cluster("h:6379", hosts=2, gpus=8, cpus=8), {"CPU": 40.0, "GPU": 8.0}, [cpu_node, gpu_node])
    cli_says(e, r"^--hosts 2 --gpus 8 --cpus 8: .* has 1 node\(s\)")
    with pytest.raises(InputError, match=r"cpus = 16") as e:
        check_fits(Cluster("h:6379", cpus=16), {"CPU": 8.0}, [cpu_node])
    cli_says(e, r"--cpus 16")
    check_fits(Cluster("h:6379", hosts=2, cpus=8), {"CPU": 40.0, "GPU": 8.0}, [cpu_node, gpu_node])


def test_a_node_that_does_not_see_the_run_directory_says_so(tmp_path):
    with pytest.raises(InputError, match=r"out = .*nowhere: Ray node .* does not see the run directory") as e:
        check_visible(tmp_path / "nowhere", str(tmp_path))
    cli_says(e, r"^--out .*nowhere: Ray node .* does not see the run directory")
    assert "\n" not in str(e.value)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recommendation.json").write_text("{}")
    with pytest.raises(InputError, match=r"data = .*tok: Ray node .* does not see the token store"):
        check_visible(tmp_path / "run", str(tmp_path / "tok"))


# -- on a real Ray cluster: two nodes on loopback (tests/conftest.py; ~15 s to start, shared by the module) ------


@pytest.mark.slow
@pytest.mark.ray
def test_final_on_a_ray_cluster_matches_the_in_process_run(tmp_path, loopback_cluster):
    address, cluster_env = loopback_cluster
    store, results = known_law_sweep(tmp_path)
    # one CPU device here, as the Ray task has (its one CPU): in this process the CPU would be split per core
    here = run_final(final_command(results, store, tmp_path / "here"), {**without_ray_address(),
                                                                       "SCALING_CPU_DEVICES": "1"})
    same_recommendation(tmp_path / "here", tmp_path / "ray")
    on_ray = run_final(final_command(results, store, tmp_path / "ray", "--address", address), cluster_env)
    assert on_ray["status"] == "finished"
    assert json.loads((tmp_path / "ray" / "prediction.json").read_text()) == on_ray
    assert_same_record(on_ray, here)
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("here", "ray"))
    timings = {"tokens_per_s": None, "startup_s": None, "compile": None}
    assert_same_record({**b, **timings}, {**a, **timings})


@pytest.mark.slow
@pytest.mark.ray
def test_final_on_two_hosts_matches_two_devices_in_one_process(tmp_path, loopback_cluster):
    address, cluster_env = loopback_cluster
    store, results = known_law_sweep(tmp_path)
    two_devices = {**without_ray_address(), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    here = run_final(final_command(results, store, tmp_path / "here"), two_devices)
    same_recommendation(tmp_path / "here", tmp_path / "hosts")
    hosts = run_final(final_command(results, store, tmp_path / "hosts", "--address", address, "--hosts", "2"),
                      cluster_env)
    summary = json.loads((tmp_path / "hosts" / "summary.json").read_text())
    assert summary["devices"] == 2  # one CPU device in each of the two processes
    assert hosts["status"] == "finished"
    assert hosts["actual_loss"] == pytest.approx(here["actual_loss"], rel=1e-5)
    a = pd.read_parquet(tmp_path / "here" / "metrics.parquet")
    b = pd.read_parquet(tmp_path / "hosts" / "metrics.parquet")
    assert list(b["step"]) == list(a["step"])
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["val_loss"].dropna(), a["val_loss"].dropna(), rtol=1e-5)
    assert (tmp_path / "hosts" / "checkpoints" / str(summary["steps"])).is_dir()


@pytest.mark.slow
@pytest.mark.ray
def test_final_asks_for_what_the_cluster_does_not_have(tmp_path, loopback_cluster):
    address, cluster_env = loopback_cluster
    for extra, expected in ((("--gpus", "1"), f"--gpus 1: the Ray cluster at {address} has no GPU"),
                            (("--hosts", "3"), f"--hosts 3 --gpus 0 --cpus 1: the Ray cluster at {address}")):
        command = final_command(tmp_path / "results.csv", tmp_path, tmp_path / "f", "--address", address, *extra)
        result = subprocess.run(command, env=cluster_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert expected in result.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_ladder_on_a_ray_cluster_matches_the_in_process_ladder(tmp_path, loopback_cluster):
    """`scaling ladder --address` trains each rung as a Ray task on a node of the cluster, to the losses the
    same rungs reach in one process (one CPU device in both)."""
    address, cluster_env = loopback_cluster
    store = random_token_store(tmp_path / "tok")
    run = tmp_path / "final"
    train = subprocess.run([sys.executable, "-m", "scaling", "train", "--quiet", str(write_config(tmp_path, store)),
                            "--out", str(run)], env=without_ray_address(), capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]

    def ladder(out, env, *extra):
        command = [sys.executable, "-m", "scaling", "ladder", str(run), "--fractions", "1/4,1/2", "--out", str(out),
                   "--quiet", "--json", *extra]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout), result.stderr

    here, here_log = ladder(tmp_path / "here", {**without_ray_address(), "SCALING_CPU_DEVICES": "1"})
    on_ray, ray_log = ladder(tmp_path / "ray", cluster_env, "--address", address)
    # each rung went to the cluster as a Ray task (equal losses alone would not tell an ignored --address)
    assert ray_log.count("training on 1 Ray task(s)") == 2 and "Ray task" not in here_log
    assert [(r["name"], r["steps"], r["status"]) for r in on_ray] == [("frac0.25", 6, "finished"),
                                                                      ("frac0.5", 12, "finished")]
    for a, b in zip(here, on_ray, strict=True):
        assert_same_record(b, a)
    for name in ("frac0.25", "frac0.5"):
        a, b = (json.loads((tmp_path / d / "runs" / name / "summary.json").read_text()) for d in ("here", "ray"))
        timings = {"tokens_per_s": None, "startup_s": None, "compile": None}
        assert_same_record({**b, **timings}, {**a, **timings})
        records = [json.loads((tmp_path / d / "runs" / name / "ladder.json").read_text()) for d in ("here", "ray")]
        assert records[0] == records[1] and records[0]["run"] == str(run)


def write_config(root, store):
    path = root / "final.toml"
    write_toml(path, tiny_run_config(store, steps=24, warmup_steps=2))
    return path


# The driver never wrote recommendation.json into `unshared`, as if it were on a disk only the driver has.
UNSHARED_RUN = """
import sys
from pathlib import Path
from scaling.common.errors import InputError
from scaling.pipeline.final import Cluster, connected, train_on_cluster
cluster = Cluster(sys.argv[1])
try:
    with connected(cluster):
        train_on_cluster({"data": sys.argv[2]}, Path(sys.argv[3]), cluster, log=lambda m: None)
except InputError as e:
    sys.exit(f"error: {e}")
"""


@pytest.mark.slow
@pytest.mark.ray
def test_a_run_directory_the_workers_do_not_see_fails_in_one_line(tmp_path, loopback_cluster):
    address, cluster_env = loopback_cluster
    store = random_token_store(tmp_path / "tok")
    result = subprocess.run([sys.executable, "-c", UNSHARED_RUN, address, str(store), str(tmp_path / "unshared")],
                            env=cluster_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not see the run directory" in result.stderr


@pytest.mark.slow
def test_final_run_takes_lr_and_batch_size_from_a_side_sweeps_laws(tmp_path, run_cli):
    store, results = known_law_sweep(tmp_path)
    # a side sweep whose best lr is 0.5 C^-0.1 and best batch size 0.05 C^0.25 windows (loss quadratic in logs)
    rows = []
    for c in (1e8, 3e8, 1e9):
        for lr in np.geomspace(1e-3, 1e-1, 5):
            for batch in (2, 4, 8, 16):
                loss = 2 + 0.05 * np.log(lr / (0.5 * c ** -0.1)) ** 2 + 0.02 * np.log(batch / (0.05 * c ** 0.25)) ** 2
                rows.append({"params": 1e4, "tokens": c / 6e4, "budget": c, "lr": lr, "batch_size": batch,
                             "loss": loss})
    pd.DataFrame(rows).to_csv(tmp_path / "hp.csv", index=False)
    code, _, err = run_cli("final", results, "--compute", SMALL_BUDGET, "--data", store, "--out", tmp_path / "final",
                           "--bootstrap", "10", "--hyperparameters", tmp_path / "hp.csv")
    assert code == 0, err
    # the command's last line gives the forecast registered before training, not the law's value at (N, D)
    graded = json.loads((tmp_path / "final" / "prediction.json").read_text())["forecast"]
    assert f"predicted {graded['predicted_loss']:.4f}, actual {graded['actual_loss']:.4f}" in err
    saved = json.loads((tmp_path / "final" / "recommendation.json").read_text())
    settings, config = saved["recommendation"]["hyperparameters"], saved["config"]["train"]
    compute = float(SMALL_BUDGET)
    assert config["lr"] == pytest.approx(0.5 * compute ** -0.1, rel=1e-6)
    assert config["batch_size"] == round(0.05 * compute ** 0.25)
    assert settings["lr"]["value"] == config["lr"] and "law of" in settings["lr"]["source"]
    assert "law of" in settings["batch_size"]["source"]
    assert set(settings) >= set(config)  # every training setting is recorded with where it came from
    assert json.loads((tmp_path / "final" / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_table_approach_3_cannot_fit_trains_without_a_forecast(tmp_path, run_cli):
    store = random_token_store(tmp_path / "tok")
    runs, _ = synthetic_isoflop_table(LAW, np.array([1e9, 3e9]), sizes_per_budget=3, seed=1)  # 6 runs: approach 2 only
    runs.to_csv(tmp_path / "results.csv", index=False)
    code, stdout, err = run_cli("final", tmp_path / "results.csv", "--compute", SMALL_BUDGET, "--data", store,
                                "--out", tmp_path / "final", "--bootstrap", "10", "--json")
    assert code == 0, err
    prediction = json.loads(stdout)
    assert prediction["approach"] == "approach2" and prediction["forecast"] is None
    assert "no forecast: approach 3 could not be fitted" in err
    assert not (tmp_path / "final" / "forecast.json").exists()


CAPPED_LAW = DataConstrainedLaw(LAW, R_D_star=5.0)
CAP = 1000  # unique train tokens: about 14 of the store's 41 train patients


def known_data_constrained_sweep(root) -> tuple:
    """A token store and a sizes x unique data x epochs table drawn from CAPPED_LAW (no training needed)."""
    store = random_token_store(root / "tok")
    runs = synthetic_data_constrained_table(CAPPED_LAW, sizes=(1e3, 3e3, 1e4, 3e4), unique_tokens=(300, 1000, 3000),
                                            seed=2)
    results = root / "results.csv"
    runs.to_csv(results, index=False)
    return store, results


@pytest.mark.slow
def test_final_under_a_data_cap_trains_the_constrained_optimum_on_a_subset(tmp_path, run_cli):
    store, results = known_data_constrained_sweep(tmp_path)
    out = tmp_path / "final"
    code, stdout, err = run_cli("final", results, "--compute", "3e8", "--unique-tokens", str(CAP), "--data", store,
                                "--out", out, "--bootstrap", "20", "--json")
    assert code == 0, err
    prediction = json.loads(stdout)
    saved = json.loads((out / "recommendation.json").read_text())
    rec, config = saved["recommendation"], saved["config"]
    summary = json.loads((out / "summary.json").read_text())
    forecast = json.loads((out / "forecast.json").read_text())
    # the run is the data-constrained law's optimum at the cap, trained on the nested subset of CAP tokens
    law = DataConstrainedLaw.from_json(rec["data_constrained_law"])
    optimum = constrained_optimum(law, 3e8, CAP)
    assert rec["params"] == pytest.approx(optimum["params"]) and rec["tokens"] == pytest.approx(optimum["tokens"])
    assert rec["point_from"] == "data_constrained" and rec["unconstrained"]["params"] < rec["params"]
    assert config["train"]["unique_tokens"] == CAP
    subset = train_subset(TokenStore.open(store), CAP, config["train"]["seq_len"] + 1)
    assert summary["unique_tokens"] == subset.tokens and summary["epochs"] == pytest.approx(
        summary["tokens"] / subset.tokens)
    assert summary["epochs"] > 4
    # forecast and grade: the data-constrained law at the run's own N, D and U; approach 3's beside it
    n, d, u = summary["params"], summary["tokens"], summary["unique_tokens"]
    assert forecast["point_from"] == "data_constrained" and forecast["made_before_training"] is True
    assert (forecast["params"], forecast["tokens"], forecast["unique_tokens"]) == (n, d, u)
    assert forecast["predicted_loss"] == pytest.approx(float(law.loss(n, d, u)))
    assert prediction["predicted_loss"] == pytest.approx(float(law.loss(n, d, u)))
    a3 = rec["law"]
    unconstrained = a3["E"] + a3["A"] / n ** a3["alpha"] + a3["B"] / d ** a3["beta"]
    assert prediction["unconstrained_predicted_loss"] == pytest.approx(unconstrained)
    actual = summary["val_loss"]
    assert prediction["unconstrained_relative_error"] == pytest.approx((actual - unconstrained) / unconstrained)
    assert prediction["forecast"]["relative_error"] == pytest.approx(
        (actual - forecast["predicted_loss"]) / forecast["predicted_loss"])
    # a re-run asking for another cap is refused: the directory holds this one's recommendation
    code, _, err = run_cli("final", results, "--compute", "3e8", "--data", store, "--out", out)
    assert code == 2 and "was made with --unique-tokens 1000, this run asks for no data cap; use another --out" in err


@pytest.mark.parametrize("value,message", [("0", "is not a positive number"), ("-5", "is not a positive number"),
                                           ("1e9", "is more than the")])
def test_a_data_cap_the_store_cannot_hold_is_refused_in_one_line(tmp_path, run_cli, value, message):
    store, results = known_data_constrained_sweep(tmp_path)
    code, _, err = run_cli("final", results, "--compute", "3e8", "--unique-tokens", value, "--data", store,
                           "--out", tmp_path / "final")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "final").exists()

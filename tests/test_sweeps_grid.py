"""Sweep grids: parsing with exact errors, expansion (N, D, C, steps), run ids, and `scaling sweep plan`."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_builders import tiny_store, write_grid

from models.accounting import count_params, flops_per_token
from models.ladder import family_shape
from scaling.common.errors import InputError
from sweeps.expand import expand_grid
from sweeps.grid import load_grid
from sweeps.plan import hardware_profile, make_plan

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("sweep_store") / "tok")


def grid_error(tmp_path, store, **kwargs) -> str:
    with pytest.raises(InputError) as e:
        expand_grid(load_grid(write_grid(tmp_path / "g.toml", store, **kwargs)))
    return str(e.value)


def test_isoflop_expansion_matches_an_independent_count(tmp_path, store):
    grid = load_grid(write_grid(tmp_path / "g.toml", store, budgets=(2e8, 4e8), widths=(24, 16)))
    expansion = expand_grid(grid)
    assert expansion.vocab_size == 39
    assert [(r.budget, r.shape.d_model) for r in expansion.runs] == [(2e8, 16), (2e8, 24), (4e8, 16), (4e8, 24)]
    for run in expansion.runs:
        n = count_params(family_shape(run.shape.d_model, 39, 24))["total"]
        assert run.params == n
        steps = round(run.budget / (6 * n) / 96)  # 96 = batch_size 4 x seq_len 24 tokens per step
        assert run.steps == steps and run.tokens == steps * 96
        assert run.flops == pytest.approx(6 * n * run.tokens)
        assert abs(run.flops / run.budget - 1) < 96 * 6 * n / run.budget  # within one step of the budget
        assert run.config["train"]["steps"] == steps and run.config["model"]["d_model"] == run.shape.d_model
        assert run.flops_detailed > 0 and run.tokens_per_param == pytest.approx(run.tokens / n)


def test_seed_replicates_are_the_same_runs_but_for_the_seed(tmp_path, store):
    single = expand_grid(load_grid(write_grid(tmp_path / "a.toml", store)))
    replicated = expand_grid(load_grid(write_grid(tmp_path / "b.toml", store, **{"seed = 1": "seeds = [1, 7]"})))
    assert len(replicated.runs) == 2 * len(single.runs)
    assert len({r.run_id for r in replicated.runs}) == len(replicated.runs)
    by_seed = {seed: [r for r in replicated.runs if r.config["seed"] == seed] for seed in (1, 7)}
    # seed 1's runs are exactly the single-seed grid's (same ids: finished runs are reused)
    assert [r.run_id for r in by_seed[1]] == [r.run_id for r in single.runs]
    for a, b in zip(by_seed[1], by_seed[7]):
        assert (a.budget, a.shape, a.steps, a.tokens) == (b.budget, b.shape, b.steps, b.tokens)
        assert {**a.config, "seed": 0} == {**b.config, "seed": 0}


def test_run_ids_are_deterministic_and_follow_the_store_not_its_path(tmp_path, store):
    first = expand_grid(load_grid(write_grid(tmp_path / "a.toml", store)))
    again = expand_grid(load_grid(write_grid(tmp_path / "b.toml", store)))
    assert [r.run_id for r in first.runs] == [r.run_id for r in again.runs]
    moved = shutil.copytree(store, tmp_path / "moved")
    (moved / "stats.json").write_text('{"seconds": 99}')  # re-tokenized: same tokens, other timings
    assert [r.run_id for r in expand_grid(load_grid(write_grid(tmp_path / "c.toml", moved))).runs] == \
        [r.run_id for r in first.runs]
    same_lr = expand_grid(load_grid(write_grid(tmp_path / "e.toml", store, **{"lr = 3e-3": "lr = 0.003"})))
    assert [r.run_id for r in same_lr.runs] == [r.run_id for r in first.runs]
    other_lr = expand_grid(load_grid(write_grid(tmp_path / "d.toml", store, **{"lr = 3e-3": "lr = 1e-3"})))
    assert not {r.run_id for r in other_lr.runs} & {r.run_id for r in first.runs}
    assert len({r.run_id for r in first.runs}) == len(first.runs)


def test_sizes_per_budget_are_log_spaced_around_the_guessed_optimum(tmp_path, store):
    grid = load_grid(write_grid(tmp_path / "g.toml", store, budgets=(3e9,),
                                **{"widths = [16, 24]": "sizes_per_budget = 3\nspan = 4\ntokens_per_param = 5"}))
    runs = expand_grid(grid).runs
    optimum = math.sqrt(3e9 / (6 * 5))
    assert [r.size for r in runs] == pytest.approx([optimum / 2, optimum, optimum * 2])
    assert runs[0].params < runs[1].params < runs[2].params


def test_params_x_tokens_and_wsd_branches(tmp_path, store):
    pxt = expand_grid(load_grid(write_grid(
        tmp_path / "p.toml", store, **{'kind = "isoflop"': 'kind = "params_x_tokens"\ntokens = [960, 1920, 3840]',
                                       "budgets = [2e+08, 4e+08]\n": ""})))
    assert len(pxt.runs) == 6 and {r.tokens for r in pxt.runs} == {960, 1920, 3840}
    assert all(r.budget is None for r in pxt.runs)

    wsd = expand_grid(load_grid(write_grid(
        tmp_path / "w.toml", store, widths=(16,),
        **{'kind = "isoflop"': 'kind = "wsd_branches"\ntokens = [1920, 3840]\ncooldown_fraction = 0.25',
           "budgets = [2e+08, 4e+08]\n": ""})))
    roles = [(r.role, r.steps, r.parent_step) for r in wsd.runs]
    # 20 and 40 steps; cooldowns of 5 and 10 steps start at 15 and 30
    assert roles == [("stable", 15, None), ("branch", 20, 15), ("stable", 30, 15), ("branch", 40, 30)]
    stable1, branch1, stable2, branch2 = wsd.runs
    assert branch1.parent == stable1.run_id and stable2.parent == stable1.run_id and branch2.parent == stable2.run_id
    assert stable1.config["train"]["schedule"] == "constant" and branch2.config["train"]["schedule"] == "wsd"
    assert {r.config["train"]["warmup_steps"] for r in wsd.runs} == {2}


@pytest.mark.parametrize(("change", "message"), [
    ({"seed = 1": "seed = 1\nsead = 2"}, "unknown key 'sead'"),
    ({"min_steps = 4": "min_steps = 4\nbudget = 3"}, "unknown key 'grid.budget'"),
    ({"lr = 3e-3": "lr = 3e-3\nlrr = 1"}, "unknown key 'train.lrr'"),
    ({"cpus_per_run = 1": "cpus_per_run = 1\ngpu = 1"}, "unknown key 'resources.gpu'"),
    ({"lr = 3e-3": "lr = 3e-3\nsteps = 10"}, "train.steps is set per run by the grid"),
    ({'kind = "isoflop"': 'kind = "isoflops"'}, "grid.kind = 'isoflops' is not one of"),
    ({"lr = 3e-3": "lr = -1.0"}, "train.lr = -1.0 must be positive"),
    ({"cpus_per_run = 1": "cpus_per_run = 0"}, "resources.cpus_per_run = 0 must be positive"),
    ({"widths = [16, 24]": "widths = [16, 24, 16]"}, "grid.widths lists 16 twice"),
    ({"widths = [16, 24]": "widths = [16]\nsizes = [3000]"}, "give grid.sizes or grid.widths, not both"),
    ({"seed = 1": "seeds = [1, 2]\nseed = 1"}, "give seed (one run per grid point) or seeds (replicates), not both"),
    ({"seed = 1": "seeds = [1, 2, 1]"}, "seeds = [1, 2, 1] lists a seed twice"),
    ({"seed = 1": "seeds = []"}, "seeds = [] must be a non-empty list of integers"),
    ({"seed = 1": "seeds = [1.5]"}, "seeds = [1.5] must be a non-empty list of integers"),
    ({"seed = 1": "seeds = [0, -1]"}, "seeds = [0, -1] holds a negative seed"),
    ({"seed = 1": "seed = -2"}, "seed = -2 is negative"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [0]"}, "grid.unique_tokens[0] = 0 must be positive"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [1000, -100]"}, "grid.unique_tokens[1] = -100 must be positive"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [inf]"}, "grid.unique_tokens[0] = inf must be a finite number"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [nan]"}, "grid.unique_tokens[0] = nan must be positive"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = 1000"}, "grid.unique_tokens = 1000 must be a non-empty list"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [1000, 1000]"}, "grid.unique_tokens lists 1000 twice"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [3000, 1e9]"},
     "grid.unique_tokens[1] = 1e+09 is more than the 4,177 tokens of the train split of the token store"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [1, 2000]", "seq_len = 24": "seq_len = 400"},
     "grid.unique_tokens[0] = 1 selects 1 train patients of 59 tokens, fewer than one window of seq_len + 1 = 401"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [1001, 1000]"},
     "grid.unique_tokens values 1000 and 1001 select the same 12 train patients (1,052 tokens): duplicate runs"),
    ({"min_steps = 4": "min_steps = 4\nunique_tokens = [1000]", "lr = 3e-3": "lr = 3e-3\nunique_tokens = 2000"},
     "give grid.unique_tokens (an axis) or train.unique_tokens (every run), not both"),
    ({"lr = 3e-3": "lr = 3e-3\nunique_tokens = 1e9"},
     "train.unique_tokens = 1e+09 is more than the 4,177 tokens of the train split"),
    ({"lr = 3e-3": "lr = 3e-3\nunique_tokens = 0"}, "train.unique_tokens = 0.0 must be a positive, finite number"),
    ({"[train]": "[model]\naspect_ratio = 0\n[train]"}, "model.aspect_ratio = 0: expected d_model / n_layers"),
    ({"min_steps = 4": "min_steps = 4\nlrs = [1e-3, 1e-3]"}, "grid.lrs lists 0.001 twice"),
    ({"min_steps = 4": "min_steps = 4\nlrs = [1e-3, -1]"}, "grid.lrs[1] = -1 must be positive"),
    ({"min_steps = 4": "min_steps = 4\nbatch_sizes = [4, 2.5]"}, "grid.batch_sizes[1] = 2.5 is not a whole number"),
    ({"min_steps = 4": "min_steps = 4\nlrs = [1e-3]"}, "give grid.lrs (an axis) or train.lr (every run), not both"),
    ({"[train]": "[model]\naspect_ratio = nan\n[train]"}, "model.aspect_ratio = nan: expected d_model / n_layers"),
    ({"[train]": "[model]\nmin_layers = 0\n[train]"}, "model.min_layers = 0: expected a whole number from 1"),
    ({"[train]": "[model]\nmin_layers = 2.5\n[train]"}, "model.min_layers = 2.5: expected a whole number from 1"),
])
def test_grid_errors_name_the_field(tmp_path, store, change, message):
    assert message in grid_error(tmp_path, store, **change)


def test_budget_too_small_for_the_smallest_shape(tmp_path, store):
    message = grid_error(tmp_path, store, budgets=(1e6, 4e8))
    assert "grid.budgets[0] = 1e+06 is too small for the smallest shape" in message
    assert "N = 5,392" in message and "fewer than grid.min_steps = 4" in message


def test_larger_sizes_that_a_budget_cannot_afford_are_dropped_with_a_warning(tmp_path, store):
    expansion = expand_grid(load_grid(write_grid(tmp_path / "g.toml", store, budgets=(2.5e7, 4e8), widths=(16, 64))))
    assert [(r.budget, r.shape.d_model) for r in expansion.runs] == [(2.5e7, 16), (4e8, 16), (4e8, 64)]
    assert any("dropped" in w for w in expansion.warnings)


def test_duplicate_runs_are_refused(tmp_path, store):
    # Two target sizes that the ladder maps to one shape: the same run twice.
    message = grid_error(tmp_path, store, **{"widths = [16, 24]": "sizes = [8856, 8900]"})
    assert "duplicate runs" in message and "d_model=24" in message


def test_missing_store_needs_a_vocab_size(tmp_path):
    grid = write_grid(tmp_path / "g.toml", tmp_path / "nowhere")
    with pytest.raises(InputError, match="is not a token store"):
        expand_grid(load_grid(grid))
    grid.write_text(grid.read_text() + "[model]\nvocab_size = 501\n")
    assert expand_grid(load_grid(grid)).vocab_size == 501


def test_plan_json_and_errors_on_the_command_line(tmp_path, store, run_cli):
    grid = write_grid(tmp_path / "g.toml", store)
    code, out, err = run_cli("sweep", "plan", grid, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["n_runs"] == 4 and len(plan["runs"]) == 4
    assert plan["total_flops"] == pytest.approx(sum(r["flops"] for r in plan["runs"]))
    for key in ("run_id", "params", "params_nonembed", "tokens", "flops", "tokens_per_param", "steps",
                "est_seconds", "d_model", "n_layers"):
        assert key in plan["runs"][0]
    assert plan["est_wall_seconds"] == pytest.approx(plan["est_run_seconds"] / plan["parallel"])

    code, out, err = run_cli("sweep", "plan", grid)
    assert code == 0 and plan["runs"][0]["run_id"] in out

    bad = write_grid(tmp_path / "bad.toml", store, **{"seed = 1": "seed = 1\nsead = 2"})
    code, out, err = run_cli("sweep", "plan", bad, "--json")
    assert code == 2 and out == "" and "unknown key 'sead'" in err and "Traceback" not in err
    code, _, err = run_cli("sweep", "plan", tmp_path / "none.toml")
    assert code == 2 and "no such grid file" in err


def test_shipped_grids_validate_and_comet_is_costed_in_gpu_hours(tmp_path, store, run_cli):
    for name in ("smoke", "quickstart", "quickstart_whole_history", "quickstart_context256", "quickstart_short_context",
                 "extrapolation"):
        expansion = expand_grid(load_grid(REPO / "sweeps" / "grids" / f"{name}.toml", data=store))
        assert len(expansion.runs) >= 6
    # the 256-token variant is the quickstart in longer windows: the same shapes, tokens and steps per run
    # and the short-context variant reaches 256 tokens after the quickstart's 8 windows of 64
    quickstart, context256, short_context = (
        [(r.budget, r.params, r.tokens, r.steps, r.shape.max_seq_len) for r in
         expand_grid(load_grid(REPO / "sweeps" / "grids" / f"{name}.toml", data=store)).runs]
        for name in ("quickstart", "quickstart_context256", "quickstart_short_context"))
    assert [r[:4] for r in quickstart] == [r[:4] for r in context256] == [r[:4] for r in short_context]
    assert {r[4] for r in quickstart} == {64} and {r[4] for r in context256} == {r[4] for r in short_context} == {256}
    short = load_grid(REPO / "sweeps" / "grids" / "quickstart_short_context.toml", data=store).train
    assert short["short_seq_len"] * 8 == short["seq_len"] * short["batch_size"]  # the quickstart's 8 windows
    code, out, err = run_cli("sweep", "plan", REPO / "sweeps" / "grids" / "comet.toml", "--hardware", "h100", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["vocab_size"] >= 7000 and plan["seq_len"] == 8192
    assert max(plan["budgets"]) >= 1e20 and plan["n_runs"] >= 30
    assert plan["gpu_hours"] > 1000 and plan["hardware"]["name"] == "h100"
    per_budget = {}
    for run in plan["runs"]:
        per_budget.setdefault(run["budget"], []).append(run["params"])
    assert all(len(sizes) >= 5 for sizes in per_budget.values())
    # The sampled sizes span CoMET's compute-optimal 62M and 119M models and reach towards its 1B one.
    sizes = [r["params"] for r in plan["runs"]]
    assert min(sizes) < 62e6 and max(sizes) > 5e8
    h100 = hardware_profile("h100")
    run = expand_grid(load_grid(REPO / "sweeps" / "grids" / "comet.toml")).runs[-1]
    assert plan["runs"][-1]["est_seconds"] == pytest.approx(
        h100.run_overhead_s + run.steps * h100.step_overhead_s
        + (run.flops_detailed + 0.0) / (h100.flops_per_s * 8), rel=0.05)


def test_plan_uses_a_measured_throughput(tmp_path, store):
    expansion = expand_grid(load_grid(write_grid(tmp_path / "g.toml", store)))
    slow = make_plan(expansion, hardware_profile("cpu", flops_per_s=1e6))
    fast = make_plan(expansion, hardware_profile("cpu", flops_per_s=1e12))
    assert slow["est_run_seconds"] > fast["est_run_seconds"] + 1000
    with pytest.raises(InputError, match="^hardware = 'tpu' is not one of") as error:
        hardware_profile("tpu")
    assert error.value.cli_message().startswith("--hardware 'tpu' is not one of")  # what the command line says


def test_sizes_per_budget_picks_the_widths_nearest_the_guessed_optimum(tmp_path, store):
    grid = load_grid(write_grid(tmp_path / "g.toml", store, budgets=(1e9, 1e11), widths=(8, 16, 24, 32, 48, 64, 96),
                                **{"min_steps = 4": "min_steps = 4\nsizes_per_budget = 3\ntokens_per_param = 20"}))
    runs = expand_grid(grid).runs
    for budget in (1e9, 1e11):
        optimum = math.sqrt(budget / (6 * 20))
        chosen = [r.params for r in runs if r.budget == budget]
        others = [count_params(family_shape(w, 39, 24))["total"] for w in (8, 16, 24, 32, 48, 64, 96)]
        others = [n for n in others if n not in chosen]
        assert len(chosen) == 3 and chosen == sorted(chosen)
        assert max(abs(math.log(n / optimum)) for n in chosen) <= min(abs(math.log(n / optimum)) for n in others)
    assert [r.params for r in runs if r.budget == 1e9] != [r.params for r in runs if r.budget == 1e11]


def test_run_ids_of_grids_without_unique_tokens_are_those_of_earlier_versions(tmp_path, store):
    """Literal ids (computed before the unique_tokens axis existed): finished sweeps keep their runs."""
    ids = [r.run_id for r in expand_grid(load_grid(write_grid(tmp_path / "g.toml", store))).runs]
    assert ids == ["n5.39k-d6.14k-592da7129c", "n8.86k-d3.74k-25ac5847c6", "n5.39k-d12.4k-b1bbdd1cff",
                   "n8.86k-d7.49k-9c8f35662a"]


@pytest.mark.parametrize("kind", ["isoflop", "params_x_tokens", "wsd_branches"])
def test_the_unique_tokens_axis_crosses_every_run_with_nested_subsets(tmp_path, store, kind):
    from scaling.data.token_store import TokenStore

    kinds = {"isoflop": {},
             "params_x_tokens": {'kind = "isoflop"': 'kind = "params_x_tokens"\ntokens = [960, 1920]',
                                 "budgets = [2e+08, 4e+08]\n": ""},
             "wsd_branches": {'kind = "isoflop"': 'kind = "wsd_branches"\ntokens = [1920, 3840]',
                              "budgets = [2e+08, 4e+08]\n": ""}}[kind]
    plain = expand_grid(load_grid(write_grid(tmp_path / "a.toml", store, **kinds)))
    crossed = expand_grid(load_grid(write_grid(tmp_path / "b.toml", store, **kinds,
                                               **{"min_steps = 4": "min_steps = 4\nunique_tokens = [3000, 1000]"})))
    split = TokenStore.open(store).split("train")
    assert all(r.unique_tokens == split.n_tokens == 4177 for r in plain.runs)
    assert all("unique_tokens" not in r.config["train"] for r in plain.runs)
    assert len(crossed.runs) == 2 * len(plain.runs)
    ids = [r.run_id for r in crossed.runs]
    assert len(set(ids)) == len(ids) and not set(ids) & {r.run_id for r in plain.runs}
    for unique, per_u in ((1000, crossed.runs[:len(plain.runs)]), (3000, crossed.runs[len(plain.runs):])):
        subset_tokens = int(split.lengths[split.nested_subset(unique)].sum())
        for run, same in zip(per_u, plain.runs, strict=True):
            assert run.config["train"]["unique_tokens"] == unique and f"-u{unique // 1000}k-" in run.run_id
            assert run.unique_tokens == subset_tokens and run.epochs == pytest.approx(run.tokens / subset_tokens)
            assert (run.role, run.budget, run.shape, run.steps, run.tokens) == \
                (same.role, same.budget, same.shape, same.steps, same.tokens)
            if run.parent is not None:  # wsd: each branch continues a stable run of its own subset
                assert run.parent in {r.run_id for r in per_u}
    assert not any("flattens the law" in w for w in crossed.warnings)  # repeating on purpose


def test_plan_rows_show_unique_tokens_and_epochs(tmp_path, store, run_cli):
    grid = write_grid(tmp_path / "g.toml", store, **{"min_steps = 4": "min_steps = 4\nunique_tokens = [1000]"})
    code, out, err = run_cli("sweep", "plan", grid, "--json")
    assert code == 0, err
    plan = json.loads(out)
    for row in plan["runs"]:
        assert row["unique_tokens"] == 1052 and row["epochs"] == pytest.approx(row["tokens"] / 1052)
        assert row["config"]["train"]["unique_tokens"] == 1000
    code, out, err = run_cli("sweep", "plan", grid)
    assert code == 0 and "epochs" in out and "1,052" in out
    code, out, err = run_cli("sweep", "plan", write_grid(tmp_path / "bad.toml", store,
                                                         **{"min_steps = 4": "min_steps = 4\nunique_tokens = [1e9]"}))
    assert code == 2 and out == "" and "Traceback" not in err
    assert "grid.unique_tokens[0] = 1e+09 is more than the 4,177 tokens" in err and "bad.toml" in err


def test_plan_without_a_store_shows_the_unique_tokens_asked_for(tmp_path):
    grid = write_grid(tmp_path / "g.toml", tmp_path / "nowhere",
                      extra="[model]\nvocab_size = 501\n", **{"min_steps = 4": "min_steps = 4\nunique_tokens = [5e3]"})
    plan = make_plan(expand_grid(load_grid(grid)), hardware_profile("cpu"))
    assert {r["unique_tokens"] for r in plan["runs"]} == {5000}
    assert all(r["epochs"] == pytest.approx(r["tokens"] / 5000) for r in plan["runs"])
    plain = make_plan(expand_grid(load_grid(write_grid(tmp_path / "p.toml", tmp_path / "nowhere",
                                                       extra="[model]\nvocab_size = 501\n"))), hardware_profile("cpu"))
    assert {(r["unique_tokens"], r["epochs"]) for r in plain["runs"]} == {(None, None)}


def test_a_grids_family_sets_every_shape_and_stays_out_of_the_run_configs(tmp_path, store):
    plain = expand_grid(load_grid(write_grid(tmp_path / "a.toml", store, widths=(16, 24, 32))))
    family = expand_grid(load_grid(write_grid(tmp_path / "b.toml", store, widths=(16, 24, 32),
                                              **{"[train]": "[model]\naspect_ratio = 8\nmin_layers = 2\n[train]"})))
    # by hand: n_layers = max(2, round(d_model / 8)); the default family has one layer below d_model 96
    assert [r.shape.n_layers for r in plain.runs] == [1] * len(plain.runs)
    assert [(r.shape.d_model, r.shape.n_layers) for r in family.runs] == \
        [(d, max(2, round(d / 8))) for d in [r.shape.d_model for r in family.runs]]
    for run in family.runs:
        assert "aspect_ratio" not in run.config["model"] and "min_layers" not in run.config["model"]
        assert run.config["model"]["n_layers"] == run.shape.n_layers
        assert run.params == count_params(family_shape(run.shape.d_model, 39, 24, n_layers=run.shape.n_layers))["total"]


def test_learning_rate_and_batch_size_axes_cross_every_run(tmp_path, store):
    base = expand_grid(load_grid(write_grid(tmp_path / "a.toml", store, widths=(16, 24, 32))))
    text = {"min_steps = 4": "min_steps = 4\nlrs = [1e-3, 3e-3]\nbatch_sizes = [2, 4]", "lr = 3e-3\n": "",
            "batch_size = 4\n": ""}
    crossed = expand_grid(load_grid(write_grid(tmp_path / "b.toml", store, widths=(16, 24, 32), **text)))
    assert len(crossed.runs) == 4 * len(base.runs)
    pairs = {(r.config["train"]["lr"], r.config["train"]["batch_size"]) for r in crossed.runs}
    assert pairs == {(1e-3, 2), (1e-3, 4), (3e-3, 2), (3e-3, 4)}
    for run in crossed.runs:
        # D = C / 6N in whole steps of this run's own batch: half the batch, twice the steps
        tokens_per_step = run.config["train"]["batch_size"] * 24
        assert run.tokens == run.steps * tokens_per_step
        assert run.steps == round(run.budget / (6 * run.params) / tokens_per_step)
    assert len({r.run_id for r in crossed.runs}) == len(crossed.runs)


def test_plan_prices_budgets_in_detail_when_asked(tmp_path, store, run_cli):
    grid = write_grid(tmp_path / "g.toml", store, budgets=(4e8, 8e8))
    code, out, err = run_cli("sweep", "plan", grid, "--flops", "detailed", "--json")
    assert code == 0, err
    for run in json.loads(out)["runs"]:
        shape = family_shape(run["d_model"], 39, 24)
        per_token = flops_per_token(shape, 24, "detailed")
        assert run["steps"] == round(run["budget"] / per_token / 96)  # D = C / detailed FLOPs per token
        assert run["flops"] == pytest.approx(per_token * run["tokens"])
    code, _, err = run_cli("sweep", "plan", grid, "--flops", "7N")
    assert code == 2 and "--flops: '7N' is not a way to count compute" in err


def test_a_run_no_node_can_hold_is_refused_in_one_line():
    from sweeps.cluster import check_run_fits

    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 8.0}}, {"Alive": False, "Resources": {"CPU": 64.0}},
             {"Alive": True, "Resources": {"CPU": 2.0}}]
    check_run_fits(16, 8, nodes)  # the first node holds it
    check_run_fits(1, 0, nodes)
    with pytest.raises(InputError) as e:
        check_run_fits(1, 1000, nodes, "head:6379")
    assert str(e.value) == ("resources.cpus_per_run = 1, resources.gpus_per_run = 1000: no node of the Ray cluster "
                            "at head:6379 has that much (the largest has 16 CPUs and 8 GPUs); every run would wait "
                            "forever")
    with pytest.raises(InputError, match="the local Ray cluster"):
        check_run_fits(32, 0, nodes)  # the dead 64-CPU node does not count


def test_lr_law_gives_each_run_the_side_sweeps_lr_at_its_budget(tmp_path, store):
    """train.lr = "law": every run's lr is lr_opt(C) = 0.3 C^-0.1 at its budget, the law a side sweep drawn
    from that closed form gives back; a grid without `hyperparameters`, or with batch_size = "law", is refused."""
    rows = []
    for c in (1e6, 1e7, 1e8):
        for lr in np.geomspace(1e-3, 1.0, 7):
            rows.append({"params": 1e3, "tokens": c / 6e3, "budget": c, "lr": lr, "batch_size": 4,
                         "loss": 2 + 0.05 * np.log(lr / (0.3 * c ** -0.1)) ** 2})
    side = tmp_path / "side.csv"
    pd.DataFrame(rows).to_csv(side, index=False)
    grid = write_grid(tmp_path / "law.toml", store, **{"lr = 3e-3": 'lr = "law"',
                                                       'name = "tiny"': f'name = "tiny"\nhyperparameters = "{side}"'})
    expansion = expand_grid(load_grid(grid))
    for run in expansion.runs:
        assert run.config["train"]["lr"] == pytest.approx(0.3 * run.budget ** -0.1, rel=1e-6)
    no_table = write_grid(tmp_path / "no_table.toml", store, **{"lr = 3e-3": 'lr = "law"'})
    with pytest.raises(InputError, match="needs hyperparameters = PATH"):
        load_grid(no_table)
    batch = write_grid(tmp_path / "batch.toml", store, **{"batch_size = 4": 'batch_size = "law"'})
    with pytest.raises(InputError, match='batch_size = "law"'):
        load_grid(batch)


def test_runs_start_longest_first_and_a_seeds_repeat_after_every_first_seed(tmp_path, store):
    from sweeps.engine import start_order

    grid = load_grid(write_grid(tmp_path / "g.toml", store, budgets=(2e8, 4e8), widths=(24, 16),
                                **{"seed = 1": "seeds = [3, 7]"}))
    runs = expand_grid(grid).runs
    assert len(runs) == 8 and {r.config["seed"] for r in runs} == {3, 7}
    est = {r.run_id: float(r.steps * r.params) for r in runs}  # any cost; longer first
    order = start_order(runs, est)
    seeds = [r.config["seed"] for r in order]
    assert seeds == [3, 3, 3, 3, 7, 7, 7, 7]  # every first seed before any repeat of its config
    for half in (order[:4], order[4:]):
        assert [est[r.run_id] for r in half] == sorted((est[r.run_id] for r in half), reverse=True)
    # each repeat is the same config as a first seed, but for the seed
    first = {json.dumps({**r.config, "seed": None}, sort_keys=True) for r in order[:4]}
    assert {json.dumps({**r.config, "seed": None}, sort_keys=True) for r in order[4:]} == first


def test_a_grid_that_extends_another_changes_only_the_keys_it_names(tmp_path, store, run_cli):
    """A variant names only what differs: its keys replace the base's, table by table, through a chain of
    two; relative paths resolve against the file that holds them; a missing base or a circle is one line."""
    write_grid(tmp_path / "base.toml", store)
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "long.toml").write_text(
        'extends = "../base.toml"\nname = "long"\n[train]\nseq_len = 48\nbatch_size = 2\n')
    (tmp_path / "variants" / "long_more.toml").write_text('extends = "long.toml"\n[grid]\nbudgets = [4e8]\n')
    base = load_grid(tmp_path / "base.toml")
    long, long_more = (load_grid(tmp_path / "variants" / f"{name}.toml") for name in ("long", "long_more"))
    assert long.name == "long" and long_more.name == "long"
    assert long.data == base.data == str(store)
    assert long.train == {**base.train, "seq_len": 48, "batch_size": 2}
    assert long.axes == base.axes and long.resources == base.resources and long.seed == base.seed == 1
    assert long_more.train == long.train and long_more.axes.budgets == (4e8,)
    assert long_more.axes.widths == base.axes.widths
    # 2 x 48 tokens per step, as 4 x 24 in the base: the same runs in longer windows
    assert [(r.budget, r.params, r.steps) for r in expand_grid(long).runs] == \
        [(r.budget, r.params, r.steps) for r in expand_grid(base).runs]

    (tmp_path / "orphan.toml").write_text('extends = "nowhere.toml"\nname = "orphan"\n')
    code, out, err = run_cli("sweep", "plan", tmp_path / "orphan.toml")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "orphan.toml: extends = 'nowhere.toml': no grid file at" in err
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(InputError, match="grids cannot extend in a circle"):
        load_grid(tmp_path / "a.toml")
    # a bad key the variant inherits: the error names the files of the chain it may come from
    (tmp_path / "bad_base.toml").write_text((tmp_path / "base.toml").read_text().replace("[train]",
                                                                                         "[train]\nwarmup = 3"))
    (tmp_path / "variants" / "bad.toml").write_text('extends = "../bad_base.toml"\nname = "bad"\n')
    with pytest.raises(InputError, match=r"bad\.toml \(extends .*bad_base\.toml\): .*warmup"):
        load_grid(tmp_path / "variants" / "bad.toml")

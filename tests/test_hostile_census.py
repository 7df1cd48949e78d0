"""A census of hostile inputs, by category (CLI flags, run TOML, grid TOML, results tables, compute and
hyperparameter options): every one must exit 2 with one line on stderr naming what was wrong (a usage error:
click's usage line, its pointer to --help and one error line), no traceback, nothing on stdout, and no output
written. `len(CASES)` is the count reported in the issue notes."""

from __future__ import annotations

import pytest
from sweep_builders import TINY_GRID, tiny_store

from analysis.example_table import EXAMPLE_BUDGETS, EXAMPLE_LAW, synthetic_isoflop_table

GOOD_RUN = "\n".join([
    'data = "{store}"', "seed = 1", "[model]", "d_model = 16", "n_layers = 1", "[train]", "steps = 4",
    "batch_size = 2", "seq_len = 16", "eval_every = 4", "eval_tokens = 64", "checkpoint_every = 4",
]) + "\n"

ACES_CONFIG = """predicates:
  death:
    code: MEDS_DEATH
trigger: _ANY_EVENT
windows:
  input:
    start: NULL
    end: trigger
    index_timestamp: end
  target:
    start: input.end
    end: start + 30d
    label: death
"""
EVALUATION_JSON = b'{"runs": [{"run": {"run_dir": "elsewhere"}, "tasks": []}]}'


def grid_axis(line: str, drop: str = "") -> str:
    """The tiny grid with `line` added to [grid] (and `drop` removed from it)."""
    grid = TINY_GRID.replace("min_steps = 4", f"min_steps = 4\n{line}")
    return grid.replace(drop, "") if drop else grid


# (category, name, files {name: text or "<results>"}, argv with {dir} for the case's directory, expected text)
CASES = [
    # command-line flags and usage
    ("cli", "unknown command", {}, ["trian"], "No such command"),
    ("cli", "unknown option", {}, ["fit", "{dir}/results.csv", "--bogus"], "No such option"),
    ("cli", "missing argument", {}, ["fit"], "Missing argument"),
    ("cli", "compute not a number", {}, ["recommend", "{dir}/results.csv", "--compute", "abc"],
     "Invalid value for '--compute'"),
    ("cli", "compute zero", {}, ["fit", "{dir}/results.csv", "--compute", "0"], "--compute: 0.0 is not a positive"),
    ("cli", "compute negative", {}, ["recommend", "{dir}/results.csv", "--compute", "-1"], "--compute: -1.0"),
    ("cli", "compute nan", {}, ["fit", "{dir}/results.csv", "--compute", "nan"], "--compute: nan"),
    ("cli", "compute inf", {}, ["recommend", "{dir}/results.csv", "--compute", "inf"], "--compute: inf"),
    ("cli", "negative bootstrap", {}, ["fit", "{dir}/results.csv", "--bootstrap", "-3"], "--bootstrap: -3"),
    ("cli", "negative holdout", {}, ["fit", "{dir}/results.csv", "--holdout", "-1"], "--holdout: -1"),
    ("cli", "unknown approach", {}, ["fit", "{dir}/results.csv", "--approach", "5"], "--approach: '5'"),
    ("cli", "unknown flops", {}, ["fit", "{dir}/results.csv", "--flops", "8N"], "--flops: '8N'"),
    ("cli", "unknown flops in plan", {}, ["sweep", "plan", "{dir}/grid.toml", "--flops", "x"], "--flops: 'x'"),
    ("cli", "unique tokens zero", {}, ["recommend", "{dir}/results.csv", "--compute", "1e18", "--unique-tokens",
                                       "0"], "--unique-tokens: 0.0"),
    ("cli", "fit cap without compute", {}, ["fit", "{dir}/results.csv", "--unique-tokens", "1e8"],
     "--unique-tokens: the data-constrained optimum needs --compute"),
    ("cli", "seq len zero", {}, ["recommend", "{dir}/results.csv", "--compute", "1e18", "--seq-len", "0"],
     "--seq-len: 0"),
    ("cli", "lr negative", {}, ["recommend", "{dir}/results.csv", "--compute", "1e18", "--lr", "-1"], "--lr: -1.0"),
    ("cli", "plot out is the input", {}, ["plot", "{dir}/results.csv", "--out", "{dir}"], "{dir}"),
    ("cli", "missing results file", {}, ["fit", "{dir}/none.csv"], "none.csv"),
    # results tables
    ("results", "no loss column", {"bad.csv": "params,tokens\n1,2\n"}, ["fit", "{dir}/bad.csv"],
     "missing column 'loss'"),
    ("results", "negative loss", {"bad.csv": "params,tokens,loss\n1e6,1e8,-3\n"}, ["fit", "{dir}/bad.csv"],
     "column 'loss' has 1 non-positive"),
    ("results", "nan params", {"bad.csv": "params,tokens,loss\nnan,1e8,3\n"}, ["fit", "{dir}/bad.csv"],
     "column 'params'"),
    ("results", "inf tokens", {"bad.csv": "params,tokens,loss\n1e6,inf,3\n"}, ["fit", "{dir}/bad.csv"],
     "column 'tokens'"),
    ("results", "text in a number column", {"bad.csv": "params,tokens,loss\nbig,1e8,3\n"}, ["fit", "{dir}/bad.csv"],
     "params"),
    ("results", "two runs for approach 3", {"bad.csv": "params,tokens,loss\n1e5,1e6,2\n2e5,2e6,1.9\n"},
     ["fit", "{dir}/bad.csv", "--approach", "3"], "no law could be fitted"),
    ("results", "all-equal losses", {"bad.csv": "params,tokens,loss\n" + "".join(
        f"{n},{d},2.0\n" for n in (1e5, 2e5, 4e5) for d in (1e6, 3e6, 1e7))},
     ["fit", "{dir}/bad.csv", "--approach", "3"], "degenerate fit"),
    ("results", "recommend from two runs", {"bad.csv": "params,tokens,loss\n1e5,1e6,2\n2e5,2e6,1.9\n"},
     ["recommend", "{dir}/bad.csv", "--compute", "1e15"], "no approach could be fitted"),
    ("results", "detailed flops without the column", {}, ["fit", "{dir}/results.csv", "--flops", "detailed"],
     "needs a flops_detailed value"),
    ("results", "duplicate run ids", {"bad.csv": "run_id,params,tokens,loss\na,1e6,1e8,3\na,2e6,1e8,2.9\n"},
     ["fit", "{dir}/bad.csv"], "duplicate value 'a'"),
    ("results", "epochs disagree", {"bad.csv": "params,tokens,loss,unique_tokens,epochs\n1e6,1e8,3,1e7,2\n"},
     ["fit", "{dir}/bad.csv"], "column 'epochs' disagrees"),
    ("results", "non-UTF-8 csv", {"bad.csv": b"params,tokens,loss\n\xff\xfe,1,2\n"}, ["fit", "{dir}/bad.csv"],
     "bad.csv"),
    # run TOML
    ("run", "unknown tracker", {"run.toml": GOOD_RUN}, ["train", "{dir}/run.toml", "--out", "{dir}/out", "--track",
                                                        "wandb,tensorbord"], "unknown tracker 'tensorbord'"),
    ("run", "unknown key", {"run.toml": GOOD_RUN + "lrr = 1\n"}, ["train", "{dir}/run.toml", "--out", "{dir}/out"],
     "unknown key 'train.lrr'"),
    ("run", "lr inf", {"run.toml": GOOD_RUN + "lr = inf\n"}, ["train", "{dir}/run.toml", "--out", "{dir}/out"],
     "train.lr = inf"),
    ("run", "weight decay nan", {"run.toml": GOOD_RUN + "weight_decay = nan\n"},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "train.weight_decay = nan"),
    ("run", "negative seed", {"run.toml": GOOD_RUN.replace("seed = 1", "seed = -1")},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "seed = -1 is negative"),
    ("run", "unknown parametrization", {"run.toml": GOOD_RUN.replace("[train]", 'parametrization = "ntk"\n[train]')},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "model.parametrization = 'ntk'"),
    ("run", "muP without a base width", {"run.toml": GOOD_RUN.replace("[train]", 'parametrization = "mup"\n[train]')},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "muP needs the base width"),
    ("run", "muP with tied embeddings", {"run.toml": GOOD_RUN.replace(
        "[train]", 'parametrization = "mup"\nmup_base_d_model = 16\ntied_embeddings = true\n[train]')},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "muP needs a separate output layer"),
    ("run", "base width without muP", {"run.toml": GOOD_RUN.replace("[train]", "mup_base_d_model = 16\n[train]")},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], 'is for parametrization = "mup" only'),
    ("run", "seq_len beyond the store", {"run.toml": GOOD_RUN.replace("seq_len = 16", "seq_len = 100000")},
     ["train", "{dir}/run.toml", "--out", "{dir}/out"], "train.seq_len = 100000"),
    ("run", "non-UTF-8 TOML", {"run.toml": b"data = \"\xff\"\n"}, ["train", "{dir}/run.toml", "--out", "{dir}/out"],
     "run.toml"),
    # grid TOML
    ("grid", "unknown grid key", {"grid.toml": TINY_GRID.replace("min_steps = 4", "min_steps = 4\nbudgts = [1]")},
     ["sweep", "plan", "{dir}/grid.toml"], "budgts"),
    ("grid", "inf budget", {"grid.toml": TINY_GRID.replace("budgets = [{budgets}]", "budgets = [inf]")},
     ["sweep", "plan", "{dir}/grid.toml"], "grid.budgets"),
    ("grid", "dot-dot name", {"grid.toml": TINY_GRID.replace('name = "tiny"', 'name = ".."')},
     ["sweep", "plan", "{dir}/grid.toml"], "name = '..'"),
    ("grid", "aspect ratio zero", {"grid.toml": TINY_GRID.replace("[train]", "[model]\naspect_ratio = 0\n[train]")},
     ["sweep", "plan", "{dir}/grid.toml"], "model.aspect_ratio = 0"),
    ("grid", "min layers fractional", {"grid.toml": TINY_GRID.replace("[train]", "[model]\nmin_layers = 1.5\n[train]")},
     ["sweep", "plan", "{dir}/grid.toml"], "model.min_layers = 1.5"),
    ("grid", "repeated learning rate", {"grid.toml": grid_axis("lrs = [0.01, 0.01]", "lr = 3e-3\n")},
     ["sweep", "plan", "{dir}/grid.toml"], "grid.lrs lists 0.01 twice"),
    ("grid", "negative learning rate", {"grid.toml": grid_axis("lrs = [-1]", "lr = 3e-3\n")},
     ["sweep", "plan", "{dir}/grid.toml"], "grid.lrs[0] = -1"),
    ("grid", "lr axis and train lr", {"grid.toml": grid_axis("lrs = [0.01]")},
     ["sweep", "plan", "{dir}/grid.toml"], "give grid.lrs (an axis) or train.lr"),
    ("grid", "fractional batch size", {"grid.toml": grid_axis("batch_sizes = [2.5]", "batch_size = 4\n")},
     ["sweep", "plan", "{dir}/grid.toml"], "grid.batch_sizes[0] = 2.5"),
    ("grid", "zero sizes per budget", {"grid.toml": grid_axis("sizes_per_budget = 0")},
     ["sweep", "plan", "{dir}/grid.toml"], "grid.sizes_per_budget = 0"),
    # the final run's hyperparameter laws
    ("final", "side sweep without a learning-rate axis", {"hp.csv": "params,tokens,loss,lr\n1e4,1e6,2,0.01\n"},
     ["final", "{dir}/results.csv", "--compute", "1e10", "--data", "{store}", "--out", "{dir}/out",
      "--hyperparameters", "{dir}/hp.csv", "--bootstrap", "0"], "hyperparameters: needs 2+ budgets"),
    # the final run under a data cap
    ("final", "data cap larger than the store", {},
     ["final", "{dir}/results.csv", "--compute", "1e10", "--data", "{store}", "--out", "{dir}/out",
      "--unique-tokens", "1e12", "--bootstrap", "0"], "unique_tokens = 1e+12 is more than the"),
    ("final", "data cap zero", {},
     ["final", "{dir}/results.csv", "--compute", "1e10", "--data", "{store}", "--out", "{dir}/out",
      "--unique-tokens", "0"], "--unique-tokens: 0.0 is not a positive"),
    ("final", "data cap without runs that repeat data", {},
     ["final", "{dir}/results.csv", "--compute", "1e10", "--data", "{store}", "--out", "{dir}/out",
      "--unique-tokens", "200", "--bootstrap", "0"], "the data-constrained law could not be fitted"),
    # downstream evaluation: ACES configs, label files, the downstream forecast
    ("evaluate", "ACES config without its label file", {"task.yaml": ACES_CONFIG},
     ["evaluate", "{dir}", "--tasks", "{dir}/task.yaml"], "pass --labels"),
    ("evaluate", "ACES window that ends at an event",
     {"task.yaml": ACES_CONFIG.replace("start + 30d", "start -> death")},
     ["evaluate", "{dir}", "--tasks", "{dir}/task.yaml", "--labels", "{dir}/labels.parquet"],
     "windows.target.end = 'start -> death': a window bounded by an event"),
    ("evaluate", "ACES config not YAML", {"task.yaml": "predicates: [unclosed\n"},
     ["evaluate", "{dir}", "--tasks", "{dir}/task.yaml", "--labels", "{dir}/labels.parquet"], "not YAML"),
    ("evaluate", "label file for a TOML task file", {},
     ["evaluate", "{dir}", "--labels", "{dir}/labels.parquet"], "--labels {dir}/labels.parquet: only for an ACES"),
    ("evaluate", "downstream: evaluation not JSON", {"evaluation.json": b"{not json"},
     ["downstream", "{dir}/evaluation.json", "--run", "{dir}"], "not JSON"),
    ("evaluate", "downstream: run without a forecast", {"evaluation.json": EVALUATION_JSON},
     ["downstream", "{dir}/evaluation.json", "--run", "{dir}"], "no forecast.json"),
    ("evaluate", "downstream: too few refits", {"evaluation.json": EVALUATION_JSON},
     ["downstream", "{dir}/evaluation.json", "--run", "{dir}", "--bootstrap", "3"], "--bootstrap 3"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tiny_store(tmp_path_factory.mktemp("census") / "tok")


def test_the_census_is_not_empty():
    assert len(CASES) >= 50
    assert {c[0] for c in CASES} == {"cli", "results", "run", "grid", "final", "evaluate"}


@pytest.mark.parametrize("category, name, files, argv, expected", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_hostile_input_exits_2_in_one_line_and_writes_nothing(tmp_path, store, run_cli, category, name, files, argv,
                                                               expected):
    runs, _ = synthetic_isoflop_table(EXAMPLE_LAW, EXAMPLE_BUDGETS, noise=0.0)
    runs.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "grid.toml").write_text(TINY_GRID.format(data=store, budgets="2e+08, 4e+08", widths="16, 24"))
    for file_name, content in files.items():
        content = content.format(store=store, data=store, budgets="2e+08, 4e+08", widths="16, 24") \
            if isinstance(content, str) and "{" in content else content
        path = tmp_path / file_name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_cli(*[a.format(dir=tmp_path, store=store) for a in argv])
    assert code == 2, (name, err)
    assert out == "", name
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, (name, err)
    if lines[0].startswith("Usage:"):  # click's usage error: the usage, a pointer to --help, one error line
        lines = [line for line in lines if line.startswith("Error:")]
    assert len(lines) == 1, (name, err)
    assert expected.format(dir=tmp_path) in " ".join(err.split()), (name, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, name  # nothing written


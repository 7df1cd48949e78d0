"""The demo's report (runs/demo/report.md): the sweep, the fitted laws with their intervals, the
recommendation, the final run's predicted and actual loss, and downstream evaluation, in one page."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from scaling.evaluate.downstream import two_step_auroc_errors
from scaling.evaluate.metrics import PRIMARY_METRIC


def _level(fit: dict) -> str:
    level = (fit.get("bootstrap") or {}).get("level")
    return "" if level is None else f"{100 * level:g}%"


def seed_spread(results: pd.DataFrame) -> dict | None:
    """The run-to-run noise at the top budget: per model size, the relative spread (max - min) / mean of the
    final loss over its seeds; the median and largest over sizes. None with one seed."""
    if "seed" not in results or results["seed"].nunique() < 2 or "budget" not in results:
        return None
    top = results[results["budget"] == results["budget"].max()]
    spread = top.groupby("params")["loss"].agg(lambda v: (v.max() - v.min()) / v.mean())
    return {"budget": float(top["budget"].iloc[0]), "median": float(spread.median()), "max": float(spread.max()),
            "seeds": int(results["seed"].nunique())}


def leave_future_out_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["Leave-future-out: approach 3 fitted on the budgets below each budget b predicts every run at b.", "",
             "| budget b | fitted on | extrapolation | median abs error | max abs error | mean error |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        head = f"| {row['budget']:.3g} | {', '.join(f'{b:.3g}' for b in row['fit_budgets'])} | " \
               f"{row['extrapolation_factor']:.3g}x |"
        if "error" in row:
            lines.append(f"{head} {row['error']} | | |")
        else:
            lines.append(f"{head} {100 * row['median_abs_rel_error']:.2f}% | {100 * row['max_abs_rel_error']:.2f}% | "
                         f"{100 * row['mean_rel_error']:+.2f}% |")
    return [*lines, ""]


def forecast_lines(prediction: dict, forecast: dict | None, rec: dict, spread: dict | None) -> list[str]:
    """The pre-registered forecast against the final run's loss, next to the seed noise."""
    if forecast is None:
        return []
    graded = prediction.get("forecast") or {}
    boot, pinned = forecast.get("bootstrap_interval"), forecast["pinned_E"]
    low, high = forecast["interval"]
    mean_is_point = forecast.get("point_from") == "window_mean"  # then the headline names the mean, once
    lines = [
        "Pre-registered forecast (`final/forecast.json`, written before training"
        + ("" if forecast.get("made_before_training") else "; NOTE: this one was made after training had started")
        + f", fit input sha256 {forecast['fit_input_sha256'][:12]}): loss {forecast['predicted_loss']:.4f} "
        + (f"(the mean of the law fitted on all budgets, {forecast['free_E_predicted_loss']:.4f}, and its "
           f"{forecast['window_mean']['fits'] - 1} refits without the smallest budgets) " if mean_is_point else "")
        + "at the run's "
        f"N = {forecast['params']:,.0f} and D = {forecast['tokens']:,.0f}, "
        f"{forecast['extrapolation_factor']:.0f}x the largest sweep run's compute; interval {low:.4f} to {high:.4f}, "
        "the union of"
        + (f" the {100 * forecast['bootstrap_level']:g}% bootstrap interval {boot[0]:.4f} to {boot[1]:.4f} and" if boot
           else "")
        + f" the forecast with E pinned at {pinned['E']:.3f} ({pinned['source']}): {pinned['predicted_loss']:.4f}"
        + "".join(f", and the law fitted from budget {refit['min_budget']:.3g} up: {refit['predicted_loss']:.4f}"
                  for refit in forecast.get("without_smallest_budgets") or [])
        + ("" if not forecast.get("without_smallest_budgets") or mean_is_point else
           f"; the mean of those {forecast['window_mean']['fits']} forecasts (all budgets and each refit): "
           f"{forecast['window_mean']['predicted_loss']:.4f}")
        + ".",
        "",
    ]
    if graded.get("relative_error") is not None:
        refits_graded = graded.get("without_smallest_budgets") or []
        lines += [
            f"Actual {graded['actual_loss']:.4f}: **{100 * graded['relative_error']:+.2f}%** against the forecast, "
            + ("inside" if graded["inside_interval"] else "outside") + " its interval."
            + (f" For scale, two seeds of one model at the top sweep budget differ by {100 * spread['median']:.2f}% "
               f"(median over sizes; at most {100 * spread['max']:.2f}%)." if spread else "")
            + "".join(f" The law fitted from budget {refit['min_budget']:.3g} up: "
                      f"{100 * refit['relative_error']:+.2f}%." for refit in refits_graded)
            + (f" The mean over budget windows: {100 * graded['window_mean_relative_error']:+.2f}%."
               if refits_graded and "window_mean_relative_error" in graded and not mean_is_point else "")
            + (f" The law fitted on all budgets: {100 * graded['free_E_relative_error']:+.2f}%."
               if mean_is_point else ""),
            "",
        ]
    family = rec.get("family")
    if family:
        swept = family["swept"]
        shape = rec["shape"]
        lines += [
            f"Shape family: the sweep's shapes have d_model / n_layers from {swept['aspect_range'][0]:.3g} to "
            f"{swept['aspect_range'][1]:.3g} and {swept['min_layers']} to {swept['max_layers']} layers; the final "
            f"run is d_model {shape['d_model']} with {shape['n_layers']} layers (aspect ratio "
            f"{family['aspect_ratio']:.3g}), " + ("inside" if family["inside"] else "**outside**")
            + " that family, "
            f"{family['depth_beyond_sweep']:.2g}x the deepest and {family['width_beyond_sweep']:.2g}x the widest swept "
            "model.",
            "",
        ]
    return lines


def _interval(fit: dict, key: str) -> str:
    ci = (fit.get("bootstrap") or {}).get("ci", {}).get(key)
    return "" if not ci or None in ci else f" [{ci[0]:.3g}, {ci[1]:.3g}]"


def demo_report(grid_path: Path, stats: dict, fit: dict, rec: dict, prediction: dict, sweep_dir: Path,
                root: Path, evaluation: dict | None = None, forecast: dict | None = None,
                downstream: list[tuple[str, dict, str]] | None = None) -> str:
    """`downstream`: (label, graded forecast, figure file in `root`) per downstream law: "sweep" fitted on the
    sweep's evaluated runs, "ladder" on the final shape's ladder."""
    results = pd.read_parquet(sweep_dir / "results.parquet")
    floor = (stats.get("entropy_floor") or {}).get("tuning", {})
    a2, a3 = fit.get("approach2") or {}, fit.get("approach3") or {}
    holdout = fit.get("holdout") or {}
    lines = [
        "# Demo report: a scaling study on the synthetic cohort",
        "",
        f"Grid `{grid_path.name}`: {len(results)} finished runs ({results['seed'].nunique()} seed(s) of each "
        "grid point), budgets "
        f"{', '.join(f'{b:.3g}' for b in sorted(results['budget'].unique())) if 'budget' in results else '?'} FLOPs, "
        f"{results['params'].min():,.0f} to {results['params'].max():,.0f} parameters (N counts all parameters, "
        "embeddings included; C = 6 N D).",
        "",
        f"Cohort: {sum(s['patients'] for s in stats['splits'].values()):,} patients, "
        f"{stats['splits']['train']['tokens']:,} train tokens, vocabulary {stats['vocab_size']}.",
        "",
        "## Fitted laws",
        "",
        f"| law | fit | {_level(fit)} bootstrap interval |",
        "| --- | --- | --- |",
    ]
    if a2:
        lines.append(f"| approach 2: N_opt ∝ C^a | a = {a2['a']:.3f} |{_interval(fit, 'approach2.a')} |")
        lines.append(f"| approach 2: D_opt ∝ C^b | b = {a2['b']:.3f} |{_interval(fit, 'approach2.b')} |")
    if a3:
        for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
            lines.append(f"| approach 3: {key} | {a3[key]:.4g} |{_interval(fit, f'approach3.{key}')} |")
    lines += [
        "",
        f"Backtest: fitted without the top budget, the fit predicts those runs' losses with a median absolute "
        f"relative error of {holdout.get('median_abs_rel_error', float('nan')):.2%} "
        f"({holdout.get('held_out_runs', 0)} runs held out).",
        "",
        *leave_future_out_lines(fit.get("leave_future_out") or []),
        "## Compute-optimal models",
        "",
        f"At C = {rec['compute']:.3g} FLOPs ({rec.get('extrapolation_factor', 0):.0f}x the largest sweep budget) "
        f"the fit ({rec['approach']}) recommends N = {rec['params']:,.0f} parameters and D = {rec['tokens']:,.0f} "
        f"tokens: **{rec['tokens_per_param']:.0f} tokens per parameter**, against about 20 for Chinchilla's "
        "text models and about 1,000 that CoMET reported for medical events.",
        "",
    ]
    if a3 and floor:
        lines += [
            f"Irreducible loss: the fitted E = {a3['E']:.3f} nats/token; the cohort's exact entropy floor is "
            f"{floor['nats_per_token']:.3f} (patient windows) and {floor['nats_per_token_packed']:.3f} "
            "(packed, a lower bound for windows cut at random offsets).",
            "",
        ]
    err = prediction.get("relative_error")
    lines += [
        "## The final run",
        "",
        f"The fitted law's validation loss at the run's N and D: {prediction['predicted_loss']:.4f}"
        + (f" (interval {prediction['predicted_loss_ci'][0]:.4f} to {prediction['predicted_loss_ci'][1]:.4f})"
           if prediction.get("predicted_loss_ci") else "")
        + f"; actual {prediction['actual_loss']:.4f}"
        + (f", a relative error of {100 * err:+.2f}%." if err is not None else "."),
        "",
        *forecast_lines(prediction, forecast, rec, seed_spread(results)),
    ]
    if evaluation:
        lines += evaluation_section(evaluation, root)
    for label, graded, figure in downstream or []:
        lines += downstream_section(graded, label)
        if (root / figure).is_file():
            lines += [f"![{figure[:-4]}]({figure})", ""]
    lines += ["## Figures of the fits", ""]
    for png in sorted((root / "figures").glob("*.png")):
        lines.append(f"![{png.stem}](figures/{png.name})")
    return "\n".join(lines) + "\n"


def _cell(block: dict | None, metric: str) -> str:
    if not block:
        return "-"
    if "error" in block:
        return "no fit"
    value, ci = block.get(metric), (block.get("ci") or {}).get(metric)
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def against_best_baseline(task: dict, estimator: str = "model", true_risk: bool = False) -> str | None:
    """'ahead of', 'level with' or 'behind' the task's better baseline (by its estimate of the primary metric,
    or with `true_risk` of auroc_true_risk), judged by the interval of the paired difference `estimator` minus
    that baseline (metrics.paired_difference); None when either is missing."""
    metric = "auroc_true_risk" if true_risk else PRIMARY_METRIC[task["kind"]]
    baselines = {name: b[metric] for name, b in (task.get("baselines") or {}).items()
                 if b and b.get(metric) is not None}
    if not baselines:
        return None
    sign = 1.0 if metric.startswith("auroc") else -1.0  # "higher is better"
    best = max(baselines, key=lambda name: sign * baselines[name])
    versus = task.get("versus_baselines_true_risk" if true_risk else "versus_baselines") or {}
    difference = (versus.get(estimator) or {}).get(best)
    if difference is None or difference.get("ci") is None:
        return None
    return {"ahead": "ahead of", "level": "level with", "behind": "behind"}[difference["verdict"]]


def evaluation_section(evaluation: dict, root: Path) -> list[str]:
    """Model, baselines and oracle side by side for the final run, and the downstream scaling figures."""
    runs = evaluation["runs"]
    final = runs[-1]
    sim = final["simulation"]
    lines = [
        "## Downstream evaluation by simulation",
        "",
        f"Up to {final['settings']['patients']} held-out patients per prediction rule get one prediction time each; "
        f"the final run samples K = {evaluation['samples']} futures from the history and estimates each outcome "
        "from them (the fraction of futures with the event; the mean count or duration). The baselines are "
        f"logistic/Poisson regression and LightGBM on code counts, age and sex, trained on "
        f"{final['settings']['train_patients']:,} train-split patients per rule; the oracle continues each "
        f"history {final['settings']['oracle_samples']} times with the generator itself. Brackets are 95% "
        f"bootstrap intervals. Simulation took {sim['seconds']:.0f} s ({sim['tokens_per_s']:,.0f} tokens/s) for the "
        f"final run; {sim['truncated_fraction']:.1%} of futures hit the token budget. The models were trained "
        f"on windows of {final['run']['shape']['max_seq_len']} tokens: prompts keep the patient's head (sex, age) "
        "and as many recent events as fit, and futures are sampled in rounds that fit that context"
        + (f"; {sim['prompts_cut_fraction']:.0%} of histories were longer and cut." if "prompts_cut_fraction" in sim
           else "."),
        "",
        f"| task | kind | n | metric | final model, K = 1 | final model, K = {evaluation['samples']} | logistic | "
        "LightGBM | oracle |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in final["tasks"]:
        metric = PRIMARY_METRIC[task["kind"]]
        n = f"{task['n']}" + (f" ({task['positives']} positive)" if "positives" in task else "")
        baselines = task.get("baselines") or {}
        one = next((b.get(metric) for b in task.get("by_samples") or [] if b["samples"] == 1), None)
        lines.append(f"| {task['name']} | {task['kind']} | {n} | {metric} | {'-' if one is None else f'{one:.3f}'} | "
                     f"{_cell(task.get('model'), metric)} | {_cell(baselines.get('logistic'), metric)} | "
                     f"{_cell(baselines.get('gbdt'), metric)} | {_cell(task.get('oracle'), metric)} |")
    warned = [f"{t['name']}: {w}" for t in final["tasks"] for w in t["warnings"]]
    lines += [""] + [f"- {w}" for w in warned] + ([""] if warned else [])
    plain = [against_best_baseline(t) for t in final["tasks"]]
    # the probability estimator where a task has one (a lower-variance estimate of the same quantity), else plain
    best = [against_best_baseline(t, "model_probability") or v for t, v in zip(final["tasks"], plain, strict=True)]

    def counted(verdicts: list) -> str:
        counts = {v: verdicts.count(v) for v in ("ahead of", "level with", "behind")}
        return (f"ahead of it on {counts['ahead of']}, level with it on {counts['level with']} and behind it on "
                f"{counts['behind']} of {sum(counts.values())} scored tasks")

    lines += [
        f"Against the better baseline of each task, by the 95% paired bootstrap interval of the difference (the "
        f"same resampled patients for both; level: the interval holds 0), the final model's fraction of futures "
        f"is {counted(plain)}; with its own probabilities where a task has them, {counted(best)}.",
        "",
    ]
    lines += true_risk_lines(final["tasks"], evaluation["samples"], counted)
    lines += [
        "Across model sizes and training lengths (the evaluated sweep runs, the rungs of the final shape's ladder "
        "where the demo trained one, then the final run), on the same patients:",
        "",
        "| run | N | C (FLOPs) | val loss | " + " | ".join(
            f"{t['name']} {PRIMARY_METRIC[t['kind']]}" for t in final["tasks"]) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in final["tasks"]) + " |",
    ]
    for run in runs:
        info, by_name = run["run"], {t["name"]: t for t in run["tasks"]}
        cells = [_cell(by_name[t["name"]].get("model"), PRIMARY_METRIC[t["kind"]]).split(" [")[0]
                 for t in final["tasks"]]
        lines.append(f"| {Path(info['run_dir']).name} | {info['params']:,} | {info['flops']:.3g} | "
                     f"{info['val_loss']:.4f} | " + " | ".join(cells) + " |")
    lines.append("")
    for png in ("metric_vs_compute.png", "metric_vs_loss.png"):
        if (root / "evaluation" / png).is_file():
            lines.append(f"![{png[:-4]}](evaluation/{png})")
    final_name = Path(final["run"]["run_dir"]).name
    if (root / "evaluation" / "runs" / final_name / "metric_vs_samples.png").is_file():
        lines.append(f"![metric_vs_samples](evaluation/runs/{final_name}/metric_vs_samples.png)")
    return [*lines, ""]


def true_risk_lines(tasks: list[dict], samples: int, counted) -> list[str]:
    """The binary tasks' AUROC against the true risk (the oracle's probabilities, where the cohort has them):
    the same rankings without the labels' coin flips, and the verdicts against the better baseline on it."""
    scored = [t for t in tasks if "auroc_true_risk" in (t.get("model") or {})]
    if not scored:
        return []
    lines = [
        "Against the true risk (each patient counted as a positive with the oracle's probability and as a negative "
        "with its complement, so the labels' coin flips leave the metric; the oracle's own value is the highest "
        "any estimate can reach):",
        "",
        f"| task | final model, K = {samples} | with its own probabilities | logistic | LightGBM | oracle |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task in scored:
        baselines = task.get("baselines") or {}
        lines.append(f"| {task['name']} | " + " | ".join(
            _cell(block, "auroc_true_risk") for block in (task.get("model"), task.get("model_probability"),
                                                          baselines.get("logistic"), baselines.get("gbdt"),
                                                          task.get("oracle"))) + " |")
    plain = [against_best_baseline(t, true_risk=True) for t in scored]
    best = [against_best_baseline(t, "model_probability", true_risk=True) or v for t, v in zip(scored, plain)]
    return [*lines, "", f"On it, the final model's fraction of futures is {counted(plain)}; with its own "
            f"probabilities, {counted(best)}.", ""]


def finite_section(finite_dir: Path, prediction: dict) -> str:
    """The report's finite-data section: the sweep over unique data, the law it fits, the optimum under the
    cap and the final run trained there, graded against the data-constrained and the fresh-data forecasts."""
    results = pd.read_parquet(finite_dir / "sweep" / "results.parquet")
    rec = json.loads((finite_dir / "final" / "recommendation.json").read_text())["recommendation"]
    capped, law = rec["data_constrained"], rec["data_constrained_law"]
    free, point = capped["unconstrained"], capped["constrained"]
    forecast = prediction.get("forecast") or {}
    low, high = forecast.get("interval") or (float("nan"), float("nan"))

    def percent(value) -> str:
        return "n/a" if value is None else f"{100 * value:+.2f}%"

    train = json.loads((finite_dir / "tokens" / "stats.json").read_text())["splits"]["train"]
    lines = [
        "## Finite data",
        "",
        f"A small cohort ({train['patients']:,} train patients, {train['tokens']:,} train tokens) and a sweep of "
        f"{len(results)} runs on nested subsets of up to {results['unique_tokens'].max():,.0f} tokens "
        f"({results['params'].nunique()} sizes x {results['tokens'].nunique()} token counts x "
        f"{results['unique_tokens'].nunique()} unique-data levels, {results['epochs'].min():.2g} to "
        f"{results['epochs'].max():.3g} epochs). The data-constrained law (Muennighoff et al. 2023) fitted to it: "
        f"R*_D = {law['R_D_star']:.3g} repeated epochs"
        + (f"; {len(capped['overfit_run_ids'])} run(s) that more epochs made worse are left out, and the law is "
           f"trusted up to {capped['last_helpful_epochs']:.3g} epochs" if capped.get("overfit_run_ids") else "")
        + ".",
        "",
        f"At C = {rec['compute']:.3g} FLOPs with {capped['unique_tokens']:,.0f} unique tokens, the fresh-data optimum "
        f"(N = {free['params']:,.0f}, D = {free['tokens']:,.0f}) would pass over the data {free['epochs']:.1f} "
        f"times. The optimum under the cap: **N = {point['params']:,.0f}, D = {point['tokens']:,.0f}, "
        f"{point['epochs']:.1f} epochs**, predicted loss {point['predicted_loss']:.4f}; the cap costs "
        f"{capped['loss_cost']:.4f} nats. Doubling compute would buy {capped['double_compute']['loss_gain']:.4f}, "
        f"doubling unique data {capped['double_unique_tokens']['loss_gain']:.4f}: more "
        f"{capped['better'].replace('_', ' ')} helps more.",
        "",
        f"The final run there (N = {prediction['params']:,}, D = {prediction['tokens']:,}, "
        f"{prediction['epochs']:.1f} epochs over {prediction['unique_tokens']:,} tokens): forecast "
        f"{prediction['predicted_loss']:.4f} (interval {low:.4f} to {high:.4f}, registered before training), "
        f"actual {prediction['actual_loss']:.4f}: **{percent(prediction['relative_error'])}**. Approach 3, which "
        f"takes every token for new, forecast {prediction['unconstrained_predicted_loss']:.4f} "
        f"({percent(prediction['unconstrained_relative_error'])}).",
        "",
    ]
    return "\n".join(lines) + "\n"


def downstream_section(graded: dict, label: str = "sweep") -> list[str]:
    """The final run's metrics predicted from evaluated runs (scaling.evaluate.downstream), next to what its
    evaluation measured. `label`: "sweep" (the sweep's runs) or "ladder" (the final shape at fractions of its
    training)."""
    actual_loss = "-" if graded.get("actual_loss") is None else f"{graded['actual_loss']:.4f}"
    runs = {"sweep": "sweep runs", "ladder": "rungs of the ladder"}[label]
    when = ("before the final run was evaluated" if graded.get("registered_before_evaluation", True)
            else f"after the final run was evaluated (from the {runs} only)")
    heading, about = {
        "sweep": ("the final run's metrics predicted from the sweep", ""),
        "ladder": ("the final run's metrics predicted along its own shape",
                   " (the final run's model and recipe trained to fractions of its steps: a metric that rises "
                   "with training length more than across the sweep's sizes is carried by these)"),
    }[label]
    lines = [
        f"### The downstream law: {heading}",
        "",
        f"Each task's metric across the {len(graded['fitted_on'])} evaluated {runs}{about} is fitted against their "
        "validation loss L and against log10 C, by the curve that best predicts each run left out (a constant, a "
        "line, or a sigmoid from chance for AUROC and exp(a + b L) for MAE; the column 'law'). Two steps, "
        f"as OLMo's ladder and Llama 3 predict benchmarks: the final run's loss forecast "
        f"({graded['target']['forecast_loss']:.4f}, registered before it trained), then the metric at that loss. "
        f"Registered {when}. Brackets: 95% intervals (the prediction's from refits with each run's metric redrawn "
        "from its own interval; the actual metric's from the bootstrap over patients). The column 'at the actual "
        f"loss' ({actual_loss}) isolates the second step.",
        "",
        "| task | estimator | metric | law | predicted (two steps) | at the actual loss | from compute | actual | "
        "error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in graded["tasks"]:
        for estimator, block in task["estimators"].items():
            if "reason" in block:
                lines.append(f"| {task['name']} | {estimator} | {task['metric']} | {block['reason']} | | | | | |")
                continue
            two_step = block["from_forecast_loss"]
            interval = two_step.get("interval")
            actual_ci = block.get("actual_ci")
            lines.append(
                f"| {task['name']} | {estimator} | {task['metric']} | {block['law_vs_loss']['link']} | "
                f"{two_step['value']:.3f}"
                + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
                + f" | {_number((block.get('from_actual_loss') or {}).get('value'))}"
                + f" | {_number((block.get('from_compute') or {}).get('value'))} | {_number(block.get('actual'))}"
                + (f" [{actual_ci[0]:.3f}, {actual_ci[1]:.3f}]" if actual_ci else "")
                + " | " + ("-" if two_step.get("error") is None else f"{two_step['error']:+.3f}") + " |")
    lines.append("")
    errors = two_step_auroc_errors(graded)
    for metric, against in (("auroc", "AUROC"), ("auroc_true_risk", "AUROC against the true risk")):
        if errors.get(metric):
            found = errors[metric]
            lines += [f"Binary tasks: the two-step prediction is within 0.03 of the actual {against} on "
                      f"{sum(e <= 0.03 for e in found)} of {len(found)} (task, estimator) pairs; median |error| "
                      f"{statistics.median(found):.3f}.", ""]
    return lines


def _number(x) -> str:
    return "-" if x is None else f"{x:.3f}"

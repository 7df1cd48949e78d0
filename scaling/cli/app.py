"""The `scaling` typer application and its command groups. Commands register themselves in the
sibling modules; `scaling.cli.main` runs the app and turns errors into exit codes."""

import typer

app = typer.Typer(
    name="scaling",
    help="Scaling laws for generative medical event models: data -> tokens -> runs -> sweep -> fits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Medical event data: synthetic cohorts and tokenization.", no_args_is_help=True)
bench_app = typer.Typer(help="Throughput figures on this machine.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")

# The one flag for the optional trackers (scaling.train.tracking); TensorBoard files are always written.
TRACK_HELP = ("Also log every run to these trackers: wandb, mlflow or wandb,mlflow (the extras "
              "medscaling[wandb] / [mlflow]; WANDB_* and MLFLOW_* settings apply).")


def track_option():
    return typer.Option(None, "--track", help=TRACK_HELP)

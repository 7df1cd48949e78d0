"""Entry point of the `scaling` command.

Exit codes: 0 success, 2 usage or input error (one line on stderr, no traceback), 1 internal failure.
Set SCALING_DEBUG=1 to see the traceback of an internal failure.
"""

from __future__ import annotations

import os
import sys
import traceback

import click
import typer

from scaling.cli import bench, data, evaluate, final, fit, sweep, train  # noqa: F401  (commands register on import)
from scaling.cli.app import app
from scaling.common.errors import InputError

# Library arguments whose flag is not `--` and the argument's name with hyphens.
FLAGS = {"meds_dir": "--meds MEDS_DIR", "split_aliases": "--split-alias"}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script passes it to sys.exit)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="scaling", standalone_mode=False)
    except InputError as e:
        print(f"error: {e.cli_message(FLAGS)}", file=sys.stderr)
        return 2
    # The pinned typer raises exceptions of its own bundled copy of click (typer.TyperException and its
    # subclasses: usage errors carry exit_code 2); click's own classes are caught for older typers.
    except (click.ClickException, typer.TyperException) as e:
        if hasattr(e, "show"):
            e.show(file=sys.stderr)
        else:
            print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (click.exceptions.Abort, typer.Abort):
        print("aborted", file=sys.stderr)
        return 1
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal failure: a one-line message, traceback only on request
        if os.environ.get("SCALING_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0

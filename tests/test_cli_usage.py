"""Usage errors (an unknown command or option, a value of the wrong type, a missing argument) exit 2 with
typer's one-line message and no traceback, like input errors; a library error shows the command's flag."""

from __future__ import annotations

import pytest

from scaling.common.errors import InputError


@pytest.mark.parametrize(("args", "message"), [
    (("trian",), "No such command 'trian'"),
    (("train", "cfg.toml", "--bogus"), "No such option: --bogus"),
    (("recommend", "x.csv", "--compute", "abc"), "Invalid value for '--compute'"),
    (("fit",), "Missing argument"),
    (("sweep", "plan"), "Missing argument"),
])
def test_usage_errors_exit_2_with_one_message(run_cli, args, message):
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and "internal error" not in err


def test_library_errors_name_the_argument_and_the_command_line_names_its_flag(run_cli, tmp_path):
    error = InputError("horizon_days = 0; expected a positive number of days", field="horizon_days")
    assert str(error) == "horizon_days = 0; expected a positive number of days"
    assert error.cli_message() == "--horizon-days 0; expected a positive number of days"
    existing = InputError(f"{tmp_path}: already exists; pass overwrite to replace it", field="overwrite")
    assert existing.cli_message() == f"{tmp_path}: already exists; pass --overwrite to replace it"
    code, out, err = run_cli("sweep", "plan", "sweeps/grids/smoke.toml", "--hardware", "tpu")
    assert code == 2 and err.startswith("error: --hardware 'tpu' is not one of")

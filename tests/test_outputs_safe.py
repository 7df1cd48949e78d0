"""Outputs never destroy inputs, follow the umask, and leave nothing behind after an interruption; numbers
from flags are finite. Each case here once exited 0 or 1 (or deleted the user's files)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from scaling.common.atomic import _HOST, atomic_directory, refuse_existing, write_json_atomic
from scaling.common.errors import InputError

RESULTS = "params,tokens,loss\n" + "".join(f"{n},{d},{1.5 + 40 / n ** 0.3 + 60 / d ** 0.3:.4f}\n"
                                           for n in (1e5, 3e5, 1e6) for d in (1e7, 3e7, 1e8))


@pytest.fixture
def results_in(tmp_path):
    folder = tmp_path / "pv"
    folder.mkdir()
    (folder / "results.csv").write_text(RESULTS)
    return folder


@pytest.mark.parametrize("out", ["pv", ".", ".."])
@pytest.mark.parametrize("overwrite", [False, True])
def test_plot_never_writes_over_its_own_input(run_cli, results_in, monkeypatch, out, overwrite):
    monkeypatch.chdir(results_in)
    before = sorted(p.name for p in results_in.parent.rglob("*"))
    out_path = {"pv": results_in, ".": results_in, "..": results_in.parent}[out]
    args = ["plot", str(results_in / "results.csv"), "--out", str(out_path), "--bootstrap", "0"]
    code, stdout, err = run_cli(*args, *(["--overwrite"] if overwrite else []))
    assert code == 2 and stdout == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "holds it" in err and "--out" in err
    assert sorted(p.name for p in results_in.parent.rglob("*")) == before  # nothing deleted, nothing added


def test_plot_into_a_folder_the_user_filled_needs_overwrite(run_cli, results_in, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli("plot", str(results_in / "results.csv"), "--out", str(out), "--bootstrap", "0")
    assert code == 2 and "already exists; pass --overwrite" in err
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_empty_output_folder_is_taken_and_an_input_inside_the_output_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refuse_existing(empty, overwrite=False)  # an empty folder (e.g. from mktemp -d) is fine
    with atomic_directory(empty) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (empty / "a.txt").read_text() == "a"
    with pytest.raises(InputError, match="holds it") as error:
        refuse_existing(tmp_path, overwrite=True, inputs=[empty / "a.txt"])
    assert error.value.field == "out"


@pytest.mark.parametrize(("command", "flag"), [("fit", "--compute"), ("recommend", "--compute"), ("plot", "--compute")])
@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_compute_must_be_a_finite_positive_number(run_cli, results_in, tmp_path, command, flag, value):
    extra = ["--out", str(tmp_path / "figs")] if command == "plot" else []
    code, out, err = run_cli(command, str(results_in / "results.csv"), flag, value, *extra)
    assert code == 2 and out == "" and "is not a positive number of FLOPs" in err
    assert not (tmp_path / "figs").exists()


def test_outputs_follow_the_umask(tmp_path):
    script = (
        "import os, sys; from pathlib import Path; os.umask(0o022)\n"
        "import scaling.common.atomic as a\n"
        "root = Path(sys.argv[1])\n"
        "a.write_json_atomic(root / 'x.json', {'a': 1})\n"
        "with a.atomic_directory(root / 'stage') as tmp: (tmp / 'f').write_text('x')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644  # mkstemp alone gives 0600
    assert stat.S_IMODE((tmp_path / "stage").stat().st_mode) == 0o755  # mkdtemp alone gives 0700


def test_a_temporary_sibling_left_by_a_killed_process_is_removed_on_the_next_run(tmp_path):
    # A process that dies (kill -9) inside atomic_directory leaves its temporary sibling behind.
    script = ("import os, sys; from pathlib import Path; import scaling.common.atomic as a\n"
              "with a.atomic_directory(Path(sys.argv[1]) / 'store') as tmp:\n"
              "    (tmp / 'half').write_text('x'); os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".store.")]
    assert len(left) == 1 and left[0].is_dir()
    # a sibling of a process that is still alive (this one) is left alone
    alive = tmp_path / f".store.{os.getpid()}-{_HOST}.abcd.tmp"
    other_host = tmp_path / ".store.999999-00000000.abcd.tmp"  # another machine's: its pid means nothing here
    other_host.mkdir()
    alive.mkdir()
    with atomic_directory(tmp_path / "store") as tmp:
        (tmp / "whole").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other_host.name, "store"])
    shutil.rmtree(alive)
    shutil.rmtree(other_host)
    write_json_atomic(tmp_path / "store" / "s.json", {"ok": True})
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["s.json", "whole"]

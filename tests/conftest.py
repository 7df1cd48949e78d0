import sys
from pathlib import Path

import pytest

# Test helpers (meds_builders, ...) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def run_cli(capsys):
    """Run `scaling ARGS` in-process; return (exit code, stdout, stderr)."""
    from scaling.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run

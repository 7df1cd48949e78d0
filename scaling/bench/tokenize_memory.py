"""Peak memory of `scaling data tokenize` against the size of its input and of the token store it writes.

    python -m scaling.bench.tokenize_memory runs/cohort-a runs/cohort-b runs/cohort-c

Each cohort is tokenized by the command line in a child process (a synthetic cohort's entropy floor
included, as `scaling data tokenize` computes it); the child's peak resident memory comes from the
kernel (wait4), so nothing of this process is counted. The table gives events, the store's size on
disk, the peak, and the peak less 3x the store: memory that grows with the data at most 3x as fast
as the store leaves that column flat across cohort sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_mb(command: list[str]) -> float:
    """Run `command`; its peak resident set size in MB (ru_maxrss is in KB on Linux)."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed: {errors.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measure(cohorts: list[Path]) -> list[dict]:
    scaling = [sys.executable, "-m", "scaling"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, cohort in enumerate(cohorts):
            out = Path(tmp) / f"{i}-{cohort.name}"
            peak = peak_rss_mb([*scaling, "data", "tokenize", str(cohort), "--out", str(out)])
            stats = json.loads((out / "stats.json").read_text())
            store = directory_mb(out)
            rows.append({"cohort": str(cohort), "events": sum(s["events"] for s in stats["splits"].values()),
                         "input_mb": round(directory_mb(cohort / "data"), 1), "store_mb": round(store, 1),
                         "peak_mb": round(peak), "peak_less_3x_store_mb": round(peak - 3 * store)})
    return rows


def main() -> None:
    rows = measure([Path(p) for p in sys.argv[1:]])
    print(f"{'cohort':<28} {'events':>11} {'input MB':>9} {'store MB':>9} {'peak MB':>8} {'peak - 3 store':>15}")
    for r in rows:
        print(f"{r['cohort']:<28} {r['events']:>11,} {r['input_mb']:>9} {r['store_mb']:>9} {r['peak_mb']:>8} "
              f"{r['peak_less_3x_store_mb']:>15}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

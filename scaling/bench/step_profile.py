"""Where a training step's time goes on this machine: the project's step split by op (from a jax.profiler trace
of the trainer's own hot loop) and, when torch is importable, PyTorch eager's (torch.profiler) for the same
shape, side by side.

    .venv/bin/python -m scaling.bench.step_profile --shape 1M
    PYTHONPATH=/tmp/torchsite .venv/bin/python -m scaling.bench.step_profile --shape 23M --seconds 20

Ops are grouped by what they compute: matrix products (attention's two batched products; the dense layers
and the head), and everything else by its JAX primitive (from the compiled program's op metadata) or its
aten name; forward and backward apart. Times are summed over threads, per optimizer step; "threads busy"
is the share of the traced wall time each XLA worker thread spent in ops, which is how the idle cores of a
one-device CPU run showed up (docs/training.md, "Speed").
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import jax

from models.ladder import family_shape
from scaling.bench.train import ProjectTrainLoop
from scaling.bench.train_vs_torch import SHAPES, TorchEagerLoop, torch_available

INSTRUCTION = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]*)\"")


def _kind(text_shape: str, is_dot: bool, op_name: str) -> str:
    phase = "backward" if "transpose(" in op_name else "forward"
    if is_dot:
        dims = text_shape.split("[", 1)[1].split("]", 1)[0] if "[" in text_shape else ""
        rank = dims.count(",") + 1 if dims else 0
        return f"{phase} matmul: {'attention' if rank >= 4 else 'dense'}"
    primitive = re.sub(r"[\d.]+$", "", op_name.rsplit("/", 1)[-1].rstrip(")")) or "other"
    return f"{phase} {primitive}"


def project_profile(spec, seconds: float) -> dict:
    name, d_model, n_layers, vocab, seq_len, batch = spec
    loop = ProjectTrainLoop(family_shape(d_model, vocab, seq_len, n_layers=n_layers), batch, seq_len)
    windows, masks = next(loop.batches)
    program = loop.train_chunk.lower(loop.params, loop.opt_state, windows, masks).compile().as_text()
    ops = {}
    for line in program.splitlines():
        if match := INSTRUCTION.match(line):
            is_dot = " dot(" in line or "__ynn_fusion" in line or "__xnn_fusion" in line
            ops[match.group(1)] = _kind(match.group(2), is_dot, match.group(3))
    loop.run(1.0)
    trace_dir = tempfile.mkdtemp(prefix="step_profile_")
    with jax.profiler.trace(trace_dir):
        _, steps = loop.run(seconds)
    from jax.profiler import ProfileData

    data = ProfileData.from_file(str(next(Path(trace_dir).rglob("*.xplane.pb"))))
    by_kind, busy, span = collections.Counter(), [], 0
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            events = [e for e in line.events if e.name in ops]
            for e in events:
                by_kind[ops[e.name]] += e.duration_ns
            if line.name.startswith("tf_XLAEigen") and events:
                busy.append(sum(e.duration_ns for e in events))
                span = max(span, max(e.start_ns + e.duration_ns for e in events) - min(e.start_ns for e in events))
    del data  # before the interpreter exits: freeing it then aborted the process
    loop.close()
    return {"ms_per_step": {k: v / 1e6 / steps for k, v in by_kind.most_common()},
            "threads_busy": [b / span for b in busy] if span else [], "steps": steps}


def torch_profile(spec, steps: int) -> dict:
    import torch

    name, d_model, n_layers, vocab, seq_len, batch = spec
    loop = TorchEagerLoop(family_shape(d_model, vocab, seq_len, n_layers=n_layers), batch, seq_len)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            loop.run(0.0)
    by_kind = collections.Counter()
    for event in prof.key_averages():
        op = event.key
        if not op.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        if op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"):
            kind = "matmul"
        elif "attention" in op or "flash" in op:
            kind = "attention kernel"
        else:
            kind = op.removeprefix("aten::")
        by_kind[kind] += event.self_cpu_time_total  # microseconds
    return {"ms_per_step": {k: v / 1e3 / steps for k, v in by_kind.most_common()}, "steps": steps}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1M", choices=[s[0] for s in SHAPES])
    parser.add_argument("--seconds", type=float, default=4.0, help="traced time of the project's loop")
    parser.add_argument("--torch-steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    spec = next(s for s in SHAPES if s[0] == args.shape)
    project = project_profile(spec, args.seconds)
    total = sum(project["ms_per_step"].values())
    print(f"{spec[0]}: project, {project['steps']} steps traced on {jax.device_count()} device(s); op time "
          f"{total:.1f} ms/step summed over threads; XLA threads busy "
          + ", ".join(f"{100 * b:.0f}%" for b in project["threads_busy"]))
    for kind, ms in list(project["ms_per_step"].items())[:args.top]:
        print(f"  {kind:<36} {ms:8.2f} ms  {100 * ms / total:5.1f}%")
    if torch_available():
        torch = torch_profile(spec, args.torch_steps)
        total = sum(torch["ms_per_step"].values())
        print(f"{spec[0]}: torch eager, {torch['steps']} steps; op self time {total:.1f} ms/step")
        for kind, ms in list(torch["ms_per_step"].items())[:args.top]:
            print(f"  {kind:<36} {ms:8.2f} ms  {100 * ms / total:5.1f}%")
    else:
        print("torch is not importable: no PyTorch column", file=sys.stderr)


if __name__ == "__main__":
    main()

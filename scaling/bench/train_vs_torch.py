"""Training throughput: the project's hot loop against a plain `jax.jit` step of the same model (and a
PyTorch eager loop of the same architecture when torch is importable), interleaved round by round so that
a busy machine slows all of them alike.

Each method runs in its own worker process (compiled once, then timed on request, idle while another
method runs), so neither framework's thread pool competes with the other's; in one process PyTorch's
rounds ranged from 1.3K to 46K tokens/s at 0.16M parameters. `--same-process` keeps the old way.

    .venv/bin/python -m scaling.bench.train_vs_torch                 # the 0.16M and 1M shapes
    .venv/bin/python -m scaling.bench.train_vs_torch --shape 23M --rounds 3 --seconds 20
    PYTHONPATH=/tmp/torchsite .venv/bin/python -m scaling.bench.train_vs_torch   # with a side-installed torch

Tokens per second: the median and the best over rounds; ratios are project / other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
import optax

from models.accounting import count_params
from models.ladder import family_shape
from scaling.bench.train import ProjectTrainLoop
from scaling.train.step import init_model, learning_rate_schedule, make_optimizer, next_token_loss

# (name, d_model, n_layers, vocab, seq_len, batch); the first two run by default, 23M on request (--shape 23M).
SHAPES = [("0.16M", 64, 2, 512, 128, 16), ("1M", 128, 4, 512, 256, 16), ("23M", 512, 8, 1024, 256, 8)]
DEFAULT_SHAPES = ("0.16M", "1M")


class PlainJitLoop:
    """One optimizer step per `jax.jit` call (the same model, loss and optimizer), batches from numpy."""

    def __init__(self, shape, batch_size, seq_len):
        graphdef, self.params = init_model(shape, 0)
        self.tx = make_optimizer(learning_rate_schedule("cosine", 1e-3, 10**6, 100))
        self.opt_state = self.tx.init(self.params)
        tx = self.tx

        def step(params, opt_state, windows, mask):
            loss, grads = jax.value_and_grad(next_token_loss, argnums=1)(graphdef, params, windows, mask)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))
        rng = np.random.default_rng(0)
        self.batches = [rng.integers(2, shape.vocab_size, (batch_size, seq_len + 1)).astype(np.int32)
                        for _ in range(8)]
        self.mask = np.ones((batch_size, seq_len), np.float32)
        self.tokens_per_step = batch_size * seq_len
        self.run(0.0)

    def run(self, seconds):
        steps, start, loss = 0, time.perf_counter(), None
        while True:
            previous = loss
            self.params, self.opt_state, loss = self.step(self.params, self.opt_state,
                                                          self.batches[steps % 8], self.mask)
            if previous is not None:
                jax.block_until_ready(previous)  # at most two steps in flight (dispatch is asynchronous)
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        jax.block_until_ready(loss)
        return steps * self.tokens_per_step / (time.perf_counter() - start), steps

    def close(self):
        pass


class TorchEagerLoop:
    """A nanoGPT-style PyTorch eager loop of the same architecture (RMSNorm, fused QKV with GQA, RoPE,
    causal SDPA, fused SwiGLU, AdamW, clipping)."""

    def __init__(self, shape, batch_size, seq_len):
        import torch
        import torch.nn.functional as F
        from torch import nn

        torch.manual_seed(0)
        s = shape
        hd = s.head_dim

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.n1, self.n2 = nn.RMSNorm(s.d_model, eps=1e-6), nn.RMSNorm(s.d_model, eps=1e-6)
                self.qkv = nn.Linear(s.d_model, (s.n_heads + 2 * s.n_kv_heads) * hd, bias=False)
                self.out = nn.Linear(s.n_heads * hd, s.d_model, bias=False)
                self.gate_up = nn.Linear(s.d_model, 2 * s.d_ff, bias=False)
                self.down = nn.Linear(s.d_ff, s.d_model, bias=False)

            def forward(self, x, cos, sin):
                B, T, _ = x.shape
                q, k, v = self.qkv(self.n1(x)).split([s.n_heads * hd, s.n_kv_heads * hd, s.n_kv_heads * hd], -1)
                q = rope(q.view(B, T, s.n_heads, hd), cos, sin).transpose(1, 2)
                k = rope(k.view(B, T, s.n_kv_heads, hd), cos, sin).transpose(1, 2)
                v = v.view(B, T, s.n_kv_heads, hd).transpose(1, 2)
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=s.n_kv_heads != s.n_heads)
                x = x + self.out(a.transpose(1, 2).reshape(B, T, -1))
                gate, up = self.gate_up(self.n2(x)).chunk(2, -1)
                return x + self.down(F.silu(gate) * up)

        def rope(x, cos, sin):
            x1, x2 = x.chunk(2, -1)
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(s.vocab_size, s.d_model)
                self.blocks = nn.ModuleList([Block() for _ in range(s.n_layers)])
                self.norm = nn.RMSNorm(s.d_model, eps=1e-6)
                self.head = nn.Linear(s.d_model, s.vocab_size, bias=False)
                inv = 10_000.0 ** (-torch.arange(0, hd, 2).float() / hd)
                ang = torch.arange(seq_len).float()[:, None] * inv
                self.register_buffer("cos", ang.cos()[None, :, None, :])
                self.register_buffer("sin", ang.sin()[None, :, None, :])

            def forward(self, idx, targets):
                x = self.embed(idx)
                for b in self.blocks:
                    x = b(x, self.cos, self.sin)
                logits = self.head(self.norm(x))
                return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

        self.torch = torch
        self.model = Model()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        g = torch.Generator().manual_seed(0)
        self.batches = [torch.randint(2, s.vocab_size, (batch_size, seq_len + 1), generator=g) for _ in range(8)]
        self.tokens_per_step = batch_size * seq_len
        self.params = sum(p.numel() for p in self.model.parameters())
        self.run(0.0)

    def run(self, seconds):
        steps, start = 0, time.perf_counter()
        while True:
            w = self.batches[steps % 8]
            loss = self.model(w[:, :-1], w[:, 1:])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        return steps * self.tokens_per_step / (time.perf_counter() - start), steps

    def close(self):
        pass


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_loop(method, shape, batch, seq_len, steps_per_dispatch):
    if method == "project":
        return ProjectTrainLoop(shape, batch, seq_len, steps_per_dispatch=steps_per_dispatch)
    if method == "plain_jit":
        return PlainJitLoop(shape, batch, seq_len)
    loop = TorchEagerLoop(shape, batch, seq_len)
    assert loop.params == count_params(shape)["total"]
    return loop


class WorkerLoop:
    """A loop in a process of its own (`--worker METHOD`): built and compiled there, timed on request."""

    def __init__(self, method, spec, steps_per_dispatch, torch_threads=None):
        command = [sys.executable, "-m", "scaling.bench.train_vs_torch", "--worker", method, "--shape", spec[0],
                   "--steps-per-dispatch", str(steps_per_dispatch)]
        if torch_threads:
            command += ["--torch-threads", str(torch_threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=os.environ.copy())
        self._read()  # "ready": built and compiled

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.process.args[4]} exited ({self.process.wait()})")
        return json.loads(line)

    def run(self, seconds):
        self.process.stdin.write(f"{seconds}\n")
        self.process.stdin.flush()
        reply = self._read()
        return reply["tokens_per_s"], reply["steps"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def worker(method, spec, steps_per_dispatch) -> None:
    """Build one loop, say ready, then answer each line of stdin (seconds to run) with one JSON line."""
    name, d_model, n_layers, vocab, seq_len, batch = spec
    shape = family_shape(d_model, vocab, seq_len, n_layers=n_layers)
    loop = make_loop(method, shape, batch, seq_len, steps_per_dispatch)
    print(json.dumps({"ready": method}), flush=True)
    for line in sys.stdin:
        tokens_per_s, steps = loop.run(float(line))
        print(json.dumps({"tokens_per_s": tokens_per_s, "steps": steps}), flush=True)
    loop.close()


def compare(name, d_model, n_layers, vocab, seq_len, batch, rounds, seconds, steps_per_dispatch, log,
            separate=True, torch_threads=None):
    shape = family_shape(d_model, vocab, seq_len, n_layers=n_layers)
    methods = ["project", "plain_jit"] + (["torch_eager"] if torch_available() else [])
    spec = (name, d_model, n_layers, vocab, seq_len, batch)
    loops = {m: WorkerLoop(m, spec, steps_per_dispatch, torch_threads) if separate
             else make_loop(m, shape, batch, seq_len, steps_per_dispatch) for m in methods}
    speeds = {k: [] for k in loops}
    for r in range(rounds):
        for key, loop in loops.items():
            speeds[key].append(loop.run(seconds)[0])
        log(f"{name} round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in speeds.items()))
    for loop in loops.values():
        loop.close()
    median = {k: statistics.median(v) for k, v in speeds.items()}
    best = {k: max(v) for k, v in speeds.items()}
    result = {"shape": name, "params": count_params(shape)["total"], "separate_processes": separate,
              "tokens_per_s": median,
              "best_tokens_per_s": best, "samples": speeds}
    result["ratios"] = {f"project/{k}": median["project"] / v for k, v in median.items() if k != "project"}
    result["best_ratios"] = {f"project/{k}": best["project"] / v for k, v in best.items() if k != "project"}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="per method per round")
    parser.add_argument("--steps-per-dispatch", type=int, default=10)
    parser.add_argument("--shape", action="append", help="these shapes (0.16M, 1M, 23M; default 0.16M and 1M)")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--same-process", action="store_true", help="every method in this process (not fair when "
                        "both frameworks keep thread pools)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.torch_threads and torch_available():
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.worker:
        worker(args.worker, next(s for s in SHAPES if s[0] == args.shape[0]), args.steps_per_dispatch)
        return

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch "
        f"{'available' if torch_available() else 'not importable'}")
    results = []
    for spec in SHAPES:
        if spec[0] not in (args.shape or DEFAULT_SHAPES):
            continue
        results.append(compare(*spec, args.rounds, args.seconds, args.steps_per_dispatch, log,
                               separate=not args.same_process, torch_threads=args.torch_threads))
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        for label, speeds, ratios in (("median", r["tokens_per_s"], r["ratios"]),
                                      ("best", r["best_tokens_per_s"], r["best_ratios"])):
            speeds = "  ".join(f"{k} {v:>9,.0f}" for k, v in speeds.items())
            ratios = "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if math.isfinite(v))
            print(f"{r['shape']:>6} ({r['params']:,} params) {label:>6} tok/s: {speeds}  |  {ratios}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU figures the project reports, in one go (about 5 minutes on an H100):
#   1. the training step in bfloat16 at a ~100M-parameter shape (d_model 768, 12 layers, vocabulary 8192,
#      context 1024, batch 32): tokens/s and MFU;
#   2. the sampler with and without its KV cache (`scaling bench sample`).
# Needs a Python environment whose JAX sees the GPU (jax[cuda12]); PYTHON overrides the interpreter.
# Results go to $OUT (or ./device_check) as JSON, one file per benchmark.
#
#   bash scaling/bench/device_check.sh
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
out=${OUT:-device_check}
mkdir -p "$out"
"$PYTHON" -c "import jax; print('devices:', jax.devices())" | tee "$out/devices.txt"
timeout 300 "$PYTHON" -c "from scaling.cli import main; main()" bench train --d-model 768 --n-layers 12 --vocab 8192 --seq-len 1024 \
    --batch 32 --dtype bfloat16 --seconds 30 --json | tee "$out/bench_train_100m_bf16.json"
timeout 200 "$PYTHON" -c "from scaling.cli import main; main()" bench sample --json | tee "$out/bench_sample.json"

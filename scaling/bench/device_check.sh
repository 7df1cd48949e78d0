#!/usr/bin/env bash
# The GPU figures the project reports, in one go (about 3 minutes on an H200, the Python start and compiles included):
#   1. the training step in bfloat16 at a ~100M-parameter shape (d_model 768, 12 layers, vocabulary 8192;
#      87M parameters) with a 2,048-token context (batch 32) and an 8,192-token context (batch 8), 65,536 tokens
#      per step, cuDNN flash attention: tokens/s and MFU (6N-counted, and with attention counted over the whole
#      window as PaLM and MaxText count it: `mfu_detailed`), against 989 TFLOP/s dense bf16;
#      where cuDNN attention fails, the same shape again with XLA's attention;
#   2. the sampler with and without its KV cache (`scaling bench sample`): the issue's small shape and the
#      ~100M shape.
# Needs a Python environment whose JAX sees the GPU (jax[cuda]); PYTHON overrides the interpreter (default:
# .venv/bin/python where it exists, else python3). One benchmark failing does not stop the others.
# Results go to $OUT (or ./device_check) as JSON, one file per benchmark; the log is on stderr.
#
#   bash scaling/bench/device_check.sh
set -uo pipefail
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
out=${OUT:-device_check}
mkdir -p "$out"
scaling=("$PYTHON" -m scaling)

"$PYTHON" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, 'devices:', jax.devices())" | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader >>"$out/devices.txt" 2>/dev/null

model=(--d-model 768 --n-layers 12 --vocab 8192 --dtype bfloat16 --seconds 20 --json)
train() {  # name, seq_len, batch, fallback batch for XLA attention
    echo "== train ${1}: context $2, batch $3" >&2
    if ! timeout 170 "${scaling[@]}" bench train "${model[@]}" --seq-len "$2" --batch "$3" >"$out/train_$1.json"; then
        echo "== train ${1}: failed; again with XLA's attention, batch $4" >&2
        timeout 150 "${scaling[@]}" bench train "${model[@]}" --seq-len "$2" --batch "$4" --attention xla \
            >"$out/train_$1.json" || echo "== train ${1}: failed" >&2
    fi
    cat "$out/train_$1.json"
}
train 2k 2048 32 16
train 8k 8192 8 1

echo "== sample: small shape" >&2
timeout 90 "${scaling[@]}" bench sample --json >"$out/sample_small.json" && cat "$out/sample_small.json"
echo "== sample: ~100M shape" >&2
timeout 120 "${scaling[@]}" bench sample --d-model 768 --n-layers 12 --vocab 8192 --context 512 --new-tokens 64 \
    --batch 64 --json >"$out/sample_100m.json" && cat "$out/sample_100m.json"
exit 0

#!/usr/bin/env bash
# One short run for a machine with a GPU: CUDA correctness (every zoo model's float64 log-probs on
# GPU vs CPU, a bf16 autocast training step, cached = naive sampling on the GPU), then speed
# (sampling and training throughput on the GPU, ratios printed side by side).
#   bash bench/cuda_check.sh            (after `make test` has built .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
"$PY" -m pytest -q tests/test_cuda.py
"$PY" bench/sampling.py --quick --device cuda --batch 16
"$PY" bench/train_throughput.py --device cuda --batch 64

#!/usr/bin/env bash
# One short run for a machine with a GPU: CUDA correctness (every zoo model on both torch backends:
# float64 log-probs on GPU vs CPU, a bf16 autocast training step, cached = naive sampling on the
# GPU), then speed: the peers on CUDA, sampling, and bf16 training throughput in elements per second.
#   bash bench/cuda_check.sh            (after `make test`; the peers need pip install -e ".[bench]")
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
"$PY" bench/peers.py --quick --device cuda
"$PY" bench/sampling.py --quick --device cuda --batch 16
"$PY" bench/train_throughput.py --device cuda --batch 64 --amp --no-compile

"""One line naming the machine a benchmark ran on: CPU model, the C runtimes' vector width, torch
and its threads. Figures from different CPUs are not comparable (the C step's speed depends on
the vector width it was built for: 64 bytes with AVX-512, 32 with AVX2), so every benchmark
prints this first."""
from __future__ import annotations

import json

import numpy as np
import torch


def describe() -> str:
    from arspec_torch import ccache, cstep
    try:
        cpu = json.loads(ccache.cpu_identity()).get("model name", "unknown CPU")
    except ValueError:
        cpu = ccache.cpu_identity()
    if cstep.c_step_available(np.dtype(np.float32)):
        width = f"C runtimes built for {8 * int(cstep.runtime(np.dtype(np.float32)).rt_vector_bytes())}-bit vectors"
    else:
        width = "no C runtime (numpy step)"
    return f"{cpu}; {width}; torch {torch.__version__}, {torch.get_num_threads()} threads"

"""A whole-tensor pass of 1-d convolutions in C, for inference (float32 on the CPU, no gradient):
sampling Parallel WaveNet's student, evaluating a WaveNet. Each fused group of the interpreter's
calls (`convgroups.py`) runs as one C call over tiles of 32 time steps, every intermediate value
in L1: the convolution's product, then in the same tile its epilogue (the bias, a frame-rate
context added by repetition, the gated activation, a residual addition). torch makes a separate
pass over memory for each of those, and at 16 channels over 16,000 steps oneDNN's convolution
itself runs at a third of the cores' rate (measured: a student's layer 0.92 ms in torch, see
bench/README.md). Compiled once per machine with the C step's loader (kept under ~/.cache/arspec);
without a compiler, or with ARSPEC_STEP=numpy, `library()` is None and the calls run in torch.

The gate is tanh(a) sigmoid(b) = (1 - u) / ((1 + u)(1 + v)) with u = e^-2a, v = e^-b (one
division), exp as 2^n e^r with e^r to degree 7: the same values as torch's to about 3e-7."""
from __future__ import annotations

import ctypes
import functools
import mmap
import os
import subprocess

import numpy as np
import torch

from arspec.allocator import allocator_tuned
from arspec_torch import cstep
from arspec_torch.ccache import load_library

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
typedef long long idx;
#define TILE 32                 /* time steps per tile */
/* The CPU's own vector width (a wider generic vector is split by the compiler through memory:
   measured 14x slower on an AVX2 machine), and as many output channels per register block as
   leave the accumulators in registers: 16 of 32 zmm with AVX-512, 12 of 16 ymm otherwise. */
#if defined(__AVX512F__)
#define VBYTES 64
#define BLOCK 8
#else
#define VBYTES 32
#define BLOCK 3
#endif
#define VW (VBYTES / 4)          /* floats per vector */
#define NV (TILE / VW)           /* vectors per tile row */
typedef float vf __attribute__((vector_size(VBYTES)));
typedef float vf_row __attribute__((vector_size(VBYTES), may_alias));   /* a tile row read as vectors (rows are 64-byte aligned) */
int pass_vector_bytes(void) { return VBYTES; }

static inline float pass_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = rintf(x * 1.44269504088896341f);
    float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = 1.0f / 720.0f + r * p; p = 1.0f / 120.0f + r * p; p = 1.0f / 24.0f + r * p;
    p = 1.0f / 6.0f + r * p;   p = 0.5f + r * p;          p = 1.0f + r * p;        p = 1.0f + r * p;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale; memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* tanh(a) sigmoid(b); exponents clamped at 44 so the product stays finite (tanh(22) is 1 in float) */
static inline float gated(float a, float b) {
    float xa = -2.0f * a, xb = -b;
    float u = pass_exp(xa > 44.0f ? 44.0f : xa), v = pass_exp(xb > 44.0f ? 44.0f : xb);
    return (1.0f - u) / ((1.0f + u) * (1.0f + v));
}

typedef struct {
    const float *x, *w, *bias, *context, *residual, *w2, *bias2;
    float *out;
    idx batch, cin, length, cout, kernel, dilation, factor, cout2;
    int gate;
} conv_job;

/* h[o] = bias[o] + sum_r w[o, r] in[r] over one tile, for o < cout: blocks of BLOCK output
   channels, each row of `in` read once per block (the accumulators in registers) */
static void tile_product(const float *w, const float *bias, idx rows, idx cout, float (*in)[TILE], float (*h)[TILE]) {
    for (idx blk = 0; blk * BLOCK < cout; blk++) {
        const float *wr[BLOCK];
        vf acc[BLOCK][NV];
        for (int o = 0; o < BLOCK; o++) {
            idx row = blk * BLOCK + o < cout ? blk * BLOCK + o : cout - 1;
            wr[o] = w + row * rows;
            float b0 = bias ? bias[row] : 0.0f;
            for (int v = 0; v < NV; v++) acc[o][v] = (vf){0} + b0;
        }
        for (idx r = 0; r < rows; r++) {
            const vf_row *row = (const vf_row *)in[r];
            vf xv[NV];
            for (int v = 0; v < NV; v++) xv[v] = row[v];
            #pragma GCC unroll 8
            for (int o = 0; o < BLOCK; o++)
                for (int v = 0; v < NV; v++) acc[o][v] += wr[o][r] * xv[v];
        }
        for (int o = 0; o < BLOCK; o++)
            for (int v = 0; v < NV; v++) memcpy(h[blk * BLOCK + o] + v * VW, &acc[o][v], VBYTES);
    }
}

/* One tile, steps [t0, t0 + TILE) of item b. x (B, Cin, T); w (Cout, Cin * K), tap j of input
   channel c reading x[c, t - dilation (K - 1 - j)] (zero before 0); plus the bias, plus the
   context (B, Cout, T / factor) repeated along time; then either plus the residual (B, Cout, T)
   into out (B, Cout, T), or the gate into out (B, Cout / 2, T), or (w2 given: a whole residual
   layer) the gate, then w2 (Cout2, Cout / 2) and bias2, plus x itself (Cout2 = Cin) into out
   (B, Cin, T). */
static void conv_tile(const conv_job *J, idx b, idx t0) {
    idx rows = J->cin * J->kernel, T = J->length, valid = T - t0 < TILE ? T - t0 : TILE, half = J->cout / 2;
    idx padded = (J->cout + BLOCK - 1) / BLOCK * BLOCK, padded2 = (J->cout2 + BLOCK - 1) / BLOCK * BLOCK;
    float xin[rows][TILE] __attribute__((aligned(64)));
    float h[padded][TILE] __attribute__((aligned(64)));
    for (idx c = 0; c < J->cin; c++) {
        const float *src = J->x + (b * J->cin + c) * T;
        for (idx j = 0; j < J->kernel; j++) {
            idx shift = J->dilation * (J->kernel - 1 - j), start = t0 - shift;
            float *dst = xin[c * J->kernel + j];
            if (start >= 0 && valid == TILE) memcpy(dst, src + start, TILE * sizeof(float));
            else for (idx i = 0; i < TILE; i++) dst[i] = (i < valid && start + i >= 0) ? src[start + i] : 0.0f;
        }
    }
    tile_product(J->w, J->bias, rows, J->cout, xin, h);
    if (J->context) {
        idx frames = T / J->factor;
        for (idx o = 0; o < J->cout; o++) {
            const float *ctx = J->context + (b * J->cout + o) * frames;
            for (idx i0 = 0; i0 < valid;) {
                idx f = (t0 + i0) / J->factor, i1 = (f + 1) * J->factor - t0;
                if (i1 > valid) i1 = valid;
                float add = ctx[f];
                for (idx i = i0; i < i1; i++) h[o][i] += add;
                i0 = i1;
            }
        }
    }
    if (J->w2) {                                       /* gate, then the 1x1 back to the residual stream */
        float g[half][TILE] __attribute__((aligned(64)));
        float h2[padded2][TILE] __attribute__((aligned(64)));
        for (idx o = 0; o < half; o++)
            for (idx i = 0; i < TILE; i++) g[o][i] = gated(h[o][i], h[o + half][i]);
        tile_product(J->w2, J->bias2, half, J->cout2, g, h2);
        for (idx o = 0; o < J->cout2; o++) {
            float *dst = J->out + (b * J->cout2 + o) * T + t0;
            const float *own = xin[o * J->kernel + J->kernel - 1];          /* tap K - 1 reads x[o, t] itself */
            for (idx i = 0; i < valid; i++) dst[i] = h2[o][i] + own[i];
        }
        return;
    }
    if (J->gate) {
        for (idx o = 0; o < half; o++) {
            float *dst = J->out + (b * half + o) * T + t0;
            for (idx i = 0; i < valid; i++) dst[i] = gated(h[o][i], h[o + half][i]);
        }
        return;
    }
    for (idx o = 0; o < J->cout; o++) {
        float *dst = J->out + (b * J->cout + o) * T + t0;
        if (J->residual) {
            const float *res = J->residual + (b * J->cout + o) * T + t0;
            for (idx i = 0; i < valid; i++) dst[i] = h[o][i] + res[i];
        } else memcpy(dst, h[o], valid * sizeof(float));
    }
}

/* The tiles, (item, tile) pairs, over n threads of OpenMP: built with -fopenmp the library
   resolves to the libgomp torch has loaded, so it runs on torch's own team (a second pool of
   threads spinning beside torch's measured 1.5-4x slower on two cores). */
void pass_conv(const float *x, const float *w, const float *bias, const float *context, const float *residual,
               const float *w2, const float *bias2, float *out, idx batch, idx cin, idx length, idx cout,
               idx kernel, idx dilation, idx factor, idx cout2, int gate, int n) {
    conv_job J = {x, w, bias, context, residual, w2, bias2, out, batch, cin, length, cout, kernel, dilation, factor, cout2, gate};
    idx per_item = (length + TILE - 1) / TILE, tiles = batch * per_item;
    #pragma omp parallel for schedule(dynamic, 4) num_threads(n) if(n > 1 && tiles >= 16)
    for (idx e = 0; e < tiles; e++) conv_tile(&J, e / per_item, (e % per_item) * TILE);
}
"""


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled pass, or None where it cannot run (no compiler or a failed build, warned once;
    ARSPEC_STEP=numpy or ARSPEC_PASS=torch switch it off)."""
    if os.environ.get("ARSPEC_PASS", "").lower() == "torch" or not cstep.c_step_available(np.dtype(np.float32)):
        return None
    lib = None
    choices = [(*cstep.FLAGS, "-fopenmp")] if torch_runs_libgomp() else []
    for flags in (*choices, tuple(cstep.FLAGS)):           # without OpenMP (another runtime, no libgomp): one thread
        try:
            lib = load_library(SOURCE, flags, prefix="pass")
            break
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            failure = error
    if lib is None:
        cstep._warn_once(f"whole-tensor convolutions run in torch: their C pass did not build ({failure})")
        return None
    ptr, n = ctypes.c_void_p, ctypes.c_longlong
    lib.pass_conv.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, n, n, n, n, n, n, n, n, ctypes.c_int, ctypes.c_int]
    lib.pass_conv.restype = None
    return lib


def torch_runs_libgomp() -> bool:
    """Whether this process has GNU OpenMP loaded (torch's Linux wheels bring it): only then is the
    pass built with OpenMP, so that it shares torch's team instead of loading a second runtime."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def applies(x: torch.Tensor) -> bool:
    """Whether the C pass may compute a call on x: a float32 CPU tensor (B, C, T) while autograd
    records nothing (under no_grad or inference_mode: the parameters want gradients otherwise)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 3
            and not torch.is_grad_enabled() and library() is not None)


@functools.cache
def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pass_threads() -> int:
    """Threads for a pass: the cores torch may use (`torch.set_num_threads`) and this process may run on."""
    return max(1, min(torch.get_num_threads(), _cores()))


#: outputs of at least this many bytes get pages of their own (see `_output`)
OWN_PAGES = 1 << 20


def _output(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The pass's output. Under glibc's default settings a freed output of a few megabytes raises
    the allocator's mmap threshold, so the next ones come from the heap and fragment it: a
    WaveNet forward at 16,000 samples held 1.4 GB of RSS for 156 MiB of live tensors (measured).
    Unless the process chose to keep freed memory (`arspec.tune_allocator()`), a large output is
    its own anonymous mapping, returned to the system when the tensor is freed."""
    nbytes = 4 * shape[0] * shape[1] * shape[2]
    if nbytes < OWN_PAGES or allocator_tuned():
        return x.new_empty(shape)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.float32).view(shape)


def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, dilation: int,
         context: torch.Tensor | None = None, factor: int = 1, residual: torch.Tensor | None = None,
         gate: bool = False, back: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
    """The causal 1-d convolution of x (B, Cin, T) with weight (Cout, Cin, K) (tap j reads
    t - dilation (K - 1 - j)), plus bias, plus a context (B, Cout, T / factor) repeated along time,
    then the gate (output (B, Cout / 2, T)) or plus a residual (B, Cout, T). With `back` = (w2
    (Cin, Cout / 2, 1), bias2): a whole residual layer, x + w2 gate(...) + bias2, (B, Cin, T).
    The caller checked `applies` and the shapes; no tensor needs a gradient."""
    lib = library()
    assert lib is not None
    batch, cin, length = x.shape
    cout, _, kernel = weight.shape
    w2, bias2 = back if back is not None else (None, None)
    tensors = [t.contiguous() if t is not None else None for t in (x, weight, bias, context, residual, w2, bias2)]
    channels = cin if back is not None else cout // 2 if gate else cout
    out = _output(x, (batch, channels, length))
    lib.pass_conv(*(t.data_ptr() if t is not None else None for t in tensors), out.data_ptr(), batch, cin, length,
                  cout, kernel, dilation, factor, cin if back is not None else 0, int(gate or back is not None),
                  pass_threads())
    return out

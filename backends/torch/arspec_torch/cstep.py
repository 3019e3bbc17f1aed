"""The step plan run by a small interpreter in C: the plan's calls become a list of instructions
(a product, a gather of taps, a gate, a ring write...) over buffers the program owns, and one C
call runs a whole generation step. At WaveNet's size numpy's per-call overhead is most of a step
(about 12 calls per layer at 0.5 to 1.5 us each); here a step costs its arithmetic. The runtime
is compiled once per machine and dtype with the system's C compiler and kept, verified, in a
private cache (ccache.py); models compile nothing. Same plan, rings and tables as the
numpy step (stepplan.StepProgram), which it extends.

* Values are item-major, (B, C) per position, and the items are independent: with several
  threads, each runs the whole step on its own items (no barrier inside a step). Workers spin
  briefly between steps, then yield, then sleep.
* Products use a kernel of their own over weights packed once per program (blocks of one vector
  width of output channels, each block's rows contiguous): a BLAS call packs the weights again
  on every call, which at these sizes costs as much as the product, and concurrent BLAS calls
  from two threads did not scale (measured: 0.94x).
* exp, tanh and sigmoid are polynomials of their own in double precision (|error| < 1e-15) so the
  loops vectorize; the cached path stays equal to the training graph to 1e-9 in float64.

Without a compiler `c_step_available()` is False and the numpy step runs (also with ARSPEC_STEP=numpy)."""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess
from typing import Any

import numpy as np

from arspec_torch.ccache import compiler, load_library
from arspec_torch.stepplan import StepProgram

#: the compiler flags: native vector width; math functions without errno, so loops vectorize
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=gnu11", "-pthread"]

#: the runtime, for `real` float or double: the interpreter, the products, exp/tanh/sigmoid, the worker threads
RUNTIME = r"""
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
typedef @REAL@ real;
typedef long long idx;
/* The CPU's own vector width: a wider generic vector is split by the compiler through memory
   (measured 6-10x slower steps on an AVX2 machine). Python reads it back (rt_vector_bytes). */
#if defined(__AVX512F__)
#define VBYTES 64
#else
#define VBYTES 32
#endif
#define VL ((int)(VBYTES / sizeof(real)))
typedef real vec __attribute__((vector_size(VBYTES)));
int rt_vector_bytes(void) { return VBYTES; }

/* e^x for |x| <= 708: x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor series to r^13 */
static inline double ar_exp(double x) {
    x = x < -708.0 ? -708.0 : (x > 708.0 ? 708.0 : x);
    double n = floor(x * 1.4426950408889634 + 0.5);
    double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double q = 1.0 / 6227020800.0;
    q = 1.0 / 479001600.0 + r * q;  q = 1.0 / 39916800.0 + r * q;  q = 1.0 / 3628800.0 + r * q;
    q = 1.0 / 362880.0 + r * q;     q = 1.0 / 40320.0 + r * q;     q = 1.0 / 5040.0 + r * q;
    q = 1.0 / 720.0 + r * q;        q = 1.0 / 120.0 + r * q;       q = 1.0 / 24.0 + r * q;
    q = 1.0 / 6.0 + r * q;          q = 0.5 + r * q;               q = 1.0 + r * q;
    q = 1.0 + r * q;
    int64_t bits = ((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return q * scale;
}
static inline double ar_tanh(double x) {
    double t = 1.0 - 2.0 / (ar_exp(2.0 * fabs(x)) + 1.0);
    return x < 0 ? -t : t;
}
static inline double ar_sigmoid(double x) { return 1.0 / (1.0 + ar_exp(-x)); }

/* y (B, co) = x (B, k) W (+ bias) for items [j0, j1). wp: W (k, co) packed in blocks of VL output
   channels, block b's rows at wp + b k VL, zero-padded to whole blocks. Up to eight items at a
   time (one kernel per count, so the accumulators stay in registers), two blocks at a time: for
   eight items 16 vector accumulators, 2 vector loads and 8 broadcasts per k. */
#define KERNEL(NJ)                                                                                      \
static void product_##NJ(int co, int k, const real *wp, const real *x, real *y, const real *bias) {   \
    int blocks = (co + VL - 1) / VL;                                                                    \
    for (int b = 0; b < blocks; b += 2) {                                                               \
        int two = b + 1 < blocks;                                                                       \
        const real *w0 = wp + (idx)b * k * VL, *w1 = two ? w0 + (idx)k * VL : w0;                       \
        vec a0[NJ], a1[NJ];                                                                             \
        for (int j = 0; j < NJ; j++) { a0[j] = (vec){0}; a1[j] = (vec){0}; }                            \
        for (int t = 0; t < k; t++) {                                                                   \
            vec u, v;                                                                                   \
            memcpy(&u, w0 + (idx)t * VL, sizeof u);                                                     \
            memcpy(&v, w1 + (idx)t * VL, sizeof v);                                                     \
            for (int j = 0; j < NJ; j++) { real s = x[(idx)j * k + t]; a0[j] += u * s; a1[j] += v * s; } \
        }                                                                                               \
        for (int h = 0; h < 1 + two; h++) {                                                             \
            int c0 = (b + h) * VL, rows = co - c0 < VL ? co - c0 : VL;                                  \
            for (int j = 0; j < NJ; j++) {                                                              \
                real *out = y + (idx)j * co + c0;                                                       \
                vec a = h ? a1[j] : a0[j];                                                              \
                for (int r = 0; r < rows; r++) out[r] = a[r] + (bias ? bias[c0 + r] : 0);              \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
}
KERNEL(1) KERNEL(2) KERNEL(3) KERNEL(4) KERNEL(5) KERNEL(6) KERNEL(7) KERNEL(8)
typedef void (*kernel_t)(int, int, const real *, const real *, real *, const real *);
static const kernel_t KERNELS[9] = {0, product_1, product_2, product_3, product_4, product_5, product_6, product_7, product_8};
#define JB 8
static void product(int co, int k, const real *wp, const real *x, real *y, const real *bias, idx j0, idx j1) {
    for (idx ja = j0; ja < j1; ja += JB) {
        int nj = (int)(j1 - ja < JB ? j1 - ja : JB);
        KERNELS[nj](co, k, wp, x + ja * k, y + ja * co, bias);
    }
}

/* v (B, C) = tanh(a[:, :C]) * sigmoid(a[:, C:]) for items [j0, j1) of a (B, 2C) `a` */
static void gate(const real *a, real *v, idx width, idx j0, idx j1) {
    for (idx j = j0; j < j1; j++)
        for (idx c = 0; c < width; c++)
            v[j * width + c] = (real)(ar_tanh(a[j * 2 * width + c]) * ar_sigmoid(a[j * 2 * width + width + c]));
}

/* v = f(x) elementwise over [i0, i1): f 0 relu, 1 tanh, 2 sigmoid, 3 elu */
static void activation(int f, const real *x, real *v, idx i0, idx i1) {
    switch (f) {
    case 0: for (idx i = i0; i < i1; i++) v[i] = x[i] > 0 ? x[i] : 0; break;
    case 1: for (idx i = i0; i < i1; i++) v[i] = (real)ar_tanh(x[i]); break;
    case 2: for (idx i = i0; i < i1; i++) v[i] = (real)ar_sigmoid(x[i]); break;
    default: for (idx i = i0; i < i1; i++) v[i] = x[i] > 0 ? x[i] : (real)(ar_exp(x[i]) - 1.0); break;
    }
}


/* The interpreter. A program is an int64 header {code, code length, arrays, value registers,
   value count, items B, positions P}; its code a list of instructions {opcode, operand count,
   operands...}. A source operand is 4 integers {mode, a, b, c}: 0 the value register a; 1 the
   ring in array a, of b slots of c reals, at p's slot; 2 the array a; 3 the array a at p * b. */
enum { GUARD = 1, PRODUCT, GATHER, RING_WRITE, SHIFT, EMBED, ACT, ADD, MUL, CONCAT, GATE, SELECT, STACK, FILL, ALIAS, NORM,
       ATTEND, BURST };

/* v (B, C) = layer normalisation of s over the channels of each group (channel c in group
   c mod G), eps 1e-5, times w plus b, for items [j0, j1) */
static void norm(const real *s, real *v, const real *w, const real *b, idx width, idx groups, idx j0, idx j1) {
    idx per = width / groups;
    for (idx j = j0; j < j1; j++)
        for (idx g = 0; g < groups; g++) {
            const real *x = s + j * width;
            double mean = 0, var = 0;
            for (idx c = g; c < width; c += groups) mean += x[c];
            mean /= (double)per;
            for (idx c = g; c < width; c += groups) var += (x[c] - mean) * (x[c] - mean);
            double inv = 1.0 / sqrt(var / (double)per + 1e-5);
            for (idx c = g; c < width; c += groups) v[j * width + c] = (real)((x[c] - mean) * inv * w[c] + b[c]);
        }
}

/* One position's attention for items [j0, j1): query q (B, H d G), keys and values at key
   positions lo..hi-1 (arrays of (B, C) per position: a ring holding the whole event, or a
   constant), `mask` (G, L, G) of the allowed tokens or 0 for all. Channel c of a token's vector is
   (head h, element e, group g) with c = (h * d + e) * G + g; a query with no allowed key is 0. */
static void attend(const real *q, const real *keys, const real *vals, const unsigned char *mask, real *v, idx heads,
                   idx groups, idx d, idx dv, idx lo, idx hi, idx B, idx j0, idx j1) {
    idx ck = heads * d * groups, cv = heads * dv * groups, L = hi - lo, T = L * groups;
    double w[T > 0 ? T : 1], acc[dv > 0 ? dv : 1];
    double scale = 1.0 / sqrt((double)d);
    for (idx j = j0; j < j1; j++)
        for (idx h = 0; h < heads; h++)
            for (idx g = 0; g < groups; g++) {
                const real *qj = q + j * ck + h * d * groups + g;
                double top = -INFINITY;
                for (idx l = 0; l < L; l++) {
                    const real *k = keys + (lo + l) * ck * B + j * ck + h * d * groups;
                    for (idx g2 = 0; g2 < groups; g2++) {
                        if (mask && !mask[(g * L + l) * groups + g2]) { w[l * groups + g2] = -INFINITY; continue; }
                        const real *kg = k + g2;
                        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;   /* four chains: the adds overlap */
                        idx e = 0;
                        for (; e + 4 <= d; e += 4) {
                            s0 += (double)qj[e * groups] * kg[e * groups];
                            s1 += (double)qj[(e + 1) * groups] * kg[(e + 1) * groups];
                            s2 += (double)qj[(e + 2) * groups] * kg[(e + 2) * groups];
                            s3 += (double)qj[(e + 3) * groups] * kg[(e + 3) * groups];
                        }
                        for (; e < d; e++) s0 += (double)qj[e * groups] * kg[e * groups];
                        double sum = ((s0 + s1) + (s2 + s3)) * scale;
                        w[l * groups + g2] = sum;
                        if (sum > top) top = sum;
                    }
                }
                real *out = v + j * cv + h * dv * groups + g;
                if (top == -INFINITY) {
                    for (idx e = 0; e < dv; e++) out[e * groups] = 0;
                    continue;
                }
                double total = 0;
                for (idx t = 0; t < T; t++) {
                    w[t] = w[t] == -INFINITY ? 0.0 : ar_exp(w[t] - top);
                    total += w[t];
                }
                for (idx e = 0; e < dv; e++) acc[e] = 0;
                for (idx t = 0; t < T; t++) {                  /* token by token: each value row read once, in order */
                    double weight = w[t];
                    if (weight == 0) continue;
                    const real *x = vals + (lo + t / groups) * cv * B + j * cv + h * dv * groups + t % groups;
                    for (idx e = 0; e < dv; e++) acc[e] += weight * x[e * groups];
                }
                for (idx e = 0; e < dv; e++) out[e * groups] = (real)(acc[e] / total);
            }
}

static inline real *source(const idx *s, void **A, real **V, idx p) {
    switch (s[0]) {
    case 0: return V[s[1]];
    case 1: return (real *)A[s[1]] + (p % s[2]) * s[3];
    case 2: return (real *)A[s[1]];
    default: return (real *)A[s[1]] + p * s[2];
    }
}

static void run(const idx *h, idx q, idx j0, idx j1) {
    const idx *code = (const idx *)h[0];
    idx n = h[1], nv = h[4], B = h[5], P = h[6];
    void **A = (void **)h[2];
    real *V[nv > 0 ? nv : 1];
    memcpy(V, (real **)h[3], sizeof(real *) * (size_t)nv);
    idx p = 0, burst_pc = -1, burst_end = -1, burst_left = 0;
    for (idx pc = 0;;) {
        if (pc == burst_end && burst_left > 0) {       /* a row burst: its block again, one position to the left */
            burst_left--;
            p--;
            pc = burst_pc;
        }
        if (pc >= n) break;
        idx op = code[pc];
        const idx *a = code + pc + 2;
        pc += 2 + code[pc + 1];
        switch (op) {
        case GUARD:                                    /* {lag, code length of the block} */
            p = q - a[0];
            if (p < 0 || p >= P) pc += a[1];
            break;
        case BURST:                                    /* {lag, row width, code length of the block}: at the step the */
            p = q - a[0];                              /* row's last position is final, the block at each position of */
            if (p < 0 || p >= P || (p + 1) % a[1]) {   /* the row, right to left */
                pc += a[2];
                break;
            }
            burst_pc = pc;
            burst_end = pc + a[2];
            burst_left = a[1] - 1;
            break;
        case PRODUCT:                                  /* {co, k, packed W, bias or -1, dst, source} */
            product((int)a[0], (int)a[1], (real *)A[a[2]], source(a + 5, A, V, p), V[a[4]],
                    a[3] >= 0 ? (real *)A[a[3]] : 0, j0, j1);
            break;
        case GATHER: {                                 /* {taps, slot table, ring, ci, dst array} */
            idx taps = a[0], ci = a[3], k = taps * ci;
            const idx *slots = (const idx *)A[a[1]] + p * taps;
            real *ring = (real *)A[a[2]], *dst = (real *)A[a[4]];
            for (idx t = 0; t < taps; t++) {
                const real *s = ring + slots[t] * ci * B;
                for (idx j = j0; j < j1; j++) memcpy(dst + j * k + t * ci, s + j * ci, sizeof(real) * (size_t)ci);
            }
            break;
        }
        case RING_WRITE: {                             /* {value, array, slots (0: one slot per position), width} */
            real *slot = (real *)A[a[1]] + (a[2] ? p % a[2] : p) * a[3] * B;
            memcpy(slot + j0 * a[3], V[a[0]] + j0 * a[3], sizeof(real) * (size_t)((j1 - j0) * a[3]));
            break;
        }
        case SHIFT:                                    /* {dst, slot table, ring, width} */
            V[a[0]] = (real *)A[a[2]] + ((const idx *)A[a[1]])[p] * a[3] * B;
            break;
        case EMBED: {                                  /* {dst, width, groups, level ring, slots, tables...} */
            idx width = a[1], groups = a[2];
            const idx *levels = (const idx *)A[a[3]] + (p % a[4]) * groups * B;
            real *v = V[a[0]];
            for (idx j = j0; j < j1; j++)
                for (idx c = 0; c < width; c++) {
                    real sum = 0;
                    for (idx g = 0; g < groups; g++) sum += ((real *)A[a[5 + g]])[levels[j * groups + g] * width + c];
                    v[j * width + c] = sum;
                }
            break;
        }
        case ACT:                                      /* {function, dst, width, source} */
            activation((int)a[0], source(a + 3, A, V, p), V[a[1]], j0 * a[2], j1 * a[2]);
            break;
        case ADD: case MUL: {                          /* {count, dst, width, sources...} */
            real *v = V[a[1]];
            idx lo = j0 * a[2], hi = j1 * a[2];
            const real *s0 = source(a + 3, A, V, p);
            for (idx i = lo; i < hi; i++) v[i] = s0[i];
            for (idx m = 1; m < a[0]; m++) {
                const real *s = source(a + 3 + 4 * m, A, V, p);
                if (op == ADD) for (idx i = lo; i < hi; i++) v[i] += s[i];
                else for (idx i = lo; i < hi; i++) v[i] *= s[i];
            }
            break;
        }
        case CONCAT: {                                 /* {count, dst, width, (part width, source)...} */
            real *v = V[a[1]];
            idx width = a[2], at = 0;
            for (idx m = 0; m < a[0]; m++) {
                const idx *e = a + 3 + 5 * m;
                const real *s = source(e + 1, A, V, p);
                for (idx j = j0; j < j1; j++) memcpy(v + j * width + at, s + j * e[0], sizeof(real) * (size_t)e[0]);
                at += e[0];
            }
            break;
        }
        case GATE:                                     /* {dst, width, source} */
            gate(source(a + 2, A, V, p), V[a[0]], a[1], j0, j1);
            break;
        case SELECT: {                                 /* {dst, width, source width, index, source} */
            const real *s = source(a + 4, A, V, p);
            const idx *index = (const idx *)A[a[3]];
            real *v = V[a[0]];
            for (idx j = j0; j < j1; j++)
                for (idx c = 0; c < a[1]; c++) v[j * a[1] + c] = s[j * a[2] + index[c]];
            break;
        }
        case STACK: {                                  /* {value, stack array, stack width, first column, width} */
            real *stack = (real *)A[a[1]];
            for (idx j = j0; j < j1; j++) memcpy(stack + j * a[2] + a[3], V[a[0]] + j * a[4], sizeof(real) * (size_t)a[4]);
            break;
        }
        case FILL: {                                   /* {dst, width, bias or -1} */
            real *v = V[a[0]];
            for (idx j = j0; j < j1; j++)
                for (idx c = 0; c < a[1]; c++) v[j * a[1] + c] = a[2] >= 0 ? ((real *)A[a[2]])[c] : 0;
            break;
        }
        case ALIAS:                                    /* {dst, source} */
            V[a[0]] = source(a + 1, A, V, p);
            break;
        case NORM:                                     /* {dst, width, groups, weight, bias, source} */
            norm(source(a + 5, A, V, p), V[a[0]], (real *)A[a[3]], (real *)A[a[4]], a[1], a[2], j0, j1);
            break;
        case ATTEND: {                                 /* {dst, heads, groups, d, dv, keys, values, lo, hi, mask at, masks, query} */
            idx at = ((const idx *)A[a[9]])[p];
            attend(source(a + 11, A, V, p), (real *)A[a[5]], (real *)A[a[6]],
                   at >= 0 ? (const unsigned char *)A[a[10]] + at : 0, V[a[0]], a[1], a[2], a[3], a[4],
                   ((const idx *)A[a[7]])[p], ((const idx *)A[a[8]])[p], B, j0, j1);
            break;
        }
        }
    }
}

#define MAX_THREADS 64
#define SPINS 4000           /* pauses before yielding the core (a step's Python gap is 30-100 us) */
#define YIELDS 20000         /* yields before sleeping (sampling has ended, or Python is busy) */
#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#else
#define PAUSE() ((void)0)
#endif
static int threads = 1, active = 1, started = 0;   /* workers + 1; how many a step uses */
static pid_t owner = 0;
static atomic_long sequence = 0;
static atomic_int finished = 0;
static idx job_q, job_items;
static const idx *job_program;
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER, run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static long first_seen[MAX_THREADS];    /* the sequence when each worker was started: its first job is the next */

static void part(int t) {
    idx j0 = job_items * t / active, j1 = job_items * (t + 1) / active;
    run(job_program, job_q, j0, j1);
}

static void *worker(void *arg) {
    int t = (int)(intptr_t)arg;
    long seen = first_seen[t];
    for (;;) {
        long now;
        int spins = 0;
        while ((now = atomic_load_explicit(&sequence, memory_order_acquire)) == seen) {
            if (++spins < SPINS) { PAUSE(); continue; }
            if (spins < SPINS + YIELDS) { sched_yield(); continue; }
            pthread_mutex_lock(&wake_lock);
            while (atomic_load(&sequence) == seen) pthread_cond_wait(&wake, &wake_lock);
            pthread_mutex_unlock(&wake_lock);
        }
        seen = now;
        if (t >= active) continue;
        part(t);
        atomic_fetch_add_explicit(&finished, 1, memory_order_release);
    }
    return 0;
}

/* Make n threads available (n - 1 workers), starting workers as needed (a forked child starts
   its own). Returns how many are. */
int rt_start_threads(int n) {
    pthread_mutex_lock(&run_lock);
    if (n > MAX_THREADS) n = MAX_THREADS;
    if (n < 1) n = 1;
    if (!started || owner != getpid()) {
        threads = 1;
        started = 1;
        owner = getpid();
    }
    for (int t = threads; t < n; t++) {
        pthread_t id;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        first_seen[t] = atomic_load(&sequence);     /* no step runs meanwhile: run_lock is held */
        if (pthread_create(&id, &attr, worker, (void *)(intptr_t)t) != 0) break;
        threads++;
    }
    pthread_mutex_unlock(&run_lock);
    return n < threads ? n : threads;
}

/* Run a program at step q over its items on n threads, each on its own share of the items. */
void rt_step(const idx *program, idx q, int n) {
    idx items = program[5];
    pthread_mutex_lock(&run_lock);                 /* one step at a time in the process */
    if (n > threads) n = threads;
    if (n > items) n = (int)items;
    if (n <= 1 || owner != getpid()) {
        run(program, q, 0, items);
        pthread_mutex_unlock(&run_lock);
        return;
    }
    active = n;
    job_program = program; job_q = q; job_items = items;
    atomic_store(&finished, 0);
    pthread_mutex_lock(&wake_lock);
    atomic_fetch_add_explicit(&sequence, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&wake_lock);
    part(0);
    while (atomic_load_explicit(&finished, memory_order_acquire) < active - 1) PAUSE();
    pthread_mutex_unlock(&run_lock);
}

/* Sampling positions [p0, p1) of a model with one channel group, from step q on: the steps its
   output at p needs (lag < 0: those up to p + lag; otherwise those before p, then `redo` at p,
   which computes what the output reads through step p's own values), then each item's element drawn from
   the output's parameters and the noise the caller prepared (kind 0: categorical, the argmax of
   logits / t + Gumbel noise, first maximum; kind 1: Bernoulli, uniform < sigmoid(logit / t)), as a
   level into levels (B, P) and encoded (level * scale + offset) into the data rings (one slot of
   B per position). Returns the next step. The same arithmetic, in the same precision, as the
   numpy draw it replaces. */
idx rt_sample(const idx *program, const idx *redo, idx q, idx p0, idx p1, idx lag, int n, int kind, const real *noise, idx per_element,
              double temperature, const real *out, idx out_slots, idx out_width, real *x_ring, idx x_slots,
              idx *raw_ring, idx raw_slots, idx *levels, double scale, double offset) {
    idx B = program[5], P = program[6];
    real t = (real)temperature;
    for (idx p = p0; p < p1; p++) {
        if (lag < 0) {
            while (q <= p + lag) rt_step(program, q++, n);
        } else {
            while (q < p) rt_step(program, q++, n);
            rt_step(redo, p, n);
        }
        const real *o = out + (p % out_slots) * B * out_width;
        for (idx j = 0; j < B; j++) {
            const real *l = o + j * out_width, *g = noise + ((p - p0) * B + j) * per_element;
            idx level = 0;
            if (kind == 0) {
                real best = (temperature != 1.0 ? l[0] / t : l[0]) + g[0];
                for (idx c = 1; c < per_element; c++) {
                    real v = (temperature != 1.0 ? l[c] / t : l[c]) + g[c];
                    if (v > best) { best = v; level = c; }
                }
            } else {
                real logit = temperature != 1.0 ? l[0] / t : l[0];
                level = g[0] < (real)1.0 / ((real)1.0 + (real)exp(-(double)logit));
            }
            levels[j * P + p] = level;
            x_ring[(p % x_slots) * B + j] = (real)level * (real)scale + (real)offset;
            raw_ring[(p % raw_slots) * B + j] = level;
        }
    }
    return q;
}
"""

class Op:
    """The interpreter's opcodes (RUNTIME's enum)."""
    GUARD, PRODUCT, GATHER, RING_WRITE, SHIFT, EMBED, ACT, ADD, MUL, CONCAT, GATE, SELECT, STACK, FILL, ALIAS, NORM, ATTEND, BURST = range(1, 19)

#: the runtime's activation codes
C_ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "elu": 3}


def lanes(dtype: np.dtype) -> int:
    """Output channels per block of packed weights: one vector of the width the runtime was
    compiled for (64 bytes with AVX-512, else 32)."""
    return int(runtime(dtype).rt_vector_bytes()) // np.dtype(dtype).itemsize


#: the step operations (arspec.primitives.step) the interpreter has instructions for
C_STEP_OPS = frozenset({"read", "gather", "embed", "state", "inside", "product", "act", "add", "mul", "concat", "slice", "gate",
                        "pick", "norm", "attend"})


def c_step_missing(plan: Any) -> str:
    """Why the C step cannot run this plan ('' when it can): step operations it has no instructions for."""
    kinds = sorted({op.kind for c in plan.steps if c.step is not None for op in c.step.ops} - C_STEP_OPS)
    return f"the C step has no instructions for {', '.join(kinds)}" if kinds else ""


def c_step_available(dtype: np.dtype) -> bool:
    """Whether the C step can run here: a float32/float64 model, a compiler that builds the
    runtime (a failure is warned about once, and the numpy step runs), and not switched off by
    ARSPEC_STEP=numpy."""
    if os.environ.get("ARSPEC_STEP", "").lower() == "numpy":
        return False
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)) or compiler() is None:
        return False
    try:
        runtime(dtype)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:     # CacheError is an OSError
        _warn_once(f"cached generation runs the numpy step: the C step's runtime did not build ({error})")
        return False
    return True


@functools.cache
def _warn_once(message: str) -> None:
    import warnings
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def step_threads(batch: int) -> int:
    """Threads for a step at this batch: the cores torch may use (`torch.set_num_threads`) and this
    process may run on, at most one per 4 items (a smaller share costs more than it saves)."""
    import torch
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores, batch // 4))


def runtime(dtype: np.dtype) -> ctypes.CDLL:
    """The runtime library for a dtype (compiled once per machine, loaded once per process)."""
    return _runtime_library(RUNTIME.replace("@REAL@", "double" if np.dtype(dtype) == np.float64 else "float"), tuple(FLAGS))


@functools.lru_cache(maxsize=8)
def _runtime_library(source: str, flags: tuple[str, ...]) -> ctypes.CDLL:
    """`load`, with the runtime's entry points declared once per library."""
    lib = load_library(source, flags)
    lib.rt_step.argtypes, lib.rt_step.restype = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int], None
    lib.rt_start_threads.argtypes, lib.rt_start_threads.restype = [ctypes.c_int], ctypes.c_int
    lib.rt_sample.restype = ctypes.c_longlong
    lib.rt_sample.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int,
                              ctypes.c_int, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_double, ctypes.c_void_p, ctypes.c_longlong,
                              ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p,
                              ctypes.c_double, ctypes.c_double]
    return lib


def packed(weight: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """W (k, co) as the product kernel reads it: blocks of `lanes` output channels (the last
    zero-padded), each block's k rows contiguous."""
    k, co = weight.shape
    width = lanes(dtype)
    blocks = -(-co // width)
    padded = np.zeros((k, blocks * width), dtype=dtype)
    padded[:, :co] = weight
    return np.ascontiguousarray(padded.reshape(k, blocks, width).transpose(1, 0, 2))


class CStepProgram(StepProgram):
    """StepProgram whose `step(q)` and `redo(p)` are one call each into the C interpreter."""

    item_major = True

    def _generate(self, net: Any) -> None:
        self.arrays: list[np.ndarray] = []              # every buffer the instructions name, by index
        self._index: dict[int, int] = {}
        self._registers: dict[str, int] = {c.id: i for i, c in enumerate(self.plan.steps)}
        self._own: list[np.ndarray | None] = [None] * len(self.plan.steps)  # each value's own buffer (None: set by the step)
        self._threads = [1]                             # a list: the step's closure reads the current count
        self._prepared: dict[str, list[int]] = {}
        self._stacks: dict[str, np.ndarray] = {}
        self.code = {"step": self._code(self.plan.steps, net), "redo": self._code(self.redo_calls or [], net)}
        self._runtime = runtime(self.dtype)
        self._values = np.array([a.ctypes.data if a is not None else 0 for a in self._own], dtype=np.uint64)
        self._table_of_arrays = np.array([a.ctypes.data for a in self.arrays], dtype=np.uint64)
        self._headers = {name: np.array([code.ctypes.data, len(code), self._table_of_arrays.ctypes.data, self._values.ctypes.data,
                                         len(self._own), self.batch, self.plan.positions], dtype=np.int64)
                         for name, code in self.code.items()}
        self.source = "\n".join(f"{name}: {code.tolist()}" for name, code in self.code.items())
        self.use_threads(step_threads(self.batch))
        run, threads = self._runtime.rt_step, self._threads
        step, redo = self._headers["step"].ctypes.data, self._headers["redo"].ctypes.data
        self.step = lambda q: run(step, q, threads[0])
        if self.redo_calls is not None:
            self.redo = lambda p: run(redo, p, threads[0])

    @property
    def threads(self) -> int:
        """The threads a step runs on."""
        return self._threads[0]

    def sample(self, q: int, positions: tuple[int, int], kind: int, noise: np.ndarray, temperature: float,
               encoding: tuple[float, float], levels: np.ndarray) -> int:
        """Positions [p0, p1) drawn in C (one channel group): the steps they need from step q (and
        the redo at each position when the output reads it), each item's element from the output and `noise`
        (p1 - p0, B, per element; `Distribution.noise_numpy`), written into `levels` (B, P, int64)
        and the data rings. Returns the next step."""
        plan, lag = self.plan, self.plan.lag[self.plan.output]
        assert noise.dtype == self.dtype and noise.flags.c_contiguous and levels.flags.c_contiguous
        assert levels.dtype == np.int64 and lag is not None and (lag < 0 or self.redo_calls is not None)
        out, x, raw = self.rings[plan.output], self.rings["x"], self.rings["x_raw"]
        return int(self._runtime.rt_sample(self._headers["step"].ctypes.data, self._headers["redo"].ctypes.data, q, positions[0], positions[1], lag, self.threads,
                                           kind, noise.ctypes.data, noise.shape[-1], temperature, out.ctypes.data,
                                           plan.ring[plan.output], out.shape[-1], x.ctypes.data, plan.ring["x"], raw.ctypes.data,
                                           plan.ring["x_raw"], levels.ctypes.data, *encoding))

    def clear(self) -> None:
        super().clear()
        self.use_threads(step_threads(self.batch))       # torch's thread count may have changed since

    def use_threads(self, n: int) -> int:
        """Run this program's steps on n threads (as many as could start); returns the count."""
        self._threads[0] = min(int(self._runtime.rt_start_threads(n)), self.batch)
        return self._threads[0]

    def instructions(self, name: str = "step") -> list[tuple[int, list[int]]]:
        """The code of `step` or `redo` as (opcode, operands) pairs, guards included (for reading)."""
        code, out, pc = self.code[name].tolist(), [], 0
        while pc < len(code):
            out.append((code[pc], code[pc + 2:pc + 2 + code[pc + 1]]))
            pc += 2 + code[pc + 1]
        return out

    def register(self, call_id: str) -> int:
        """The value register of a call."""
        return self._registers[call_id]

    # -- operands --

    def _array(self, array: np.ndarray) -> int:
        """The index of an array the instructions name (kept alive by the program)."""
        assert array.flags.c_contiguous
        key = id(array)
        if key not in self._index:
            self._index[key] = len(self.arrays)
            self.arrays.append(array)
        return self._index[key]

    def _real(self, values: np.ndarray) -> int:
        return self._array(np.ascontiguousarray(values, dtype=self.dtype))

    def _table(self, values: np.ndarray) -> int:
        return self._array(np.ascontiguousarray(values, dtype=np.int64))

    def _value(self, c: Any) -> int:
        """The register of a call's value, given a buffer of its own."""
        register = self._registers[c.id]
        if self._own[register] is None:
            self._own[register] = np.zeros(c.channels * self.batch, dtype=self.dtype)
        return register

    def _source(self, c: Any, i: int) -> list[int]:
        """The 4-integer source operand of argument i of call c."""
        arg, how = c.args[i], self.plan.reads[(c.id, i)]
        if how == "local":
            return [0, self._registers[arg], 0, 0]
        if how == "constant":
            value = self.constants[arg]
            return [2, self._array(value), 0, 0] if value.ndim == 2 else [3, self._array(value), value.shape[1] * value.shape[2], 0]
        return [1, self._array(self.rings[arg]), self.plan.ring[arg], self.plan.channels(arg) * self.batch]

    # -- code --

    def _code(self, calls: list[Any], net: Any) -> np.ndarray:
        code: list[int] = []
        block: list[int] = []
        current = None
        for c in calls:
            if c.id in self.plan.burst_lag:            # a row at a time, right to left (see StepPlan.burst_lag)
                if current is not None:
                    code += [Op.GUARD, 2, current, len(block), *block]
                row = self._prepare(c, net)
                code += [Op.BURST, 3, self.plan.burst_lag[c.id], self.plan.width, len(row), *row]
                current, block = None, []
                continue
            if self.plan.lag[c.id] != current:
                if current is not None:
                    code += [Op.GUARD, 2, current, len(block), *block]
                current, block = self.plan.lag[c.id], []
            block += self._prepare(c, net)
        if current is not None:
            code += [Op.GUARD, 2, current, len(block), *block]
        return np.array(code, dtype=np.int64)

    def _prepare(self, c: Any, net: Any) -> list[int]:
        if c.id not in self._prepared:              # a call in both the step and the redo is prepared once
            self._prepared[c.id] = self._instructions(c, net)
        return self._prepared[c.id]

    @staticmethod
    def _op(opcode: int, *operands: int) -> list[int]:
        return [opcode, len(operands), *operands]

    def _instructions(self, c: Any, net: Any) -> list[int]:
        code = self._compute(c, net, c.channels)
        if c.id in self.plan.ring:
            code += self._op(Op.RING_WRITE, self._registers[c.id], self._array(self.rings[c.id]), self.plan.ring[c.id], c.channels)
        if self.record and c.id == self.plan.output:
            code += self._op(Op.RING_WRITE, self._registers[c.id], self._array(self._full), 0, c.channels)  # type: ignore[arg-type]
        return code

    def _stack_term(self, c: Any, total: str, lo: int, hi: int) -> list[Any]:
        stack = self._stack_inputs(total)
        return self._op(Op.STACK, self._registers[c.args[0]], self._array(stack), stack.shape[1], lo, hi - lo)

    def _scratch(self, name: str, width: int | None) -> int:
        """A register for a value inside a call (a declared step's intermediate): with a buffer of
        `width` channels, or None when an instruction points it into a ring."""
        register = len(self._own)
        self._registers[name] = register
        self._own.append(None if width is None else np.zeros(width * self.batch, dtype=self.dtype))
        return register

    def _declared(self, c: Any, net: Any, width: Any = None) -> list[Any]:
        """A primitive declared by its step (arspec.primitives.step), lowered op by op to the
        interpreter's instructions: a read or a state read points a register at a ring slot (SHIFT),
        a product concatenates its parts and multiplies by the packed (masked) weight, activations,
        sums, products, concatenation and channel ranges map to their instructions. No
        primitive-specific code: what the numpy step evaluates, in the same order."""
        program, key = c.step, c.id
        code: list[int] = []
        values: list[list[int]] = []                       # each step value as a source operand
        for k, op in enumerate(program.ops):
            name, width = f"{key}#{k}", op.channels
            if op.kind in ("read", "gather"):                 # a read is a gather of one tap
                if self.plan.reads[(c.id, op.arg)] != "ring":       # a value of this step or a constant, at p itself
                    values.append(self._source(c, op.arg))
                    continue
                offsets = (op.offset,) if op.kind == "read" else op.offsets
                slots, ring = self._table(self.plan.tap_slots(c, op.arg, offsets)), self._array(self.rings[c.args[op.arg]])
                if len(offsets) == 1:                           # one tap: a register pointed at its ring slot, no copy
                    register = self._scratch(name, None)
                    code += self._op(Op.SHIFT, register, slots, ring, width)
                    values.append([0, register, 0, 0])
                    continue
                gathered = self._array(np.zeros(width * self.batch, dtype=self.dtype))          # (B, taps x Ci)
                code += self._op(Op.GATHER, len(offsets), slots, ring, self.plan.channels(c.args[op.arg]), gathered)
                values.append([2, gathered, 0, 0])
                continue
            if op.kind == "embed":                          # per channel group, a (levels, C) table indexed by the level at p
                table = self._tensor(c, op.weight, net)
                if op.mask:
                    table = table * self._tensor(c, op.mask, net)[:, None, :]
                register = self._scratch(name, width)
                raw = c.args[op.arg]
                code += self._op(Op.EMBED, register, width, table.shape[0], self._array(self.rings[raw]), self.plan.ring[raw],
                                 *[self._real(table[g]) for g in range(table.shape[0])])
                values.append([0, register, 0, 0])
                continue
            if op.kind == "inside":                         # a constant (P, B, 1) array read at p
                values.append([3, self._array(self._inside_rows(op.offset)), self.batch, 0])
                continue
            if op.kind == "state":
                register = self._scratch(name, None)
                code += self._op(Op.SHIFT, register, self._table(self.plan.state_slots(c, op.offset)), self._array(self.rings[key]), width)
            elif op.kind == "act" and op.fn == "identity":
                values.append(values[op.inputs[0]])
                continue
            else:
                register = self._scratch(name, width)
                code += self._declared_op(c, net, op, register, [values[i] for i in op.inputs],
                                          [program.ops[i].channels for i in op.inputs])
            values.append([0, register, 0, 0])
        return code + self._op(Op.ALIAS, self._registers[key], *values[program.output])

    def _declared_op(self, c: Any, net: Any, op: Any, register: int, sources: list[list[int]], widths: list[int]) -> list[int]:
        """One computing op of a declared step into `register`, from its operands' sources."""
        width = op.channels
        if op.kind == "product":
            column, code = sources[0], []
            if len(sources) > 1:                            # the parts side by side, then one product
                joined = self._scratch(f"{c.id}#{register}:parts", sum(widths))
                code = self._op(Op.CONCAT, len(sources), joined, sum(widths), *[x for w, s in zip(widths, sources) for x in (w, *s)])
                column = [0, joined, 0, 0]
            weight = self._tensor(c, op.weight, net)
            if op.mask:
                weight = weight * self._tensor(c, op.mask, net)
            bias = self._real(self._tensor(c, op.bias, net)) if op.bias else -1
            return code + self._op(Op.PRODUCT, width, sum(widths), self._real(packed(op.matrix(weight).T, self.dtype)), bias, register, *column)
        if op.kind == "act":
            return self._op(Op.ACT, C_ACTIVATIONS[op.fn], register, width, *sources[0])
        if op.kind in ("add", "mul"):
            return self._op(Op.ADD if op.kind == "add" else Op.MUL, len(sources), register, width, *[x for s in sources for x in s])
        if op.kind == "concat":
            return self._op(Op.CONCAT, len(sources), register, width, *[x for w, s in zip(widths, sources) for x in (w, *s)])
        if op.kind == "gate":
            return self._op(Op.GATE, register, width, *sources[0])
        if op.kind == "norm":
            weight, bias = self._real(self._tensor(c, op.weight, net)), self._real(self._tensor(c, op.bias, net))
            return self._op(Op.NORM, register, width, op.groups, weight, bias, *sources[0])
        if op.kind == "attend":
            return self._attend(c, op, register, sources[0], widths[0])
        chosen = op.index if op.kind == "pick" else range(op.start, op.start + width)     # a pick, or a slice's channel range
        return self._op(Op.SELECT, register, width, widths[0], self._table(np.asarray(chosen)), *sources[0])

    def _attend(self, c: Any, op: Any, register: int, query: list[int], width: int) -> list[int]:
        """An attention at p: its keys and values where every position has a slot of its own (a
        ring as long as the event, or a constant made (P, B, C)), the key positions' range and
        the allowed tokens' mask per position (StepPlan.history)."""
        history = self.plan.history(c)
        arrays = [self._array(self._whole_event(c, i)) for i in (op.arg, op.values)]
        masks = [m for m in history.masks if m is not None]
        starts = np.cumsum([0] + [m.size for m in masks])
        at, k = np.full(self.plan.positions, -1, dtype=np.int64), 0
        for p, m in enumerate(history.masks):
            if m is not None:
                at[p], k = starts[k], k + 1
        flat = np.concatenate([m.reshape(-1) for m in masks]).astype(np.uint8) if masks else np.zeros(1, dtype=np.uint8)
        split = op.heads * op.groups
        return self._op(Op.ATTEND, register, op.heads, op.groups, width // split, op.channels // split, *arrays,
                        self._table(history.lo), self._table(history.hi), self._table(at), self._array(flat), *query)

    def _stack_inputs(self, total: str) -> np.ndarray:
        """The side-by-side inputs of a stacked sum, (B, width), made once."""
        if total not in self._stacks:
            width = max(hi for _, hi in self.stacked[total].values())
            self._stacks[total] = np.zeros((self.batch, width), dtype=self.dtype)
        return self._stacks[total]

    def _stacked_sum(self, c: Any, net: Any, co: Any) -> list[Any]:
        """A sum of 1x1 convolutions of local values as one product of the stacked weights."""
        weights, bias = self._term_weights(c, net)
        stacked = np.concatenate(weights, axis=0)
        total_bias = np.broadcast_to(np.asarray(bias, dtype=self.dtype), (co,))
        inputs = self._array(self._stack_inputs(c.id))
        return self._op(Op.PRODUCT, co, stacked.shape[0], self._real(packed(stacked, self.dtype)), self._real(total_bias),
                        self._value(c), 2, inputs, 0, 0)

"""A stack of inverse autoregressive flows over logistic noise (Parallel WaveNet's student, van den
Oord et al. 2017). Flow i reads its input v (the noise, or the previous flow's output) through an
autoregressive network whose one logistic component per element gives a shift mu_t(v_<t) and a
scale s_t(v_<t); its output is v_t * s_t + mu_t. With z ~ Logistic(0, 1), the student's sample x_t
given z_<t is Logistic(mu_tot, s_tot), where s_tot = prod_i s_i and mu_tot = sum_i mu_i prod_{j>i} s_j:
its entropy per step is log s_tot + 2 in closed form, and log q(x) = sum_t log p(z_t) - log s_tot,t."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arspec_torch.armodel import ARModel

LOGISTIC_ENTROPY = 2.0      # entropy of Logistic(0, 1) in nats


def logistic_log_density(x: torch.Tensor) -> torch.Tensor:
    """log of the standard logistic density, stable in both tails."""
    return -x - 2.0 * F.softplus(-x)


class FlowStudent(nn.Module):
    """`flows` applied in order to logistic noise of the event's shape; one parallel pass each."""

    def __init__(self, flows: list[ARModel], objective: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.objective = dict(objective or {"samples": 4, "power": 0.0, "stft": 512, "contrastive": 0.0})
        first = flows[0]
        self.event_shape = first.event_shape
        self.distribution = first.distribution
        self.conditioning = dict(first.conditioning)
        self.agnostic = False

    @property
    def device(self) -> torch.device:
        return self.flows[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.flows[0].dtype

    @property
    def order(self) -> torch.Tensor:
        return self.flows[0].order

    @property
    def num_masks(self) -> int:
        return 1

    def select_mask(self, index: int) -> None:
        """A student has one mask set."""

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of standard logistic noise of the event's shape."""
        device = generator.device if generator is not None else self.device
        u = torch.rand((n, *self.event_shape), generator=generator, device=device).to(self.device, self.dtype)
        u = u.clamp(1e-6, 1 - 1e-6)
        return torch.log(u) - torch.log1p(-u)

    def shift_and_log_scale(self, flow: ARModel, v: torch.Tensor, context: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One flow's shift and log-scale for every element, from its input v (strictly causal)."""
        means, log_scales = flow.distribution.locations_and_log_scales(flow(v, **context))
        return means[..., 0], log_scales[..., 0]

    def transform(self, z: torch.Tensor, **context: torch.Tensor) -> dict[str, torch.Tensor]:
        """The student's output x for noise z, with mu_tot and log s_tot (x = z s_tot + mu_tot
        elementwise) and the log-determinant of dx/dz per item (the sum of every flow's log-scales)."""
        z = z.to(self.device, self.dtype)
        v = z
        mu_tot = torch.zeros_like(z)
        log_s_tot = torch.zeros_like(z)
        for flow in self.flows:
            mu, log_s = self.shift_and_log_scale(flow, v, context)
            v = v * torch.exp(log_s) + mu
            mu_tot = mu_tot * torch.exp(log_s) + mu
            log_s_tot = log_s_tot + log_s
        return {"x": v, "mu": mu_tot, "log_scale": log_s_tot, "log_det": log_s_tot.flatten(1).sum(1)}

    def log_prob_of_transform(self, z: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """log q(x) of the student's sample x = transform(z), (B,): log p(z) - log-determinant."""
        return logistic_log_density(z).flatten(1).sum(1) - out["log_det"]

    def entropy(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over steps of the entropy of x_t given z_<t (closed form), (B,)."""
        return (out["log_scale"] + LOGISTIC_ENTROPY).flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, cache: bool = True, temperature: float = 1.0,
               **context: torch.Tensor) -> torch.Tensor:
        """n samples in one parallel pass per flow (`cache` does not apply: nothing is sequential);
        `temperature` scales the noise."""
        was = self.training
        self.eval()
        try:
            return self.transform(self.noise(n, generator) * float(temperature), **context)["x"]
        finally:
            self.train(was)

    def example_inputs(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.flows[0].example_inputs(batch_size, generator)

    def distillation_terms(self, teacher: ARModel, context: dict[str, torch.Tensor], target: torch.Tensor | None = None,
                           generator: torch.Generator | None = None,
                           other_context: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The spec's distillation objective against `teacher` (see `distillation_terms`)."""
        return distillation_terms(self, teacher, context, self.objective, target, generator, other_context)

    def teacher_problem(self, teacher: ARModel) -> str | None:
        """Why `teacher` cannot teach this student (None when it can): it must give a logistic
        mixture per element, and read x as real values so gradients reach the student's samples."""
        kind = type(teacher.distribution).__name__
        if kind not in ("DiscretizedLogisticMixture", "LogisticMixture"):
            return (f"the teacher's output is a {kind}; distillation needs a (discretized) logistic mixture per element, "
                    f"whose density the student's samples are scored under")
        x = torch.zeros((1, *teacher.event_shape), dtype=teacher.dtype, device=teacher.device, requires_grad=True)
        with torch.enable_grad():
            teacher_parameters(teacher, x, teacher.example_context(1)).sum().backward()
        if x.grad is None or not bool(x.grad.abs().sum() > 0):
            return ("the teacher reads x through class indices (an embedding), so no gradient reaches the student's samples: "
                    "build the teacher's input from x itself (e.g. `shift` by 1, then causal_conv1d)")
        return None

    def log_prob(self, x: torch.Tensor, **context: Any) -> torch.Tensor:
        raise ValueError("a flow student's density of given audio needs a sequential inversion it does not offer; score its "
                         "samples under the teacher instead (bench/sampling.py, or the report of arspec distill)")


def teacher_parameters(teacher: ARModel, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
    """The teacher's output distribution parameters (B, *event, P) for real-valued audio x in [-1, 1],
    differentiable in x: the network reads x's float encoding directly (a teacher reading x through
    an embedding of class indices has no such gradient and is refused by `arspec distill`)."""
    d = teacher.distribution
    classes = d.classes
    raw = torch.round((x.detach().clamp(-1, 1) + 1) * (classes - 1) / 2).long()
    internal = teacher.to_internal(x.unsqueeze(1) if x.dim() == 1 else x)
    raw_internal = teacher.to_internal(raw)
    return teacher.user_params(teacher.net(raw_internal, internal.to(teacher.dtype), teacher._check_context(context)))


def teacher_log_density(teacher: ARModel, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The teacher's continuous density at real x (its logistic mixture before discretization),
    elementwise: log sum_k pi_k Logistic(x; mu_k, s_k)."""
    logits, means, log_scales = teacher.distribution.components(params, None)
    z = (x.unsqueeze(-1) - means) * torch.exp(-log_scales)
    return torch.logsumexp(torch.log_softmax(logits, -1) + logistic_log_density(z) - log_scales, -1)


def power_loss(x: torch.Tensor, target: torch.Tensor, n_fft: int) -> torch.Tensor:
    """The power loss, (B,): the mean squared difference of the log power spectra (STFT with a
    Hann window of n_fft samples, hop n_fft / 4) of x and of the real audio. In the log domain its
    scale does not depend on the loudness or the frame size, so a weight of 1 balances it against
    the KL per sample."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    def log_power(a):
        return torch.log(torch.stft(a, n_fft, hop_length=n_fft // 4, window=window, return_complex=True).abs() ** 2 + 1e-6)
    return ((log_power(x) - log_power(target.to(x.dtype))) ** 2).flatten(1).mean(1)


def distillation_terms(student: FlowStudent, teacher: ARModel, context: dict[str, torch.Tensor], objective: dict[str, Any],
                       target: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       other_context: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Monte-Carlo KL(student || teacher) per item (B,) from one student sample per item: the
    student's entropy in closed form, the cross-entropy under the teacher's output distribution at
    every step given the student's own past, with `samples` draws of x_t from the student per step.
    Also the power loss against `target` and the contrastive term (with `other_context`). `loss`
    is what training minimises: KL per sample + power x power loss - contrastive x its KL per sample."""
    n = next(iter(context.values())).shape[0] if context else (target.shape[0] if target is not None else 1)
    z = student.noise(n, generator)
    out = student.transform(z, **context)

    def cross_entropy(ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        params = teacher_parameters(teacher, out["x"], ctx)                            # reads x_<t only at step t
        draws = student.noise(n * int(objective["samples"]), generator).reshape(int(objective["samples"]), n, *student.event_shape)
        xs = out["mu"].unsqueeze(0) + torch.exp(out["log_scale"]).unsqueeze(0) * draws   # x_t ~ student, given z_<t
        return -torch.stack([teacher_log_density(teacher, params, x) for x in xs]).mean(0).flatten(1).sum(1)

    entropy = student.entropy(out)
    ce = cross_entropy(context)
    steps = out["x"][0].numel()
    terms = {"kl": ce - entropy, "cross_entropy": ce, "entropy": entropy, "x": out["x"]}
    loss = terms["kl"] / steps                                                  # per sample, like the power loss
    if target is not None and objective.get("power", 0) > 0:
        terms["power"] = power_loss(out["x"], target, int(objective["stft"]))
        loss = loss + objective["power"] * terms["power"]
    if other_context is not None and objective.get("contrastive", 0) > 0:
        terms["contrastive"] = cross_entropy(other_context) - entropy
        loss = loss - objective["contrastive"] * terms["contrastive"] / steps
    terms["loss"] = loss
    return terms


"""The verifier of a latent-variable model: each part's guarantee, stated and checked.

- decoder: autoregressive over x *given z* — its own analysis, with z a context input;
- x reaches the decoder only through the decoder's masked path: an input fed from an encoder node
  computed from x is a leak (every element's prediction would see the whole item);
- z comes from the encoder's posterior in training and from the prior when sampling;
- an autoregressive prior over the latent map is analysed like any other model."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from arspec.analysis.report import Report, _problem_json, analyze
from arspec.errors import Problem


@dataclass
class CompositeReport:
    """What `analyze` found for a model of several parts: the parts' reports and the links' checks."""

    name: str
    parts: dict[str, Report]
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    guarantees: list[str] = field(default_factory=list)
    parameters: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def receptive_field(self) -> dict[str, Any]:
        return self.decoder.receptive_field

    @property
    def decoder(self) -> Report:
        """The report of the part whose guarantee is about the data: the decoder (a student: its first
        flow, like CompositeSpec.decoder)."""
        return self.parts.get("decoder") or next(iter(self.parts.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "domain": self.decoder.domain,
            "parameters": self.parameters,
            "errors": [_problem_json(p) for p in self.errors],
            "warnings": [_problem_json(p) for p in self.warnings],
            "guarantees": self.guarantees,
            "parts": {role: report.to_json() for role, report in self.parts.items()},
            "receptive_field": self.receptive_field,
            "blind_spot": self.decoder.blind_spot,
            "analysis_seconds": round(self.seconds, 4),
        }


def _take_part(report: CompositeReport, key: str, part: str, part_report: Report) -> None:
    """Record a part's report under `key`, its problems located under `parts.<part>`."""
    report.parts[key] = part_report
    report.errors += [p.in_part(f"parts.{part}") for p in part_report.errors]
    report.warnings += [p.in_part(f"parts.{part}") for p in part_report.warnings]


def analyze_composite(spec: Any) -> CompositeReport:
    """Statically verify every part of a CompositeSpec and the tensors passed between them."""
    if spec.ir.kind == "flows":
        return analyze_student(spec)
    start = time.perf_counter()
    ir = spec.ir
    roles = ir.roles
    report = CompositeReport(spec.name, {}, parameters=ir.parameters)
    decoder = analyze(ir.decoder_spec)
    _take_part(report, "decoder", roles["decoder"], decoder)
    order = "the decoder's " + ", ".join(o.type for o in ir.decoder_spec.orderings) + " ordering"
    latent_inputs = [link.input for link in ir.links if link.is_latent]
    report.guarantees.append(f"decoder ({roles['decoder']}): autoregressive over x given z ({order}; z enters as "
                             f"{', '.join(latent_inputs)})" + ("" if decoder.ok else " — NOT PROVED, see the errors"))
    for link in ir.links:
        if link.is_latent:
            continue
        assert link.part is not None and link.node is not None
        if ir.reads_data(link.part, link.node):
            report.errors.append(Problem(
                link.location, f"parts.{roles['decoder']}.conditioning.{link.input}.from",
                f"conditioning leak across parts: the decoder's input {link.input!r} is {link.source}, which the encoder computes from x "
                f"without the latent bottleneck; x may reach the decoder only through its masked path and z, so every element's "
                f"prediction would see the whole item (and sampling, which has no x, could not compute it)"))
    report.guarantees.append("x reaches the decoder only through its masked path and z"
                             + ("" if not any(not link.is_latent for link in ir.links) else " — VIOLATED, see the errors"))
    report.guarantees.append(f"z: drawn from the encoder's ({roles['encoder']}) Gaussian posterior q(z | x) in training, "
                             f"from the prior ({roles['prior']}) when sampling")
    if ir.prior_spec is not None:
        prior = analyze(ir.prior_spec)
        _take_part(report, "prior", roles["prior"], prior)
        prior_order = ", ".join(o.type for o in ir.prior_spec.orderings)
        report.guarantees.append(f"prior ({roles['prior']}): autoregressive over the latent map {list(ir.latent_shape)} "
                                 f"({prior_order} ordering)" + ("" if prior.ok else " — NOT PROVED, see the errors"))
    else:
        report.guarantees.append(f"prior ({roles['prior']}): a standard normal over z {list(ir.latent_shape)} (the KL in closed form)")
    report.seconds = time.perf_counter() - start
    return report


def analyze_student(spec: Any) -> CompositeReport:
    """A stack of inverse autoregressive flows: each flow's shift and scale at step t must read only
    the noise before t (strictly) and the conditioning — its own autoregressive analysis, with the
    flow's input as the data. The Jacobian of every flow is then triangular with the scales on its
    diagonal, so the student's log-determinant is the sum of the log-scales."""
    start = time.perf_counter()
    ir = spec.ir
    report = CompositeReport(spec.name, {}, parameters=ir.parameters)
    for name, flow_spec in zip(ir.flow_names, ir.flow_specs):
        part = analyze(flow_spec)
        _take_part(report, name, name, part)
        context = ", ".join(flow_spec.conditioning) or "no context"
        rf = part.receptive_field.get("max_elements", part.receptive_field.get("elements_seen_interior"))
        field = f"; receptive field {rf} steps" if rf is not None else ""
        report.guarantees.append(f"flow {name}: its shift and scale at step t read only the noise before t (strictly causal{field}), "
                                 f"plus {context}" + ("" if part.ok else " — NOT PROVED, see the errors"))
    report.guarantees.append("the student's log-determinant is the sum of its flows' log-scales (each flow's Jacobian is triangular "
                             "with its scales on the diagonal" + (")" if report.ok else "; not established while a flow leaks)"))
    report.guarantees.append("one parallel pass per flow generates a whole sequence from logistic noise")
    report.seconds = time.perf_counter() - start
    return report

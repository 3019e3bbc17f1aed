"""Loading a spec of several parts: the top level, then every part through the ordinary pipeline
(located at `parts.<name>.…`), then the links between parts. Every problem of every part is
collected before anything is raised."""
from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from arspec.composite.ir import CompositeIR, Link
from arspec.composite.models import LATENT, ROLES, VAE_ROLES, CompositeSpec, EncoderPart, StandardNormalPrior
from arspec.errors import Problems
from arspec.ir.lower import NetworkOutput
from arspec.spec.models import REAL_VALUED
from arspec.spec.pydantic_errors import report_validation_error
from arspec.spec.yaml_source import Path, SourceMap, dotted


class PartSource:
    """Locates paths inside one part (a view of the whole spec's SourceMap)."""

    def __init__(self, root: SourceMap, prefix: Path) -> None:
        self.root, self.prefix, self.file = root, tuple(prefix), root.file

    def locate(self, path: Path) -> Any:
        return self.root.locate(self.prefix + tuple(path))


def _collect(inner: Problems, prefix: str, problems: Problems) -> None:
    """Problems found inside a part, their field paths prefixed with the part's path."""
    for p in inner.items:
        placed = p.in_part(prefix)
        problems.add(placed.location, placed.path, placed.message)


class _CompositeLoader:
    def __init__(self, source: SourceMap, problems: Problems) -> None:
        self.source, self.problems = source, problems

    def add(self, path: Path, message: str) -> None:
        self.problems.add(self.source.locate(path), dotted(path), message)

    def roles(self, spec: CompositeSpec) -> dict[str, list[str]] | None:
        """The parts of each role, checked against what the objective needs: an encoder, a prior and
        a decoder for `elbo`, one flow or more for `distillation`."""
        found: dict[str, list[str]] = {}
        for name, part in spec.parts.items():
            role = part.get("role") if isinstance(part, dict) else None
            if role not in ROLES:
                where = ("parts", name, "role") if isinstance(part, dict) and "role" in part else ("parts", name)
                self.add(where, f"a part needs a role: one of {', '.join(ROLES)} (got {role!r})")
                continue
            found.setdefault(role, []).append(name)
        if spec.objective.type == "elbo":
            for role, names in found.items():
                if role == "flow":
                    for name in names:
                        self.add(("parts", name, "role"), "flows belong to a distilled student (objective: {type: distillation}); "
                                                          "a latent-variable model has an encoder, a prior and a decoder")
                for name in names[1:]:
                    self.add(("parts", name, "role"), f"a second {role} (the first is {names[0]!r}); a model has one of each role")
            missing = [r for r in VAE_ROLES if r not in found]
            if missing:
                self.add(("parts",), f"missing part(s) with role {', '.join(missing)}: a latent-variable model has an encoder, a prior and a decoder")
            if spec.latent is None:
                self.add(("latent",), "a latent-variable model (objective: elbo) needs `latent: {shape: [C, ...]}`")
        else:
            for role, names in found.items():
                if role != "flow":
                    for name in names:
                        self.add(("parts", name, "role"), f"a distilled student is made of flows only (got a {role})")
            if "flow" not in found:
                self.add(("parts",), "a distilled student needs at least one part with role: flow")
            if spec.latent is not None:
                self.add(("latent",), "a distilled student has no latent map: its noise has the event's shape")
        return None if self.problems else found

    def model_part(self, spec: CompositeSpec, name: str, event: list[int], network: NetworkOutput | None = None,
                   body: dict[str, Any] | None = None) -> Any:
        """A part written as a spec (role removed; `body` instead of what the file says, for parts
        completed by the loader), its event defaulting to `event`."""
        from arspec.loader import parse_model
        raw = {k: copy.deepcopy(v) for k, v in (body if body is not None else spec.parts[name]).items() if k != "role"}
        raw.setdefault("name", f"{spec.name}.{name}")
        if "event" in raw and isinstance(raw["event"], dict) and raw["event"].get("shape") != event:
            self.add(("parts", name, "event", "shape"), f"this part's event must be {event} (what it models), got {raw['event'].get('shape')}")
            return None
        raw.setdefault("event", {"shape": list(event)})
        raw["params"] = {**spec.params, **(raw.get("params") or {})} if isinstance(raw.get("params", {}), dict) else raw["params"]
        if spec.blocks:
            raw["blocks"] = {**copy.deepcopy(spec.blocks), **(raw.get("blocks") or {})} if isinstance(raw.get("blocks", {}), dict) else raw["blocks"]
        inner = Problems()
        model = parse_model(raw, PartSource(self.source, ("parts", name)), inner, part=True, network_output=network)
        _collect(inner, f"parts.{name}", self.problems)
        return model

    def encoder(self, spec: CompositeSpec, name: str, decoder_raw: dict[str, Any]) -> Any:
        """The encoder: a graph over x lowered like a spec (x encoded as the decoder encodes it),
        whose output must hold the posterior's mean and scale at the latent's resolution."""
        raw = spec.parts[name]
        try:
            EncoderPart.model_validate(raw)
        except ValidationError as err:
            report_validation_error(err, raw, ("parts", name), self.source, self.problems)
            return None
        body = {k: v for k, v in raw.items() if k not in ("role", "description")}
        body["distribution"] = copy.deepcopy(decoder_raw.get("distribution", {"type": "bernoulli"}))
        assert spec.latent is not None
        latent = spec.latent.shape
        want = NetworkOutput((2 * latent[0], *latent[1:]), f"the encoder of a latent {latent} (a mean and a scale per latent element)")
        return self.model_part(spec, name, spec.event.shape, want, body)

    def prior(self, spec: CompositeSpec, name: str) -> tuple[bool, Any]:
        """(ok, the prior's ModelSpec or None for a standard normal)."""
        raw = spec.parts[name]
        if "type" in raw and "graph" not in raw:
            try:
                StandardNormalPrior.model_validate(raw)
            except ValidationError as err:
                report_validation_error(err, raw, ("parts", name), self.source, self.problems)
                return False, None
            return True, None
        assert spec.latent is not None
        model = self.model_part(spec, name, spec.latent.shape)
        if model is None:
            return False, None
        if model.distribution.type not in REAL_VALUED:
            self.add(("parts", name, "distribution", "type"),
                     f"the latent z is real-valued: its prior needs a real-valued distribution ({', '.join(REAL_VALUED)}), "
                     f"got {model.distribution.type}")
            return False, None
        for cond_name, _cond in model.conditioning.items():
            self.add(("parts", name, "conditioning", cond_name), "a prior over z takes no context (z is drawn from it before anything else)")
        return not model.conditioning, model

    def links(self, spec: CompositeSpec, roles: dict[str, str], decoder: Any, encoder: Any) -> list[Link]:
        """The decoder's inputs fed by other parts, checked against what feeds them."""
        out: list[Link] = []
        dname = roles["decoder"]
        assert spec.latent is not None
        latent = spec.latent.shape
        event = decoder.ir.ctx.spatial
        fed_latent = False
        for cname, cond in decoder.conditioning.items():
            src = getattr(cond, "source", None)
            if src is None:
                continue
            path = ("parts", dname, "conditioning", cname)
            loc = self.source.locate(path + ("from",))
            if cond.type != "local":
                self.add(path, "only a local (feature map) input can be fed from another part")
                continue
            spatial = tuple(s // cond.upsample for s in event)
            if src == LATENT:
                fed_latent = True
                if (cond.channels, *spatial) != tuple(latent):
                    self.add(path, f"this input reads the latent {latent}: it needs channels: {latent[0]} and an upsample factor "
                                   f"that takes {latent[1:]} to the event's {list(event)} (got channels {cond.channels}, upsample {cond.upsample})")
                    continue
                out.append(Link(cname, src, None, None, loc))
                continue
            part, _, node = src.partition(".")
            if part != roles["encoder"] or not node:
                self.add(path + ("from",), f"`from:` names {LATENT!r} or a node of the encoder ({roles['encoder']}.<node>), got {src!r}")
                continue
            if node not in encoder.ir.graph or node in ("x",):
                known = ", ".join(n.name for n in encoder.ir.op_nodes())
                self.add(path + ("from",), f"the encoder has no node {node!r} (its nodes: {known})")
                continue
            have = encoder.ir.node(node).type.shape
            if have != (cond.channels, *spatial):
                self.add(path, f"{src} has shape {list(have)}, this input takes {[cond.channels, *spatial]} (channels {cond.channels}, upsample {cond.upsample})")
                continue
            out.append(Link(cname, src, part, node, loc))
        if not fed_latent:
            self.add(("parts", dname, "conditioning"),
                     "the decoder never reads z: give it a local conditioning input with `from: latent` (channels and upsample to fit the latent)")
        return out

    def flows(self, spec: CompositeSpec, names: list[str]) -> list[Any] | None:
        """Each flow: an autoregressive spec over its input noise (the event's shape), whose one
        logistic component per element is the flow's shift and scale; every flow reads the same context."""
        flows: list[Any] = []
        for name in names:
            body = {"distribution": {"type": "logistic_mixture", "mixtures": 1}, **spec.parts[name]}
            model = self.model_part(spec, name, spec.event.shape, body=body)
            if model is None:
                continue
            dist = model.distribution
            if dist.type != "logistic_mixture" or dist.mixtures != 1:
                self.add(("parts", name, "distribution"), "a flow's parameters are a shift and a scale per element: "
                                                          "distribution {type: logistic_mixture, mixtures: 1} (the default)")
                continue
            if any(o.type != "raster" for o in model.orderings):
                self.add(("parts", name, "ordering"), "a flow transforms its noise in time order: ordering {type: raster} (the default)")
                continue
            for cname, cond in model.conditioning.items():
                if getattr(cond, "source", None) is not None:
                    self.add(("parts", name, "conditioning", cname, "from"), "a flow's context comes from the user or the data, not from another part")
            if flows and {k: c.model_dump() for k, c in model.conditioning.items()} != {k: c.model_dump() for k, c in flows[0].conditioning.items()}:
                self.add(("parts", name, "conditioning"), f"every flow reads the same context as the first ({names[0]}: "
                                                          f"{', '.join(flows[0].conditioning) or 'none'})")
            flows.append(model)
        return None if self.problems else flows

    def check_latent(self, spec: CompositeSpec) -> bool:
        if spec.latent is None:
            return True
        event = spec.event.shape
        spatial = event[1:] if len(event) > 1 else event
        latent = spec.latent.shape
        if len(latent) - 1 != len(spatial) or len(event) == 4:
            self.add(("latent", "shape"), f"the latent [channels, *spatial] needs the event's {len(spatial)} spatial axes (event {event}), got {latent}")
            return False
        if any(s % z for s, z in zip(spatial, latent[1:])):
            self.add(("latent", "shape"), f"the latent's spatial sizes {latent[1:]} must divide the event's {spatial}")
            return False
        return True


def parse_composite(data: dict[str, Any], source: SourceMap, problems: Problems, filename: str) -> CompositeSpec | None:
    """A CompositeSpec with its parts lowered (problems added; None when it cannot be built)."""
    raw = copy.deepcopy(data)
    try:
        spec = CompositeSpec.model_validate(raw)
    except ValidationError as err:
        report_validation_error(err, raw, (), source, problems)
        return None
    loader = _CompositeLoader(source, problems)
    found = loader.roles(spec)
    if found is None or not loader.check_latent(spec):
        return None
    if spec.objective.type == "distillation":
        flows = loader.flows(spec, found["flow"])
        if flows is None:
            return None
        spec._ir = CompositeIR(spec.name, tuple(spec.event.shape), spec.objective, {"flow": found["flow"][0]},
                               flows=[f.ir for f in flows], flow_specs=flows, flow_names=list(found["flow"]))
        spec._filename = filename
        return spec
    roles = {role: names[0] for role, names in found.items()}
    assert spec.latent is not None
    decoder = loader.model_part(spec, roles["decoder"], spec.event.shape)
    encoder = loader.encoder(spec, roles["encoder"], spec.parts[roles["decoder"]])
    prior_ok, prior = loader.prior(spec, roles["prior"])
    if decoder is None or encoder is None or not prior_ok or problems:
        return None
    links = loader.links(spec, roles, decoder, encoder)
    if problems:
        return None
    spec._ir = CompositeIR(spec.name, tuple(spec.event.shape), spec.objective, roles, tuple(spec.latent.shape), spec.latent.min_scale,
                           encoder.ir, decoder.ir, prior.ir if prior is not None else None, decoder, prior, links=links)
    spec._filename = filename
    return spec

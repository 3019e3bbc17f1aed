"""`arspec compile`: build the module and print what was built."""
from __future__ import annotations


def summary(spec, report, model) -> str:
    ir = spec.ir
    ordering = ", ".join(o.type for o in spec.orderings)
    steps = int(model.order.max()) + 1
    rf = report.receptive_field
    seen = rf.get("max_elements", rf.get("elements_seen_interior"))
    lines = [
        f"model        {spec.name}",
        f"event        {list(spec.event.shape)} ({ir.ctx.elements:,} elements, {steps:,} generation steps)",
        f"distribution {spec.distribution.type} ({_count(ir.ctx.params_per_element, 'parameter')} per element)",
        f"ordering     {ordering}" + (f", {ir.ctx.masks} mask sets" if ir.ctx.masks > 1 else ""),
        *_conditioning(spec),
        f"parameters   {sum(p.numel() for p in model.parameters()):,}",
        f"ops          {len(ir.op_nodes())} nodes",
        (f"data gate    x only through {', '.join(report.agnostic['gates'])}; every element predicted from the observed ones"
         if report.agnostic else f"receptive    {seen} elements" + (f", extent {rf['extent']}" if rf.get("extent") else "")),
        f"verdict      {'autoregressive' if report.ok else 'NOT autoregressive'}" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""),
    ]
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _conditioning(spec) -> list[str]:
    """One line per conditioning input, with what it takes: a class, or a feature map's shape."""
    from arspec.ordering import internal_event
    spatial = internal_event(spec.event.shape)[1:]
    lines = []
    for name, c in spec.conditioning.items():
        if c.type == "global":
            what = f"global: one class of {c.classes} per item (an integer)"
        else:
            shape = [c.channels, *(s // c.upsample for s in spatial)]
            what = f"local: {shape} per item (channels, then the event's size / upsample {c.upsample}), {c.mode}-upsampled"
        source = f", fed from {c.source}" if getattr(c, "source", None) else ""
        lines.append(f"context      {name}: {what}{source}")
    return lines


def composite_summary(spec, report, model) -> str:
    """A model of several parts: each part's size, then the decoder as for any model."""
    ir = spec.ir
    count = lambda module: sum(p.numel() for p in module.parameters()) if module is not None else 0  # noqa: E731
    if ir.kind == "flows":
        lines = [f"model        {spec.name} (a student of {len(ir.flows)} inverse autoregressive flows over logistic noise)",
                 f"event        {list(spec.event.shape)}; context {', '.join(spec.conditioning) or 'none'}",
                 f"objective    distillation: {spec.objective.samples} draws per step" + (f", power loss x{spec.objective.power}" if spec.objective.power else "")
                 + (f", contrastive x{spec.objective.contrastive}" if spec.objective.contrastive else "")]
        for name, flow_ir, flow, part in zip(ir.flow_names, ir.flows, model.flows, report.parts.values()):
            rf = part.receptive_field.get("max_elements", part.receptive_field.get("elements_seen_interior"))
            lines.append(f"flow         {name}: {count(flow):,} parameters, {len(flow_ir.op_nodes())} nodes, "
                         f"shift and scale read {rf} earlier noise steps")
        lines += [f"parameters   {count(model):,} in all", f"verdict      {'verified' if report.ok else 'NOT verified'}"]
        return "\n".join(lines)
    prior = "standard normal" if ir.prior is None else f"autoregressive, {count(model.prior):,} parameters"
    lines = [
        f"model        {spec.name} (latent-variable: {', '.join(f'{role} {name!r}' for role, name in ir.roles.items())})",
        f"latent       z {list(ir.latent_shape)}, Gaussian posterior; prior {prior}",
        f"encoder      {count(model.encoder):,} parameters, {len(ir.encoder.op_nodes())} nodes",
        f"objective    {spec.objective.type}" + (f", KL warm-up over {spec.objective.kl_warmup} steps" if spec.objective.kl_warmup else ""),
        "decoder:",
        summary(spec.decoder, report.decoder, model.decoder),
        f"parameters   {count(model):,} in all",
        f"verdict      {'verified' if report.ok else 'NOT verified'}",
    ]
    return "\n".join(lines)


def run(args) -> int:
    from arspec import analyze, compile, load_spec
    from arspec.composite.models import CompositeSpec
    spec = load_spec(args.spec, overrides=args.overrides)
    report = analyze(spec)
    model = compile(spec, backend=args.backend, device=args.device)
    print(composite_summary(spec, report, model) if isinstance(spec, CompositeSpec) else summary(spec, report, model))
    if args.output:
        from arspec.checkpoint import save_checkpoint
        save_checkpoint(args.output, model, spec.ir.source, {"kind": "initial"}, backend=args.backend)
        print(f"wrote        {args.output}")
    return 0 if report.ok else 1

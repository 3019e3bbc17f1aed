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
        f"distribution {spec.distribution.type} ({ir.ctx.params_per_element} parameters per element)",
        f"ordering     {ordering}" + (f", {ir.ctx.masks} mask sets" if ir.ctx.masks > 1 else ""),
        f"parameters   {sum(p.numel() for p in model.parameters()):,}",
        f"ops          {len(ir.op_nodes())} nodes",
        (f"data gate    x only through {', '.join(report.agnostic['gates'])}; every element predicted from the observed ones"
         if report.agnostic else f"receptive    {seen} elements" + (f", extent {rf['extent']}" if rf.get("extent") else "")),
        f"verdict      {'autoregressive' if report.ok else 'NOT autoregressive'}" + (f" ({len(report.warnings)} warning(s))" if report.warnings else ""),
    ]
    return "\n".join(lines)


def run(args) -> int:
    from arspec import analyze, compile, load_spec
    spec = load_spec(args.spec, overrides=args.overrides)
    report = analyze(spec)
    model = compile(spec, backend=args.backend, device=args.device)
    print(summary(spec, report, model))
    if args.output:
        from arspec.checkpoint import save_checkpoint
        save_checkpoint(args.output, model, spec.ir.source, {"kind": "initial"}, backend=args.backend)
        print(f"wrote        {args.output}")
    return 0 if report.ok else 1

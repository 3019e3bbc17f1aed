"""`arspec check`: validate, verify statically (and optionally dynamically), one line per spec."""
from __future__ import annotations

import json
import math
import sys

from arspec.cli.main import EXIT_INVALID, EXIT_NOT_AUTOREGRESSIVE, EXIT_OK
from arspec.errors import SpecError


def check_one(path: str, args) -> tuple[int, dict]:
    from arspec import analyze, compile, load_spec
    try:
        spec = load_spec(path, overrides=args.overrides)
    except SpecError as err:
        return EXIT_INVALID, {"spec": path, "status": "invalid", "errors": [str(p) for p in err.problems]}
    report = analyze(spec)
    result = {"spec": path, **report.to_json()}
    if report.errors:
        result["status"] = "not autoregressive"
        return EXIT_NOT_AUTOREGRESSIVE, result
    if args.dynamic:
        from arspec.composite.models import CompositeSpec
        from arspec.dynamic import dynamic_check
        if isinstance(spec, CompositeSpec):
            pairs = autoregressive_parts(spec, compile(spec, backend=args.backend, seed=0))
        else:
            probe_spec = _probe_size(spec, report, path, args.overrides)
            pairs = [(probe_spec, compile(probe_spec, backend=args.backend, seed=0))]
        if args.max_memory:                     # the rows one measuring call stacks (perturbed and reference)
            for _, m in pairs:
                m.memory_budget = args.max_memory
        results = [(s, dynamic_check(s, m, cache=True)) for s, m in pairs]
        failed = [(s, d) for s, d in results if not d.agrees]
        probe_spec, dyn = failed[0] if failed else results[0]
        result["dynamic"] = {"agrees": not failed, "compared": sum(d.compared for _, d in results), "columns": len(dyn.columns),
                             "event": list(probe_spec.event.shape),
                             "missing": dyn.missing[:10], "unexpected": dyn.unexpected[:10],
                             **({"part": probe_spec.name} if len(results) > 1 else {}),
                             **({"mask_problem": dyn.mask_problem} if dyn.mask_problem else {}),
                             **({"cache_problem": dyn.cache_problem} if dyn.cache_problem else {})}
        if not dyn.agrees:
            result["status"] = "dynamic mismatch"
            return EXIT_NOT_AUTOREGRESSIVE, result
    if report.warnings and args.strict:
        result["status"] = "warnings (strict)"
        return EXIT_NOT_AUTOREGRESSIVE, result
    result["status"] = "ok"
    return EXIT_OK, result


def autoregressive_parts(spec, built) -> list[tuple]:
    """The (spec, module) pairs of a model of parts that are autoregressive: a student's flows, or
    a latent-variable model's decoder given z and its autoregressive prior (if any)."""
    if spec.ir.flows:
        return list(zip(spec.ir.flow_specs, built.flows))
    return [(spec.decoder, built.decoder)] + ([(spec.ir.prior_spec, built.prior)] if built.prior is not None else [])


PROBE_ELEMENTS = 4096


def _probe_size(spec, report, path: str, overrides: list[str]):
    """The spec to probe dynamically. A translation-equivariant model (analysed with offsets) that
    is larger than PROBE_ELEMENTS is probed at a size that still holds its whole receptive field:
    the weights do not depend on the size, and every offset the model can read is exercised."""
    from arspec import load_spec
    if spec.ir.ctx.elements <= PROBE_ELEMENTS or report.domain != "offsets" or not report.receptive_field.get("extent"):
        return spec
    lo, hi = report.receptive_field["extent"]
    factor = report.offset_period            # sizes keep every position class (multiscale levels)
    for cond in spec.conditioning.values():
        if cond.type == "local":
            factor = math.lcm(factor, cond.upsample)
    shape = list(spec.event.shape)
    spatial = shape if len(shape) == 1 else shape[1:]
    reduced = []
    for size, a, b in zip(spatial, lo, hi):
        want = (b - a + 1) + 8
        want = -(-want // factor) * factor
        reduced.append(min(size, want))
    multiscale = [o for o in spec.orderings if o.type == "multiscale"]
    if multiscale:                           # square, with the same number of doublings
        reduced = [max(reduced)] * len(reduced)
    new_shape = reduced if len(shape) == 1 else [shape[0], *reduced]
    if new_shape == shape:
        return spec
    extra = [f"ordering.base={reduced[0] // report.offset_period}"] if multiscale else []
    return load_spec(path, overrides=[*overrides, f"event.shape=[{','.join(map(str, new_shape))}]", *extra])


def _line(result: dict) -> str:
    status = result["status"]
    if status == "invalid":
        return f"{result['spec']}: invalid spec"
    rf = result.get("receptive_field", {})
    seen = rf.get("max_elements", rf.get("elements_seen_interior"))
    extra = f", receptive field {seen} elements" if seen is not None else ""
    agnostic = result.get("agnostic")
    if agnostic:
        extra = (f", order-agnostic: x only through the observe gate(s) {', '.join(agnostic['gates']) or '-'}, "
                 f"the mask fed to {', '.join(agnostic['mask_inputs']) or 'nothing'}")
    dyn = result.get("dynamic")
    dyn_text = f", dynamic check agrees on {dyn['compared']:,} pairs at event {dyn['event']}" if dyn and dyn["agrees"] else ""
    return (f"{result['spec']}: {status} ({result['name']}, {result['parameters']:,} parameters{extra}, "
            f"{result['analysis_seconds']:.2f} s{dyn_text})")


def run(args) -> int:
    code = EXIT_OK
    results = []
    for path in args.specs:
        c, result = check_one(path, args)
        code = max(code, c) if code != EXIT_INVALID else code
        if c == EXIT_INVALID:
            code = EXIT_INVALID
        results.append(result)
        if args.json:
            continue
        print(_line(result))
        for g in result.get("guarantees", []):
            print(f"  guarantee: {g}")
        for e in result.get("errors", []):
            print(f"  {e}" if isinstance(e, str) else f"  {e['file']}:{e['line']}:{e['column']}: {e['path']}: {e['message']}")
        for w in result.get("warnings", []):
            print(f"  {w['file']}:{w['line']}:{w['column']}: {w['path']}: warning: {w['message']}")
        dyn = result.get("dynamic")
        if dyn and not dyn["agrees"]:
            print(f"  dynamic check disagrees: predicted but not measured {dyn['missing']}, measured but not predicted {dyn['unexpected']}"
                  + (f"; {dyn['mask_problem']}" if dyn.get("mask_problem") else "")
                  + (f"; {dyn['cache_problem']}" if dyn.get("cache_problem") else ""))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return code

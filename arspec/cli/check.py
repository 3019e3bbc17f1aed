"""`arspec check`: validate, verify statically (and optionally dynamically), one line per spec."""
from __future__ import annotations

import json
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
        from arspec.analysis.dynamic import dynamic_check
        model = compile(spec, backend=args.backend, seed=0)
        dyn = dynamic_check(spec, model)
        result["dynamic"] = {"agrees": dyn.agrees, "compared": dyn.compared, "columns": len(dyn.columns),
                             "missing": dyn.missing[:10], "unexpected": dyn.unexpected[:10]}
        if not dyn.agrees:
            result["status"] = "dynamic mismatch"
            return EXIT_NOT_AUTOREGRESSIVE, result
    if report.warnings and args.strict:
        result["status"] = "warnings (strict)"
        return EXIT_NOT_AUTOREGRESSIVE, result
    result["status"] = "ok"
    return EXIT_OK, result


def _line(result: dict) -> str:
    status = result["status"]
    if status == "invalid":
        return f"{result['spec']}: invalid spec"
    rf = result.get("receptive_field", {})
    seen = rf.get("max_elements", rf.get("elements_seen_interior"))
    extra = f", receptive field {seen} elements" if seen is not None else ""
    dyn = result.get("dynamic")
    dyn_text = f", dynamic check agrees on {dyn['compared']:,} pairs" if dyn and dyn["agrees"] else ""
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
        for e in result.get("errors", []):
            print(f"  {e}" if isinstance(e, str) else f"  {e['file']}:{e['line']}:{e['column']}: {e['path']}: {e['message']}")
        for w in result.get("warnings", []):
            print(f"  {w['file']}:{w['line']}:{w['column']}: {w['path']}: warning: {w['message']}")
        dyn = result.get("dynamic")
        if dyn and not dyn["agrees"]:
            print(f"  dynamic check disagrees: predicted but not measured {dyn['missing']}, measured but not predicted {dyn['unexpected']}")
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return code

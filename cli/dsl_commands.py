"""``prunedsl check`` and ``prunedsl metrics``: the language side, no torch."""
from __future__ import annotations

from ..dsl.library import Library
from .output import output_format, print_json, print_table


def metric_record(metric, group: str) -> dict:
    from ..dsl.operands import OPERANDS
    return {
        "input": metric.source,
        "name": metric.name,
        "text": metric.text(),
        "formula": metric.formula(),
        "pretty": metric.pretty(),
        "latex": metric.latex(),
        "type": {"shape": metric.type.shape, "sign": metric.type.sign},
        "group": group,
        "canonical": metric.canonical(group),
        "requires": sorted(metric.requires),
        "requires_pretty": [OPERANDS[k].pretty for k in sorted(metric.requires)],
    }


def cmd_check(args) -> int:
    from ..api import is_allocation, parse
    library = Library.from_files(args.library)
    if args.allocation or is_allocation(args.formula, library=library):
        return _check_allocation(args, library)
    metric = parse(args.formula, library=library)
    rec = metric_record(metric, args.group)
    if args.json:
        print_json(rec)
        return 0
    rows = [("formula", rec["formula"]), ("pretty", rec["pretty"]), ("latex", rec["latex"]),
            ("type", str(metric.type)), (f"canonical ({args.group})", rec["canonical"]),
            ("requires", ", ".join(rec["requires_pretty"]))]
    if rec["text"] != rec["formula"]:
        rows.insert(1, ("as written", rec["text"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def allocation_record(alloc) -> dict:
    return {"input": alloc.source, "name": alloc.name, "kind": "allocation", "formula": alloc.formula(),
            "pretty": alloc.pretty(), "latex": alloc.latex(), "lam": alloc.lam, "uniform": alloc.uniform,
            "requires": sorted(alloc.requires),
            "pass": "dense forward over the calibration batch" if alloc.needs_scores else
                    "none (weights only)" if alloc.requires - {"depth", "params"} else "none"}


def _check_allocation(args, library: Library) -> int:
    from ..api import parse_allocation
    rec = allocation_record(parse_allocation(args.formula, library=library))
    if args.json:
        print_json(rec)
        return 0
    rows = [("rule", rec["formula"]), ("pretty", rec["pretty"]), ("latex", rec["latex"]),
            ("type", "allocation (per-block sparsity" + (", uniform)" if rec["uniform"] else ")")),
            ("requires", ", ".join(rec["requires"]) or "nothing"), ("statistics pass", rec["pass"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_metrics(args) -> int:
    from ..api import parse, parse_allocation
    from ..dsl.printer import format_number, to_text
    lib = Library.from_files(args.library)

    def entry(name: str, d, parsed) -> dict:
        params = ", ".join(f"{p.name} = {format_number(p.default)}" for p in d.params)
        return {"name": name, "signature": f"{name}({params})" if params else name,
                "definition": to_text(d.body), "formula": parsed.formula(), "pretty": parsed.pretty(),
                "requires": sorted(parsed.requires), "doc": d.doc}

    rows = [{**entry(n, d, m := parse(n, library=lib)), "type": str(m.type)}
            for n, d in lib.of_kind("metric").items()]
    rules = [entry(n, d, parse_allocation(n, library=lib))
             for n, d in lib.of_kind("allocation").items()]
    fmt = output_format(args)
    if fmt == "json":
        print_json({"metrics": rows, "allocations": rules})
        return 0
    print(f"{len(rows)} metrics\n")
    print_table(["metric", "definition", "formula", "type", "source"],
                [[r["signature"], r["definition"], r["pretty"], r["type"], r["doc"]] for r in rows], fmt)
    print(f"\n{len(rules)} allocation rules (prunedsl prune --allocation NAME)\n")
    print_table(["rule", "definition", "formula", "block statistics", "source"],
                [[r["signature"], r["definition"], r["pretty"], ", ".join(r["requires"]) or "–",
                  r["doc"]] for r in rules], fmt)
    return 0

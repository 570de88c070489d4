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
    from ..api import is_allocation, is_structure, parse
    library = Library.from_files(args.library)
    if getattr(args, "structure", False) or (not args.allocation and is_structure(args.formula, library=library)):
        return _check_structure(args, library)
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
    return _print_check(rows, rec)


def _print_check(rows: list[tuple[str, str]], rec: dict) -> int:
    """``prunedsl check``'s aligned key/value lines ("as written" when simplification changed it)."""
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


def structure_record(sm, group: str) -> dict:
    from ..dsl.operands import OPERANDS
    group = "layer" if group == "row" else group  # structures are ranked per layer (or globally)
    return {"input": sm.source, "name": sm.name, "kind": "structure", "text": sm.text(),
            "formula": sm.formula(), "pretty": sm.pretty(), "latex": sm.latex(),
            "type": {"shape": sm.type.shape, "sign": sm.type.sign}, "kinds": sorted(sm.kinds),
            "group": group, "canonical": sm.canonical(group), "requires": sorted(sm.requires),
            "requires_pretty": [OPERANDS[k].pretty for k in sorted(sm.requires)]}


def _check_structure(args, library: Library) -> int:
    from ..api import parse_structure_metric
    sm = parse_structure_metric(args.formula, library=library)
    rec = structure_record(sm, args.group)
    if args.json:
        print_json(rec)
        return 0
    rows = [("structure score", rec["formula"]), ("pretty", rec["pretty"]), ("latex", rec["latex"]),
            ("type", str(sm.type)), ("kinds", ", ".join(rec["kinds"])),
            (f"canonical ({rec['group']})", rec["canonical"]), ("requires", ", ".join(rec["requires_pretty"]))]
    return _print_check(rows, rec)


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
    from ..api import parse_structure_metric
    structures = [{**entry(n, d, sm := parse_structure_metric(n, library=lib)), "kinds": sorted(sm.kinds)}
                  for n, d in lib.of_kind("structure").items()]
    fmt = output_format(args)
    if fmt == "json":
        print_json({"metrics": rows, "allocations": rules, "structures": structures})
        return 0
    print(f"{len(rows)} metrics\n")
    print_table(["metric", "definition", "formula", "type", "source"],
                [[r["signature"], r["definition"], r["pretty"], r["type"], r["doc"]] for r in rows], fmt)
    print(f"\n{len(rules)} allocation rules (prunedsl prune --allocation NAME)\n")
    print_table(["rule", "definition", "formula", "block statistics", "source"],
                [[r["signature"], r["definition"], r["pretty"], ", ".join(r["requires"]) or "–",
                  r["doc"]] for r in rules], fmt)
    print(f"\n{len(structures)} structure scores (one value per MLP channel, head or block; docs/structures.md)\n")
    print_table(["structure score", "definition", "formula", "kinds", "source"],
                [[r["signature"], r["definition"], r["pretty"], ", ".join(r["kinds"]), r["doc"]]
                 for r in structures], fmt)
    return 0

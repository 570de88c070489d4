"""``prunedsl search --structure channels|heads|blocks --ratio R``: search structure scores.

The same engine (``engine.py``: seeds → screen by proxy → full evaluations of the best →
hall of fame, state saved after every evaluation, ``--resume``) with three things swapped,
chosen by ``structure`` in the search's fitness settings (``SearchConfig.fitness``):

- parsing: proposals are structure formulas (``parse_structure_metric`` for the kind),
  deduplicated by their canonical form within a layer (``group="layer"``);
- seeds: the library's structure scores valid for the kind (``magnitude_sp``, ``taylor`` with
  ``--gradients``, ``wanda_sp``, ``flap``, ``saap_fusion`` / ``shortgpt``, ...);
- fitness and proposals: ``structure_fitness.StructureFitness`` (proxy: the consumers'
  output error from cached Gram matrices; full: removal on a copy + validation ppl) and
  ``structure_grammar.StructureProposer`` around the evolve / enumerate proposer.

The report phase (test ppl of the baselines, SparseGPT proper, lineage plots) is for
per-weight metrics; a structure search ends after the search (``--no-report``): evaluate the
winner on test with ``prunedsl prune --structure … --structure-metric "FORMULA"``.

``--structure-blocks START:END`` (channels, heads) plans the removal inside that block range
only, as ``prunedsl prune --structure-blocks`` does, so the winner is searched for the plan it
will be used with.

``--device``, ``--dtype`` and ``--calib-batch`` apply as in ``prunedsl prune --structure``;
``--offload`` is refused there and here (the dense statistics keep every weight on the device).
"""
from __future__ import annotations

import json
import sys
from ..dsl.library import BUILTIN, Library
from ..errors import ConfigError, PruneDSLError, SearchError

KINDS = ("channels", "heads", "blocks")


def parse_structure(text: str, library: Library, kind: str):
    """A checked ``StructureMetric`` valid for ``kind`` (PruneDSLError otherwise)."""
    from ..api import parse_structure_metric
    return parse_structure_metric(text, library=library, kind=kind)


def structure_seeds(library: Library, kind: str) -> list[tuple[str, str]]:
    """(name, text) of the library structure scores valid for ``kind``."""
    out = []
    for name in library.of_kind("structure"):
        try:
            parse_structure(name, library, kind)
        except PruneDSLError:   # e.g. shortgpt for channels
            continue
        out.append((name, name))
    return out


def structure_settings_error(s: dict) -> None:
    kind = s.get("structure")
    if kind not in KINDS:
        raise SearchError(f"--structure must be one of {', '.join(KINDS)}, got {kind!r}")
    ratio = s.get("ratio")
    if ratio is None:
        raise SearchError("--structure needs --ratio R (the fraction of the structures removed)")
    if not 0.0 < float(ratio) < 1.0:
        raise SearchError(f"--ratio must be in (0, 1), got {ratio}")
    if s.get("structure_blocks") is not None:
        if kind == "blocks":
            raise SearchError("--structure-blocks applies to channels and heads, not blocks")
        from ..runtime.block_range import parse_block_range
        try:   # its form now; against the block count once the model is loaded
            parse_block_range(s["structure_blocks"])
        except ConfigError as err:
            raise err.for_cli(SearchError) from None


def make_structure_proposer(s: dict, available, library: Library):
    """The evolve / enumerate proposer over per-weight formulas, under the structure templates."""
    from .cli import make_proposer
    from .structure_grammar import StructureProposer
    if s["proposer"] not in ("evolve", "enumerate"):
        raise SearchError(f"the {s['proposer']} proposer does not propose structure formulas",
                          hint="use --proposer evolve or enumerate with --structure")
    kind = s["structure"]
    inner = make_proposer(s, None, available - {"block_influence"}, library)
    fusion = tuple(name for name, _ in structure_seeds(library, kind)
                   if name != "saap_fusion" and parse_structure(name, library, kind).requires <= available)
    return StructureProposer(inner, kind=kind, fusion_with=fusion if kind != "blocks" else (),
                             seed=s["seed"], parse_structure=lambda t: parse_structure(t, library, kind))


def run_structure_search(args, s: dict) -> int:
    """The structure branch of ``search.cli.cmd_search`` (settings merged and validated there)."""
    from .engine import Engine, SearchConfig
    from .hall import hall_markdown
    from .cli import search_placement
    from .device_state import recording_model_dtype
    from .structure_fitness import StructureFitness, StructureFitnessSettings
    structure_settings_error(s)
    if s.get("offload"):
        raise SearchError("--offload applies to masked pruning only: --structure keeps every layer's weight "
                          "on the device until the scores are taken, so onloading one block at a time would "
                          "not bound device memory", hint="leave out --offload")
    if s["budget"] < 0 or s["full_evals"] < 0 or s["batch"] < 1:
        raise SearchError("--budget and --full-evals must be ≥ 0 and --batch ≥ 1")
    library = Library.from_files(s["library"])
    device, placement = search_placement(s)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    fs = StructureFitnessSettings(model=s["model"], structure=s["structure"], ratio=float(s["ratio"]),
                                  heads_mode=s["heads_mode"], structure_blocks=s.get("structure_blocks"),
                                  nsamples=s["nsamples"], seqlen=s["seqlen"],
                                  val_windows=s["val_windows"], seed=s["seed"], calib_data=s["calib_data"],
                                  data_dir=s["data_dir"], gradients=s["gradients"])
    from .fitness import BASE_STATISTICS
    available = BASE_STATISTICS | ({"G"} if fs.gradients else frozenset()) | {"block_influence"}
    proposer = make_structure_proposer(s, frozenset(available), library)
    config = SearchConfig(output=args.output, proposer=s["proposer"], budget=s["budget"],
                          full_evals=s["full_evals"], batch=s["batch"], max_proposals=s["max_proposals"],
                          library_texts=library.texts, test_windows=s["test_windows"],
                          test_seqlen=s["test_seqlen"], report_top=s["report_top"], report=False,
                          fitness={**fs.to_dict(), "group": "layer"}, cli=s, max_outage=600.0)

    def stderr(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    make_fitness = recording_model_dtype(lambda: StructureFitness(
        fs, log=stderr, library=library, placement=placement, calib_batch=device["calib_batch"]), s)
    engine = Engine(config, make_fitness, proposer, log=(lambda msg: None) if args.quiet else stderr)
    summary = engine.run(resume=args.resume)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, default=str))
        return 0
    best, c = summary["best"], summary["counters"]
    print(f"prunedsl search: {s['model']} | {s['structure']} at ratio {s['ratio']} | {s['proposer']} | "
          f"{c['screened']} screened ({c['seeds']} seeds), {c['duplicates']} deduplicated, "
          f"{c['failed']} failed, {c['full_evals']} full evals | best val ppl "
          + (f"{best['val_ppl']:.3f} ({best['pretty']})" if best else "–"))
    print()
    print(hall_markdown(engine.state.candidates))
    return 0


"""The model card ``README.md`` that ``prunedsl prune --structure … --output DIR`` writes.

The masked card's conventions and code (``modelcard.py``: YAML header, evaluation and
provenance sections), plus what structured removal did: which structures went, by which
score, how much smaller the model is and the new widths its config carries. It is written
from the record saved as ``pruning.json`` beside it, so the two never disagree; the widths
come from the model's config before and after removal (what ``config.json`` says: with
per-block widths, each block's from its ``prunedsl_structure`` record). A model with per-block
widths is a prunedsl-format checkpoint: the card says so first, and how to load it.
"""
from __future__ import annotations

from typing import Any

from ..tables import markdown_table
from .block_range import describe_blocks
from .modelcard import card_header, evaluation_section, per_block_loading_lines, perplexity_row, provenance_section
from .models import text_config
from .results import Calibration
from .width_record import RECORD_KEY, record_of

# The config fields removal changes (channels: intermediate_size; heads: the head counts; blocks:
# num_hidden_layers); the card shows all four, before and after.
WIDTH_FIELDS = ("intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers")
KIND_TAGS = {"channels": "channel-pruning", "heads": "head-pruning", "blocks": "layer-pruning"}
# (one, many, what removing one means) by kind (heads: by heads mode)
_NOUNS = {"channels": ("MLP channel", "MLP channels", ""),
          ("heads", "kv_groups"): ("KV group", "KV groups", ", each with its query heads"),
          ("heads", "query_heads"): ("query head", "query heads", ", the same number from every KV group"),
          "blocks": ("decoder block", "decoder blocks", "")}
_BIAS = {"channels": "the removed channels' mean output over the calibration data is folded into down_proj's bias",
         "heads": "the removed heads' mean output over the calibration data is folded into o_proj's bias"}


def config_widths(model) -> dict[str, int | list[int]]:
    """The width fields of a model's (text) config, as they would be saved; a field with per-block
    widths (``width_record.py``) as the list of every block's."""
    cfg = text_config(model)
    per_block = record_of(model.config) or {}
    out: dict[str, int | list[int]] = {}
    for name in WIDTH_FIELDS:
        if isinstance(per_block.get(name), list):
            out[name] = list(per_block[name])
        elif isinstance(getattr(cfg, name, None), int):
            out[name] = getattr(cfg, name)
    return out


def _nouns(record: dict[str, Any]) -> tuple[str, str, str]:
    kind = record["structure"]
    return _NOUNS[(kind, record["heads_mode"]) if kind == "heads" else kind]


def _removal_rows(record: dict[str, Any]) -> list[list[str]]:
    s, plan = record["structured"], record["structured"]["plan"]
    kind = record["structure"]
    _, many, detail = _nouns(record)
    removed = f"{plan['removed']} of {sum(plan['total'])} {many}"
    if kind == "blocks":
        gone = sorted(set(range(plan["total"][0])) - set(plan["keep"][0]))
        removed += f": block{'s' if len(gone) > 1 else ''} {', '.join(map(str, gone))}"
    elif plan["uniform"]:
        removed += f" ({plan['removed_per_block'][0]} in each of the {len(plan['total'])} blocks)"
    elif plan.get("blocks") and plan["allocation"] == "uniform":
        removed += (f" ({plan['removed_per_block'][plan['blocks'][0]]} in each of the {len(plan['blocks'])} "
                    f"pruned blocks, none in the others)")
    removed += detail
    rows = [["structure", kind + (f" ({record['heads_mode']})" if kind == "heads" else "")],
            ["ratio", f"{record['ratio']:g}"]]
    if kind != "blocks":  # blocks are always ranked over the whole model
        rows.append(["allocation", plan["allocation"]])
        flag = f" (--structure-blocks {record['structure_blocks']})" if record.get("structure_blocks") else ""
        rows.append(["pruned blocks", "all" if not plan.get("blocks") else
                     f"{describe_blocks(plan['blocks'])} of {len(plan['total'])}{flag}"])
    return rows + [
        ["removed", removed], ["parameters", f"{s['params_before']:,} → {s['params_after']:,}"],
        ["decoder parameters", f"{s['decoder_params_before']:,} → {s['decoder_params_after']:,} "
                               f"({s['decoder_fraction_removed']:.2%} removed)"],
        ["bias compensation", f"yes (FLAP): {_BIAS[kind]}" if record["bias_compensation"] else "no"],
        ["calibration", Calibration(**record["calibration"]).describe()]]


def _width(value: int | list[int]) -> str:
    return str(value) if isinstance(value, int) else "per block: " + ", ".join(map(str, value))


def _widths(before: dict[str, int | list[int]], after: dict[str, int | list[int]]) -> list[str]:
    rows = [[name, _width(before[name]), _width(after[name])] for name in WIDTH_FIELDS
            if name in before and name in after]
    if not rows:
        return []
    per_block = any(isinstance(v, list) for v in after.values())
    intro = (f"The config saved here holds the widest block's widths and, in `{RECORD_KEY}`, every "
             "block's (block 0 first):" if per_block else "The config saved here holds the smaller model's shape:")
    return ["## New widths", "", intro, "", markdown_table(["config field", "before", "after"], rows), ""]


def _evaluation(record: dict[str, Any]) -> list[str]:
    rows = []
    if record["ppl"] is not None:
        rows.append(perplexity_row("WikiText-2 test perplexity", record["ppl"], record["eval_windows"], record["seqlen"]))
    if "eval_data" in record:
        ev = record["eval_data"]
        rows.append(perplexity_row(f"perplexity on {ev['source']}", ev["ppl"], ev["eval_windows"], record["seqlen"]))
    return evaluation_section(rows, record.get("zero_shot"))


def structured_model_card(record: dict[str, Any], *, widths_before: dict[str, int], widths_after: dict[str, int],
                          latex: str | None = None, description: str | None = None,
                          command: str | None = None) -> str:
    """The README.md text for a structurally pruned model's directory (``record``: its pruning.json);
    ``latex``: the score's formula in LaTeX, ``description``: its library comment (where it comes from)."""
    r, s = record, record["structured"]
    kind, metric = r["structure"], r["structure_metric"]
    loads = bool(r["loadable_by_transformers"])
    one, many, _ = _nouns(r)
    n = s["plan"]["removed"]
    title = f"{r['model']} with {n} {one if n == 1 else many} removed by {metric}"
    # the Hub offers a transformers snippet for library_name transformers: wrong for per-block widths
    lines = card_header(r["model"], ("structured-pruning", KIND_TAGS[kind]),
                        library_name="transformers" if loads else "prunedsl") + [
        "", f"# {title}", ""]
    if not loads:   # say it before anything else: plain transformers cannot load this directory
        lines += per_block_loading_lines()
    lines += [
        f"prunedsl scored every {one} of `{r['model']}` ({r['model_source']}) "
        f"on the dense model with the structure score below and removed the lowest-scoring ones for real: "
        f"the saved weights are physically smaller ({s['decoder_fraction_removed']:.2%} of the decoder's "
        f"parameters are gone), not masked. `pruning.json` beside this card holds the full record, "
        f"with the kept structures of every block.", ""]
    lines += ["## Structure score", "", f"**{metric}**: {r['structure_metric_doc']}", ""]
    if latex:
        lines += [f"$$ {latex} $$", ""]
    if description:
        lines += [description, ""]
    lines += ["## Removal", "", markdown_table(["", ""], _removal_rows(r)), ""]
    lines += _widths(widths_before, widths_after) + _evaluation(r)
    lines += provenance_section(command, r["torch"], r["python"], loads_with_transformers=loads)
    if loads:   # a per-block checkpoint said how to load it at the top
        lines += ["This directory loads with plain `AutoModelForCausalLM.from_pretrained`: its config "
                  "carries the new widths, no prunedsl code is needed.", ""]
    return "\n".join(lines)

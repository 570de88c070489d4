"""The model card ``README.md`` that ``prunedsl prune --output DIR`` writes beside the weights.

It follows the Hugging Face convention: a YAML header (``base_model``, ``tags``,
``library_name``) that the Hub reads, then Markdown for people: the metric in Unicode
and LaTeX, its canonical form, how much was pruned and how, the calibration data, the
perplexities and zero-shot accuracies measured, and the command that made it.
``pruning.json`` in the same directory stays the machine-readable record; the card is
written from the same result, so the two never disagree. The header, evaluation and
provenance sections are shared with the structured card (``structured_card.py``).
"""
from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..tables import markdown_table
from .results import PruneResult

# The checkpoints behind the aliases (runtime/models.py): the GGUF files are quantized copies of these.
BASE_MODELS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m-it"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TAGS = ("pruned", "prunedsl")


def prunedsl_version() -> str:
    try:
        return version("prunedsl")
    except PackageNotFoundError:  # run from a checkout: read pyproject.toml beside the package
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M) \
            if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


def base_model(model: str) -> str | None:
    """The hub id the pruned model derives from, when it is known (an alias or a hub id)."""
    if model in BASE_MODELS:
        return BASE_MODELS[model]
    if _HUB_ID.match(model) and not Path(model).expanduser().exists():
        return model
    saved = Path(model).expanduser() / "pruning.json"  # pruning a prunedsl output again: its base
    if saved.is_file():
        try:
            return base_model(json.loads(saved.read_text(encoding="utf-8"))["model"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def _yaml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def card_header(model: str, extra_tags: tuple[str, ...] = (), library_name: str = "transformers") -> list[str]:
    """The YAML header the Hub reads: base model (when known), tags, library."""
    lines = ["---"]
    base = base_model(model)
    if base is not None:
        lines.append(f"base_model: {_yaml_string(base)}")
    lines += ["tags:"] + [f"- {t}" for t in TAGS + extra_tags] + [f"library_name: {library_name}", "---"]
    return lines


def per_block_loading_lines() -> list[str]:
    """What a card says first about a prunedsl-format checkpoint (per-block widths, width_record.py)."""
    return ["**This is a prunedsl-format checkpoint with per-block widths.** The blocks have different "
            "widths, which a Hugging Face config cannot hold: `config.json` gives the widest block's "
            "widths and `prunedsl_structure` in it lists every block's. Plain transformers cannot load this "
            "directory: `AutoModelForCausalLM.from_pretrained` stops with a size-mismatch error (with "
            "`ignore_mismatched_sizes=True` it would replace the narrower layers with random weights: "
            "do not). Load it with prunedsl:", "",
            "```sh", "prunedsl eval --model PATH/TO/THIS/DIRECTORY", "```", "",
            "```python", "from prunedsl.runtime.models import load_model",
            "loaded = load_model(\"PATH/TO/THIS/DIRECTORY\")   # loaded.model, loaded.tokenizer", "```", ""]


def _allocation(result: PruneResult) -> list[str]:
    a = result.allocation
    if not a:
        return []
    realized = a.get("realized_block_sparsity") or [None] * len(a["block_sparsity"])
    patterns = a.get("block_pattern") or [None] * len(a["block_sparsity"])
    rows = [[i, f"{s:.4f}", "–" if r is None else f"{r:.4f}"] + ([p] if a.get("block_pattern") else [])
            for i, (s, r, p) in enumerate(zip(a["block_sparsity"], realized, patterns))]
    header = ["block", "sparsity (rule)", "sparsity (pruned)"] + (["N:M"] if a.get("block_pattern") else [])
    return ["## Allocation", "", f"Per-block sparsity from the rule `{a['rule']}` (mean {a['target']:.4f}; "
            f"statistics: {a['statistics_pass']}).", "", markdown_table(header, rows), ""]


def perplexity_row(label: str, ppl: float, windows: int, seqlen: int) -> list[str]:
    return [label, f"{ppl:.3f}", f"{windows} windows of {seqlen} tokens"]


def evaluation_section(rows: list[list[str]], zero_shot: dict[str, Any] | None) -> list[str]:
    """``## Evaluation``: the perplexity rows (``perplexity_row``) and the lm-eval accuracy table."""
    lines = ["## Evaluation", ""]
    lines += [markdown_table(["", "value", "protocol"], rows), ""] if rows else ["Not evaluated.", ""]
    zs = zero_shot
    if zs:
        from .tasks import TABLE_HEADER, table_rows  # formatting only: no lm-eval import
        lines += [f"Zero-shot accuracy (lm-eval {zs['lm_eval']}, {zs['num_fewshot']}-shot"
                  + (f", first {zs['limit']} documents per task" if zs.get("limit") else "") + "):", "",
                  markdown_table(TABLE_HEADER, table_rows(zs)), ""]
    return lines


def provenance_section(command: str | None, torch_version: str, python_version: str,
                       loads_with_transformers: bool = True) -> list[str]:
    """``## How it was made``: the command, the versions and (when it does) how the folder loads."""
    lines = ["## How it was made", ""]
    if command:
        lines += ["```sh", command, "```", ""]
    lines += [f"prunedsl {prunedsl_version()}, torch {torch_version}, Python {python_version}.", ""]
    if loads_with_transformers:
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "model = AutoModelForCausalLM.from_pretrained(\"PATH/TO/THIS/DIRECTORY\")",
                  "tokenizer = AutoTokenizer.from_pretrained(\"PATH/TO/THIS/DIRECTORY\")", "```", ""]
    return lines


def _evaluation(result: PruneResult) -> list[str]:
    rows = []
    if result.evaluation is not None:
        ev = result.evaluation
        rows.append(perplexity_row("WikiText-2 test perplexity", ev.ppl, ev.eval_windows, result.seqlen))
    if result.eval_data is not None:
        ev = result.eval_data.perplexity
        rows.append(perplexity_row(f"perplexity on {result.eval_data.source}", ev.ppl, ev.eval_windows,
                                   result.seqlen))
    return evaluation_section(rows, result.zero_shot)


def model_card(result: PruneResult, *, command: str | None = None, per_block: bool = False) -> str:
    """The README.md text for a pruned model's directory; ``per_block``: the model has per-block
    widths (a prunedsl-format checkpoint pruned again), which plain transformers cannot load."""
    r = result
    title = f"{r.model} pruned to {r.sparsity:.1%} sparsity with {r.name or 'a prunedsl metric'}"
    rows = [["metric", r.name or "(formula)"], ["formula (Unicode)", r.pretty], ["formula (as parsed)", r.formula],
            [f"canonical form (group {r.group})", r.canonical], ["type", r.type],
            ["sparsity", f"{r.sparsity:.4f} (target {r.target_sparsity:.4f})"], *r.settings_rows()]
    if r.allocation:
        rows.append(["allocation", r.allocation["rule"]])
    lines = card_header(r.model, library_name="prunedsl" if per_block else "transformers") + [
        "", f"# {title}", ""] + (per_block_loading_lines() if per_block else []) + [
        f"Every linear layer in the decoder blocks of `{r.model}` ({r.model_source}) was pruned with the "
        f"metric below by prunedsl: the lowest-scoring weights of "
        f"each comparison group are zeros in the saved (dense) weights. `pruning.json` beside this card "
        f"holds the full record, layer by layer.", "",
        "## Metric", "", f"**{r.name or 'formula'}**: {r.pretty}", "", f"$$ {r.latex} $$", "",
        markdown_table(["", ""], rows), ""]
    lines += _allocation(r) + _evaluation(r)
    lines += provenance_section(command, r.torch, r.python, loads_with_transformers=not per_block)
    return "\n".join(lines)


def read_card_header(text: str) -> dict[str, Any]:
    """The YAML header of a card as a dict (the subset this module writes: scalars and lists)."""
    if not text.startswith("---\n"):
        raise ValueError("no YAML header")
    header, _, _ = text[4:].partition("\n---\n")
    out: dict[str, Any] = {}
    key = None
    for line in header.splitlines():
        if line.startswith("- ") and key is not None:
            out[key].append(line[2:].strip())
        elif ":" in line:
            key, _, value = line.partition(":")
            value = value.strip()
            out[key] = json.loads(value) if value.startswith('"') else (value or [])
    return out

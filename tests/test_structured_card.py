"""The model card (README.md) of `prunedsl prune --structure … --output DIR`, on tiny random models."""
import json

import pytest

from prunedsl.api import parse_structure_metric
from prunedsl.cli import main
from prunedsl.runtime.modelcard import prunedsl_version, read_card_header
from prunedsl.runtime.testing import save_tiny_workspace, tiny_qwen2, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny_card"))


def prune(capsys, model, data, out_dir, *extra):
    argv = ["prune", "--model", str(model), "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2",
            "--data-dir", str(data), "--output", str(out_dir), *extra]
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads((out_dir / "pruning.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    return (out_dir / "README.md").read_text(), record, config, argv


def table_row(card: str, key: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``key``."""
    for line in card.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == key:
            return cells
    raise AssertionError(f"no row {key!r} in the card")


def test_channels_card_has_the_header_and_the_facts_of_pruning_json(capsys, tiny_dir, tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(" ".join("abcde"[(i * j) % 5] for j in range(40)) for i in range(20)))
    card, rec, config, argv = prune(capsys, tiny_dir / "model", tiny_dir / "data", tmp_path / "ch",
                                    "--structure", "channels", "--ratio", "0.25", "--eval-data", str(text))
    header = read_card_header(card)
    assert header["tags"] == ["pruned", "prunedsl", "structured-pruning", "channel-pruning"]
    assert header["library_name"] == "transformers" and "base_model" not in header  # a local directory
    s, plan = rec["structured"], rec["structured"]["plan"]
    assert rec["structure_metric"] == "wanda_sp"
    assert f"**wanda_sp**: {rec['structure_metric_doc']}" in card
    assert f"$$ {parse_structure_metric('wanda_sp').latex()} $$" in card
    assert "Wanda-sp: An et al. 2024" in card  # the library's comment on the score
    assert table_row(card, "structure")[1] == "channels" and table_row(card, "ratio")[1] == "0.25"
    assert table_row(card, "allocation")[1] == plan["allocation"] == "uniform"
    assert table_row(card, "removed")[1] == (f"{plan['removed']} of {sum(plan['total'])} MLP channels "
                                             f"({plan['removed_per_block'][0]} in each of the 2 blocks)")
    assert table_row(card, "parameters")[1] == f"{s['params_before']:,} → {s['params_after']:,}"
    assert f"({s['decoder_fraction_removed']:.2%} removed)" in table_row(card, "decoder parameters")[1]
    assert table_row(card, "bias compensation")[1] == "no"
    assert table_row(card, "calibration")[1] == "4 × 32 tokens from wikitext-2 validation (seed 0)"
    assert table_row(card, "intermediate_size")[1:] == ["128", str(config["intermediate_size"])] == ["128", "96"]
    assert table_row(card, "num_hidden_layers")[1:] == ["2", "2"]
    assert table_row(card, "WikiText-2 test perplexity")[1:] == [f"{rec['ppl']:.3f}", "2 windows of 32 tokens"]
    assert table_row(card, f"perplexity on {text}")[1] == f"{rec['eval_data']['ppl']:.3f}"
    assert "prunedsl " + " ".join(argv) in card and f"prunedsl {prunedsl_version()}, torch {rec['torch']}" in card
    assert rec["loadable_by_transformers"] and "loads with plain `AutoModelForCausalLM.from_pretrained`" in card


def test_heads_card_says_the_mode_the_bias_compensation_and_the_new_head_counts(capsys, tiny_dir, tmp_path):
    card, rec, config, _ = prune(capsys, tiny_dir / "model", tiny_dir / "data", tmp_path / "heads", "--no-eval",
                                 "--structure", "heads", "--ratio", "0.5", "--bias-compensation",
                                 "--structure-metric", "group_sum(|W| * G)")
    assert read_card_header(card)["tags"][2:] == ["structured-pruning", "head-pruning"]
    assert table_row(card, "structure")[1] == "heads (kv_groups)" and rec["heads_mode"] == "kv_groups"
    assert table_row(card, "removed")[1].startswith(f"{rec['structured']['plan']['removed']} of 4 KV groups")
    assert table_row(card, "bias compensation")[1].startswith("yes (FLAP)") and rec["bias_compensation"]
    assert table_row(card, "num_attention_heads")[1:] == ["4", str(config["num_attention_heads"])] == ["4", "2"]
    assert table_row(card, "num_key_value_heads")[1:] == ["2", str(config["num_key_value_heads"])] == ["2", "1"]
    assert f"$$ {parse_structure_metric('group_sum(|W| * G)').latex()} $$" in card
    assert "Not evaluated." in card


def test_blocks_card_of_a_qwen2_pruned_again_names_its_base_model(capsys, tiny_dir, tmp_path):
    model = tmp_path / "qwen2"
    tiny_qwen2().save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    (model / "pruning.json").write_text(json.dumps({"model": "Qwen/Qwen2.5-0.5B"}))  # an earlier prunedsl output
    card, rec, config, _ = prune(capsys, model, tiny_dir / "data", tmp_path / "blocks", "--no-eval",
                                 "--structure", "blocks", "--ratio", "0.34")
    header = read_card_header(card)
    assert header["base_model"] == "Qwen/Qwen2.5-0.5B"
    assert header["tags"] == ["pruned", "prunedsl", "structured-pruning", "layer-pruning"]
    plan = rec["structured"]["plan"]
    (gone,) = set(range(3)) - set(plan["keep"][0])
    assert table_row(card, "removed")[1] == f"1 of 3 decoder blocks: block {gone}"
    assert table_row(card, "num_hidden_layers")[1:] == ["3", str(config["num_hidden_layers"])] == ["3", "2"]
    assert f"**{rec['structure_metric']}**: BI" in card and rec["structure_metric"] == "shortgpt"
    assert "loads with plain `AutoModelForCausalLM.from_pretrained`" in card


def test_per_block_widths_card_says_it_is_a_prunedsl_checkpoint_and_lists_every_width(capsys, tmp_path):
    ws = save_tiny_workspace(tmp_path / "ws", layers=4)
    card, rec, config, _ = prune(capsys, ws / "model", ws / "data", tmp_path / "range", "--no-eval",
                                 "--structure", "channels", "--ratio", "0.25", "--structure-blocks", "1:-1")
    header = read_card_header(card)
    assert header["library_name"] == "prunedsl" and not rec["loadable_by_transformers"]
    first = card.split("# ", 1)[1].split("\n\n", 2)[1]   # the paragraph under the title
    assert first.startswith("**This is a prunedsl-format checkpoint with per-block widths.**")
    assert "prunedsl eval --model PATH/TO/THIS/DIRECTORY" in card and "load_model(" in card
    assert "model = AutoModelForCausalLM.from_pretrained" not in card   # no snippet that would fail
    assert table_row(card, "pruned blocks")[1] == "blocks 1-2 of 4 (--structure-blocks 1:-1)"
    assert table_row(card, "removed")[1] == "64 of 512 MLP channels (32 in each of the 2 pruned blocks, none in the others)"
    assert table_row(card, "intermediate_size")[1:] == ["128", "per block: 128, 96, 96, 128"]
    assert config["prunedsl_structure"]["intermediate_size"] == [128, 96, 96, 128]
    assert rec["structure_blocks"] == "1:-1" and rec["structured"]["plan"]["blocks"] == [1, 2]
    # masked pruning of that checkpoint keeps its widths, and its card says how to load it too
    out = tmp_path / "masked"
    assert main(["prune", "--model", str(tmp_path / "range"), "--metric", "wanda", "--sparsity", "0.5",
                 "--nsamples", "4", "--seqlen", "32", "--no-eval", "--data-dir", str(ws / "data"),
                 "--output", str(out)]) == 0, capsys.readouterr().err
    masked = (out / "README.md").read_text()
    assert "**This is a prunedsl-format checkpoint with per-block widths.**" in masked
    assert read_card_header(masked)["library_name"] == "prunedsl"
    assert json.loads((out / "config.json").read_text())["prunedsl_structure"] == config["prunedsl_structure"]

"""`prunedsl prune --structure …` through the CLI on a saved tiny Llama (no download)."""
import json

import pytest
import torch

from prunedsl.cli import main
from prunedsl.runtime.testing import save_tiny_workspace, write_next_sentence_task


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny_struct"))


def prune(capsys, tiny_dir, *extra):
    code = main(["prune", "--model", str(tiny_dir / "model"), "--nsamples", "4", "--seqlen", "32",
                 "--eval-windows", "2", "--data-dir", str(tiny_dir / "data"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_channels_saved_model_loads_and_reproduces_the_ppl(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "ch"
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25",
                           "--output", str(out_dir), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["structured"]["plan"]["removed"] == 2 * 32 and rec["loadable_by_transformers"]
    saved = json.loads((out_dir / "pruning.json").read_text())
    assert saved["structured"]["plan"]["keep"] == rec["structured"]["plan"]["keep"]
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    assert model.config.intermediate_size == 96
    assert model.model.layers[0].mlp.down_proj.weight.shape == (64, 96)
    code, out, err = main(["eval", "--model", str(out_dir), "--data-dir", str(tiny_dir / "data"),
                           "--json"]), *capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ppl"] == pytest.approx(rec["ppl"], rel=1e-5)


@pytest.mark.parametrize("extra,text", [
    (["--structure", "heads", "--heads-mode", "query_heads", "--structure-metric", "taylor"],
     "heads (query_heads)"),
    (["--structure", "blocks", "--structure-metric", "block_influence"], "kept blocks"),
])
def test_heads_and_blocks_table(capsys, tiny_dir, extra, text):
    code, out, err = prune(capsys, tiny_dir, *extra, "--ratio", "0.5")
    assert code == 0, err
    assert text in out and "wikitext-2 test ppl" in out and "of decoder parameters" in out


@pytest.mark.parametrize("extra,message", [
    (["--structure", "channels"], "--structure and --ratio go together"),
    (["--structure", "channels", "--ratio", "1"], "--ratio must be in [0, 1)"),
    (["--structure", "heads", "--ratio", "0.9"], "would remove every one"),
    (["--structure", "channels", "--ratio", "0.2", "--metric", "wanda"], "--metric only apply"),
    (["--structure", "channels", "--ratio", "0.2", "--structure-metric", "block_influence"], "this score is for blocks"),
    (["--structure", "channels", "--ratio", "0.2", "--structure-metric", "nope"], "unknown name 'nope'"),
    (["--structure", "blocks", "--ratio", "0.5", "--structure-blocks", "1:"],
     "--structure-blocks applies to channels and heads, not blocks"),
    (["--structure", "channels", "--ratio", "0.2", "--structure-blocks", "5:"],
     "--structure-blocks 5: reaches past the model's 2 decoder blocks"),
    (["--structure", "channels", "--ratio", "0.2", "--structure-blocks=-1:-1"],
     "--structure-blocks -1:-1 selects no block: END must come after START"),
    (["--structure", "heads", "--ratio", "0.9", "--structure-blocks", "1:"],
     "decoder block 1 (inside the pruned range: block 1) would remove every one of them"),
    (["--metric", "wanda", "--sparsity", "0.5", "--structure-blocks", "1:"],
     "--structure-blocks only apply with --structure"),
    ([], "--metric is required"),
    (["--structure", "channels", "--ratio", "0.2", "--within-block", "parallel"], "--within-block only apply"),
    # the other way round: structured-removal options on masked pruning are refused, not ignored
    (["--metric", "wanda", "--sparsity", "0.5", "--structure-metric", "taylor"],
     "--structure-metric only apply with --structure"),
    (["--metric", "wanda", "--sparsity", "0.5", "--heads-mode", "query_heads", "--bias-compensation"],
     "--heads-mode, --bias-compensation only apply with --structure"),
    (["--metric", "wanda", "--sparsity", "0.5", "--structure-allocation", "global"],
     "--structure-allocation only apply with --structure"),
])
def test_bad_requests_are_clear_errors(capsys, tiny_dir, extra, message):
    code, out, err = prune(capsys, tiny_dir, *extra)
    assert code == 2 and "Traceback" not in err
    assert message in err


@pytest.mark.parametrize("extra,widths", [
    (["--structure", "channels", "--ratio", "0.3", "--structure-allocation", "global"], None),
    (["--structure", "channels", "--ratio", "0.25", "--structure-blocks", "1:"], [128, 96]),
    (["--structure", "heads", "--ratio", "0.5", "--structure-blocks", ":1"], [2, 4]),
])
def test_per_block_widths_are_saved_in_prunedsl_format_and_reproduce_the_ppl(capsys, tiny_dir, tmp_path,
                                                                               extra, widths):
    out_dir = tmp_path / "per_block"
    code, out, err = prune(capsys, tiny_dir, *extra, "--output", str(out_dir), "--json")
    assert code == 0, err
    rec = json.loads(out)
    plan = rec["structured"]["plan"]
    assert not plan["uniform"] and not rec["loadable_by_transformers"] and rec["checkpoint_format"] == "prunedsl"
    assert "prunedsl-format checkpoint" in err and f"prunedsl eval --model {out_dir}" in err
    saved = json.loads((out_dir / "pruning.json").read_text())
    assert saved["structure_blocks"] == rec["structure_blocks"] and saved["structured"]["plan"] == plan
    if "--structure-blocks" in extra:
        assert plan["blocks"] == ([1] if extra[-1] == "1:" else [0])
    field = "intermediate_size" if extra[1] == "channels" else "num_attention_heads"
    config = json.loads((out_dir / "config.json").read_text())
    assert config["prunedsl_structure"][field] == (widths or plan["widths"])
    card = (out_dir / "README.md").read_text()
    assert "**This is a prunedsl-format checkpoint with per-block widths.**" in card
    assert "library_name: prunedsl" in card and "prunedsl eval --model PATH/TO/THIS/DIRECTORY" in card
    from transformers import AutoModelForCausalLM
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        AutoModelForCausalLM.from_pretrained(out_dir)
    code, out, err = main(["eval", "--model", str(out_dir), "--data-dir", str(tiny_dir / "data"),
                           "--json"]), *capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ppl"] == pytest.approx(rec["ppl"], rel=1e-5)


def test_per_block_widths_summary_says_how_to_load(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "range"
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25", "--no-eval",
                           "--structure-blocks", ":-1", "--output", str(out_dir), "--format", "text")
    assert code == 0, err
    assert "pruned blocks" in out and "block 0 of 2" in out
    assert f"prunedsl-format checkpoint with per-block widths: load it with prunedsl eval --model {out_dir}" in out


def test_a_malformed_block_range_is_refused_before_loading(capsys, tmp_path):
    code = main(["prune", "--model", str(tmp_path / "missing"), "--structure", "channels", "--ratio", "0.25",
                 "--structure-blocks", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "--structure-blocks '3' is not a block range" in err and "Traceback" not in err
    assert "hint: START:END" in err and "missing" not in err


def test_bias_compensation_saved_model_reproduces_the_ppl(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "bc"
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25",
                           "--bias-compensation", "--output", str(out_dir), "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["bias_compensation"] is True
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    assert model.config.mlp_bias and model.model.layers[0].mlp.down_proj.bias.abs().sum() > 0
    code, out, err = main(["eval", "--model", str(out_dir), "--data-dir", str(tiny_dir / "data"),
                           "--json"]), *capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ppl"] == pytest.approx(rec["ppl"], rel=1e-5)


def test_bias_compensation_for_blocks_is_refused(capsys, tiny_dir):
    code, out, err = prune(capsys, tiny_dir, "--structure", "blocks", "--ratio", "0.5", "--bias-compensation")
    assert code != 0 and "--bias-compensation applies to channels and heads" in err


# --- device and memory options (runtime/device.py) -----------------------------------------
def test_bfloat16_structured_output_records_its_placement_and_reloads_in_bfloat16(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "bf16"
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25", "--device", "cpu",
                           "--dtype", "bfloat16", "--calib-batch", "2", "--output", str(out_dir), "--json")
    assert code == 0, err
    rec = json.loads(out)
    placement = {"device": "cpu", "dtype": "bfloat16", "offload": False, "calib_batch": 2}
    assert rec["placement"] == placement
    assert json.loads((out_dir / "pruning.json").read_text())["placement"] == placement
    config = json.loads((out_dir / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype="auto")
    assert model.dtype == torch.bfloat16 and model.config.intermediate_size == 96
    code, out, err = main(["eval", "--model", str(out_dir), "--data-dir", str(tiny_dir / "data"),
                           "--dtype", "bfloat16", "--json"]), *capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["ppl"] == pytest.approx(rec["ppl"], rel=1e-6)


@pytest.mark.parametrize("extra,message", [
    (["--offload"], "--offload applies to masked pruning only"),
    (["--calib-batch", "0"], "--calib-batch must be a whole number of windows"),
    (["--dtype", "float16", "--device", "cpu"], "float16 on CPU is not supported"),
] + ([(["--device", "cuda"], "CUDA is not available")] if not torch.cuda.is_available() else []))
def test_refused_device_options_are_said_before_loading(capsys, tmp_path, extra, message):
    code = main(["prune", "--model", str(tmp_path / "missing"), "--structure", "channels", "--ratio", "0.25",
                 *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


# --- prune's evaluation options and --library with --structure ------------------------------
def test_eval_data_ppl_is_the_saved_models_perplexity_on_that_text(capsys, tiny_dir, tmp_path):
    import random
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from prunedsl.runtime import data
    from prunedsl.runtime.perplexity import perplexity
    r = random.Random(7)  # text of its own: neither the calibration nor the test split
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(" ".join(r.choice("abcdefghij") for _ in range(40)) for _ in range(20)))
    out_dir = tmp_path / "ch"
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25",
                           "--eval-data", str(text), "--output", str(out_dir), "--json")
    assert code == 0, err
    rec = json.loads(out)
    saved = json.loads((out_dir / "pruning.json").read_text())
    assert saved["eval_data"] == rec["eval_data"] and rec["eval_data"]["source"] == str(text)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    ids = data.tokenize(AutoTokenizer.from_pretrained(out_dir), text.read_text())
    direct = perplexity(model, ids, seqlen=32, max_windows=2, progress=False)
    assert rec["eval_data"]["eval_windows"] == direct["windows"] == 2
    assert rec["eval_data"]["ppl"] == pytest.approx(direct["ppl"], rel=1e-5)
    assert rec["eval_data"]["ppl"] != pytest.approx(rec["ppl"], rel=1e-3)  # another text, another ppl


def test_tasks_give_the_accuracy_record_and_the_tables(capsys, tmp_path):
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from prunedsl.runtime.tasks import run_tasks
    ws = save_tiny_workspace(tmp_path / "ws", char_tokenizer=True)  # lm-eval needs <s> / </s>
    docs = [{"context": "a b c d", "choices": ["e f g", "h i", "j", "a a a a"], "label": i % 4} for i in range(6)]
    name = write_next_sentence_task(tmp_path / "tasks", docs, name="tiny_choice")
    out_dir = tmp_path / "heads"
    code, out, err = prune(capsys, ws, "--structure", "heads", "--ratio", "0.5", "--tasks", name,
                           "--tasks-dir", str(tmp_path / "tasks"), "--limit", "5",
                           "--eval-data", str(ws / "data" / "wiki.valid.tokens"), "--output", str(out_dir),
                           "--format", "text")
    assert code == 0, err
    zs = json.loads((out_dir / "pruning.json").read_text())["zero_shot"]
    assert zs["limit"] == 5 and zs["num_fewshot"] == 0 and zs["tasks"][name]["samples"] == 5
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    direct = run_tasks(model, AutoTokenizer.from_pretrained(out_dir), [name], limit=5,
                       tasks_dir=str(tmp_path / "tasks")).to_dict()
    assert zs["tasks"][name]["acc"] == pytest.approx(direct["tasks"][name]["acc"])
    assert zs["tasks"][name]["acc_norm"] == pytest.approx(direct["tasks"][name]["acc_norm"])
    card = (out_dir / "README.md").read_text()  # the model card has the accuracy table too
    assert "Zero-shot accuracy (lm-eval " in card and ", first 5 documents per task" in card
    assert f"| {name} | 5 " in card and f"{zs['tasks'][name]['acc']:.4f} ± " in card
    assert "zero-shot accuracy (lm-eval" in out and name in out and "wiki.valid.tokens ppl" in out
    assert not any(line.startswith("|") for line in out.splitlines())  # --format text: no Markdown tables


def test_unknown_task_is_refused_before_loading(capsys, tmp_path):
    pytest.importorskip("lm_eval")
    code = main(["prune", "--model", str(tmp_path / "missing"), "--structure", "channels", "--ratio", "0.25",
                 "--tasks", "no_such_task", "--tasks-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no task named no_such_task" in err and "Traceback" not in err


def test_library_structure_score_is_usable(capsys, tiny_dir, tmp_path):
    library = tmp_path / "mine.pdsl"
    library.write_text("structure my_magnitude = group_sum(|W|)\n")
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25", "--no-eval",
                           "--library", str(library), "--structure-metric", "my_magnitude", "--json")
    assert code == 0, err
    mine = json.loads(out)
    code, out, err = prune(capsys, tiny_dir, "--structure", "channels", "--ratio", "0.25", "--no-eval",
                           "--structure-metric", "magnitude_sp", "--json")
    assert code == 0, err
    assert mine["structure_metric"] == "my_magnitude"
    assert mine["structured"]["plan"]["keep"] == json.loads(out)["structured"]["plan"]["keep"]

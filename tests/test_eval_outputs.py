"""What prune / eval print and save for people: tables, --format, --eval-data, the model card."""
import json

import pytest

from prunedsl.cli import main
from prunedsl.cli.output import output_format
from prunedsl.errors import ConfigError
from prunedsl.runtime.modelcard import base_model, read_card_header
from prunedsl.runtime.testing import save_tiny_workspace, write_next_sentence_task
from prunedsl.tables import markdown_table, text_table


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_workspace(tmp_path_factory.mktemp("ws"), char_tokenizer=True)


def tiny_args(tiny):
    return ["--model", str(tiny / "model"), "--seqlen", "32", "--data-dir", str(tiny / "data"),
            "--eval-windows", "2"]


def test_text_tables_are_aligned_and_unescaped():
    rows = [["wanda", "|W|·‖X‖"], ["magnitude", "|W|"]]
    text = text_table(["metric", "formula"], rows).splitlines()
    assert text[0].split() == ["metric", "formula"] and set(text[1].replace(" ", "")) == {"─"}
    assert text[2] == "wanda      |W|·‖X‖" and text[3] == "magnitude  |W|"
    assert "\\|" not in "\n".join(text) and "\\|W\\|" in markdown_table(["metric", "formula"], rows)
    assert text_table(["", ""], rows).splitlines()[0] == "wanda      |W|·‖X‖"  # key/value: no header


def test_format_flags(capsys):
    ns = type("Args", (), {})
    a = ns()
    a.json, a.format = True, None
    assert output_format(a) == "json"
    a.json, a.format = False, "md"
    assert output_format(a) == "md"
    a.json, a.format = True, "text"
    with pytest.raises(ConfigError, match="--json and --format text disagree"):
        output_format(a)
    a.json, a.format = False, None
    assert output_format(a) == "md"  # captured stdout is no terminal: Markdown, as prunedsl always printed
    assert main(["metrics", "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "wanda" in out and "\\|" not in out and "| metric" not in out
    assert main(["metrics", "--format", "json"]) == 0
    assert "metrics" in json.loads(capsys.readouterr().out)


def test_prune_with_eval_data_tasks_and_output_writes_a_model_card(tiny, tmp_path, capsys):
    docs = [{"context": "a b c d", "choices": ["e f g", "h i", "j", "a a a a"], "label": i % 4} for i in range(6)]
    name = write_next_sentence_task(tmp_path / "tasks", docs, name="tiny_choice")
    out = tmp_path / "pruned"
    argv = ["prune", *tiny_args(tiny), "--metric", "wanda", "--sparsity", "0.5", "--nsamples", "2",
            "--eval-data", str(tiny / "data" / "wiki.test.raw"), "--tasks", name,
            "--tasks-dir", str(tmp_path / "tasks"), "--output", str(out), "--format", "json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads((out / "pruning.json").read_text())
    # the same file as the WikiText-2 test split: the same protocol must give the same perplexity
    assert record["eval_data"]["ppl"] == pytest.approx(record["ppl"], rel=1e-9)
    assert record["eval_data"]["source"].endswith("wiki.test.raw")
    zs = record["zero_shot"]["tasks"][name]
    assert zs["samples"] == 6 and 0 <= zs["acc"] <= 1 and zs["acc_stderr"] > 0
    assert printed["zero_shot"]["tasks"][name]["acc"] == zs["acc"]

    card = (out / "README.md").read_text()
    header = read_card_header(card)
    assert header["tags"] == ["pruned", "prunedsl"] and header["library_name"] == "transformers"
    assert "base_model" not in header  # a local directory of unknown origin
    for value in (record["pretty"], record["latex"], f"{record['ppl']:.3f}", f"{record['eval_data']['ppl']:.3f}",
                  f"{zs['acc']:.4f} ± {zs['acc_stderr']:.4f}", "prunedsl 0.1.0",
                  f"{record['sparsity']:.4f}", "2 × 32 tokens from wikitext-2 validation (seed 0)"):
        assert value in card, value
    assert "prunedsl prune --model " + str(tiny / "model") in card and "--format json" in card
    assert f"canonical form (group {record['group']})" in card


def test_model_card_lists_the_allocation_per_block(tiny, tmp_path):
    out = tmp_path / "owl"
    assert main(["prune", *tiny_args(tiny), "--metric", "wanda", "--sparsity", "0.5", "--nsamples", "2",
                 "--allocation", "owl", "--no-eval", "--output", str(out), "--json"]) == 0
    record = json.loads((out / "pruning.json").read_text())
    card = (out / "README.md").read_text()
    assert "## Allocation" in card and record["allocation"]["rule"] in card
    for i, s in enumerate(record["allocation"]["block_sparsity"]):
        assert f"| {i}     | {s:.4f}" in card
    assert "Not evaluated." in card


@pytest.mark.parametrize("argv,option", [
    (["prune", "--metric", "wanda", "--limit", "5"], "--limit"),
    (["prune", "--structure", "channels", "--ratio", "0.25", "--tasks-dir", "."], "--tasks-dir"),
    (["eval", "--num-fewshot", "0"], "--num-fewshot"),
])
def test_task_options_without_tasks_are_refused_before_the_load(tmp_path, capsys, argv, option):
    code = main([*argv, "--model", str(tmp_path / "missing")])  # a load would fail otherwise
    err = capsys.readouterr().err
    assert code == 2 and f"{option} only applies with --tasks" in err and "Traceback" not in err


def test_base_model_of_aliases_and_hub_ids(tmp_path):
    assert base_model("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    (tmp_path / "pruning.json").write_text(json.dumps({"model": "smollm2-135m"}))
    assert base_model(str(tmp_path)) == "HuggingFaceTB/SmolLM2-135M-Instruct"  # pruned again
    assert base_model(str(tmp_path / "nothing")) is None


def test_eval_prints_the_eval_data_perplexity_as_text(tiny, capsys):
    assert main(["eval", *tiny_args(tiny), "--eval-data", str(tiny / "data" / "wiki.valid.tokens"),
                 "--format", "text"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "wiki.valid.tokens ppl" in ln)
    assert "|" not in line and "windows of 32" in line


@pytest.mark.parametrize("content, message", [(None, "--eval-data: file not found"),
                                              (b"\x00\x01", "--eval-data: .* binary file"),
                                              (b"  \n", "--eval-data: .* is empty")])
def test_bad_eval_data_is_a_clear_error_before_the_load(tiny, tmp_path, capsys, monkeypatch, content, message):
    import re
    from prunedsl.runtime import job as job_mod
    monkeypatch.setattr(job_mod, "load_model", lambda *a, **k: pytest.fail("loaded before the check"))
    path = tmp_path / "task.txt"
    if content is not None:
        path.write_bytes(content)
    for command in (["prune", "--metric", "wanda"], ["eval"]):
        assert main([*command, *tiny_args(tiny), "--eval-data", str(path)]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err


def test_no_wikitext_anywhere_and_no_network_is_one_message(tiny, tmp_path, monkeypatch, capsys):
    import sys
    import types
    from prunedsl.runtime import data

    monkeypatch.delenv("PRUNEDSL_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "_PACKAGE_ROOT", tmp_path / "clone" / "prunedsl")  # no ../shared beside it
    monkeypatch.chdir(tmp_path)

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub")
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    assert main(["eval", "--model", str(tiny / "model"), "--seqlen", "32"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("WikiText-2 not found locally") == 1
    for way in ("--data-dir", "$PRUNEDSL_DATA_DIR", "../shared/data/wikitext-2", "pip install datasets"):
        assert way in err

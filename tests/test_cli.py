"""The command line: output formats, exit codes, error rendering."""
import json
import subprocess
import sys

import pytest

from prunedsl.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_prints_every_view(capsys):
    code, out, _ = run(capsys, "check", "sqrt(abs(W) * norm(X))")
    assert code == 0
    for key in ("formula", "pretty", "latex", "type", "canonical (row)", "requires"):
        assert any(line.startswith(key) for line in out.splitlines()), key
    assert "Mat[nonneg]" in out


def test_check_json_is_one_object(capsys):
    code, out, _ = run(capsys, "check", "ria(a = 0.3)", "--json", "--group", "layer")
    assert code == 0
    rec = json.loads(out)
    assert rec["type"] == {"shape": "Mat", "sign": "nonneg"}
    assert rec["group"] == "layer" and rec["name"] == "ria"
    assert rec["requires"] == ["W", "x_norm2"]
    assert {"formula", "pretty", "latex", "canonical", "text"} <= set(rec)


def test_bad_formula_exits_2_with_a_caret_and_no_traceback(capsys):
    code, out, err = run(capsys, "check", "|W| * sqrt(W)")
    assert code == 2 and out == ""
    assert "sqrt of a possibly negative value" in err
    assert "^^^^^^^" in err and "did you mean sqrt(|W|)?" in err
    assert "Traceback" not in err


def test_bad_formula_with_json_prints_an_error_object(capsys):
    code, out, err = run(capsys, "check", "W +", "--json")
    assert code == 2
    rec = json.loads(out)["error"]
    assert rec["kind"] == "syntax error" and rec["span"] == [3, 4]


def test_metrics_lists_the_library(capsys):
    code, out, _ = run(capsys, "metrics", "--json")
    assert code == 0
    names = {m["name"] for m in json.loads(out)["metrics"]}
    assert {"magnitude", "wanda", "ria"} <= names
    rules = {r["name"]: r for r in json.loads(out)["allocations"]}
    assert set(rules) == {"uniform", "owl", "alpha", "sdsa"}
    assert rules["owl"]["requires"] == ["outlier_ratio:5"] and rules["uniform"]["requires"] == []
    code, out, _ = run(capsys, "metrics")
    assert "ria(a = 0.5)" in out and "Sun et al." in out
    assert "owl(M = 5, lam = 0.08)" in out and "Yin et al." in out


def test_user_library_file(capsys, tmp_path):
    lib = tmp_path / "mine.pdsl"
    lib.write_text("# my metric\nmetric boost(k = 2) = |W| * ‖X‖ ^ k\n", encoding="utf-8")
    code, out, _ = run(capsys, "check", "boost(k = 3)", "--library", str(lib), "--json")
    assert code == 0 and json.loads(out)["text"] == "|W| * ‖X‖ ^ 3"
    code, _, err = run(capsys, "check", "x", "--library", str(tmp_path / "missing.pdsl"))
    assert code == 2 and "cannot read library file" in err


@pytest.mark.parametrize("argv, message", [
    (["prune", "--model", "m", "--metric", "sqrt(W)"], "sqrt of a possibly negative"),
    (["prune", "--model", "m", "--metric", "wanda", "--pattern", "2:x"], "neither 'unstructured' nor N:M"),
    (["prune", "--model", "m", "--metric", "wanda", "--pattern", "2:4", "--sparsity", "0.6"], "2/4"),
    (["prune", "--model", "m", "--metric", "wanda", "--sparsity", "1.5"], "--sparsity must be in [0, 1)"),
    (["prune", "--model", "m", "--metric", "row_sum(|W|)", "--pattern", "2:4"], "N:M needs a per-weight"),
])
def test_prune_rejects_bad_arguments_before_loading_anything(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_console_script_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "prunedsl", "check", "wanda", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["formula"]
    proc = subprocess.run([sys.executable, "-m", "prunedsl", "prune", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "examples:" in proc.stdout

"""bench/gpu_check.sh parses, and its Python part runs on CPU on the tiny model."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from prunedsl.runtime.testing import save_tiny_workspace

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_shell_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True)


def test_the_python_part_runs_on_cpu_and_skips_missing_aliases(tmp_path, monkeypatch, capsys):
    tiny = save_tiny_workspace(tmp_path / "ws")
    from prunedsl.runtime import packaged  # the Qwen alias as on a machine without its packages
    monkeypatch.setenv("PRUNEDSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(packaged.PARTED, "qwen2.5-coder-0.5b", dataclasses.replace(
        packaged.PARTED["qwen2.5-coder-0.5b"], module="no_such_prunedsl_part"))
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["gpu_check", "--device", "cpu", "--dtypes", "float32,bfloat16",
                                      "--models", f"{tiny / 'model'},qwen2.5-coder-0.5b",
                                      "--data-dir", str(tiny / "data"), "--nsamples", "2", "--seqlen", "32",
                                      "--windows", "2", "--json", str(out)])
    assert gpu_check.main() == 0
    captured = capsys.readouterr()
    assert "skip qwen2.5-coder-0.5b" in captured.err
    import json
    rows = json.loads(out.read_text())["rows"]
    assert [(r["metric"], r["dtype"]) for r in rows] == [
        ("wanda", "float32"), ("wanda", "bfloat16"), ("sparsegpt +R", "float32"), ("sparsegpt +R", "bfloat16")]
    fp32 = {r["metric"]: r["ppl"] for r in rows if r["dtype"] == "float32"}
    for r in rows:
        assert r["cpu_ppl"] == fp32[r["metric"]] and abs(r["sparsity"] - 0.5) < 1e-3
        assert r["peak_memory_bytes"] > 0 and r["eval_tokens_per_s"] > 0
        if r["dtype"] == "bfloat16":  # half precision moves the perplexity, but not far
            assert r["rel_diff"] == pytest.approx(0.0, abs=0.05)

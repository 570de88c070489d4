"""bench/bench_prompt_cache.py end to end on a tiny random chat model (SmolLM2's tokenizer):
the server's reported cached tokens are what a replay of the same replies computes, and
both views run. Seconds are not checked (a shared machine)."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("llguidance")
pytest.importorskip("starlette")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from serve_fakes import tiny_chat_model_dir_or_skip  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_prompt_cache", ROOT / "bench" / "bench_prompt_cache.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recorded_cache_counts_equal_a_replay_and_views_differ(bench, tmp_path, capsys):
    model = tiny_chat_model_dir_or_skip(tmp_path / "chat")
    out = tmp_path / "run.md"
    common = ["--model", model, "--budget", "4", "--max-requests", "5", "--max-tokens", "24"]
    assert bench.main(common + ["--out", str(out)]) == 0
    run = json.loads(out.with_suffix(".json").read_text())
    assert run["requests"] >= 2 and len(run["texts"]) == run["requests"]
    assert 0 < run["cached_tokens"] < run["prompt_tokens"] and run["cached_tokens_each"][0] == 0
    assert run["cold_prefill_s"] > 0 and run["warm_cached_tokens"] > 0
    assert "| served from the cache" in out.read_text()
    replay = tmp_path / "replay.md"
    assert bench.main(common + ["--replay", str(out.with_suffix(".json")), "--out", str(replay)]) == 0
    again = json.loads(replay.with_suffix(".json").read_text())
    assert again["prompt_tokens_each"] == run["prompt_tokens_each"]
    assert again["cached_tokens_each"] == run["cached_tokens_each"]  # what the server's cache served
    tree = tmp_path / "tree.md"
    assert bench.main(common + ["--replay", str(out.with_suffix(".json")), "--prompt-view", "tree",
                                "--out", str(tree)]) == 0
    tree_run = json.loads(tree.with_suffix(".json").read_text())
    assert tree_run["prompt_tokens_each"] != run["prompt_tokens_each"]
    assert "Replayed" in tree.read_text()

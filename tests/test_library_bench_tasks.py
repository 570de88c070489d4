"""bench/bench_library.py's zero-shot columns on a tiny random Llama: the task's accuracy is
measured on the pruned model (the same as running lm-eval on a model pruned the same way), saved
in the cell, shown in its column, and added to cells measured earlier without touching their ppl."""
import importlib.util
import json
import random
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from prunedsl.api import parse  # noqa: E402
from prunedsl.runtime import data  # noqa: E402
from prunedsl.runtime.models import load_model  # noqa: E402
from prunedsl.runtime.tasks import run_tasks  # noqa: E402
from prunedsl.runtime.testing import save_tiny_workspace  # noqa: E402
from prunedsl.runtime.workbench import Workbench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["cat", "dog", "sun", "map", "red", "big", "ran", "sat", "old", "new", "one", "two"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_library", ROOT / "bench" / "bench_library.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny Llama with the character tokenizer (lm-eval needs its end-of-text token) and a
    validation text of short sentences, so next-sentence documents fit its 256 positions."""
    ws = save_tiny_workspace(tmp_path_factory.mktemp("ws"), char_tokenizer=True)
    r = random.Random(0)
    lines = [" . ".join(" ".join(r.choice(WORDS) for _ in range(5)) for _ in range(4)) + " ." for _ in range(60)]
    (ws / "data" / "wiki.valid.tokens").write_text("\n".join(lines), encoding="utf-8")
    return ws


def common(ws, out) -> list[str]:
    return ["--model", str(ws / "model"), "--data-dir", str(ws / "data"), "--metrics", "magnitude", "wanda",
            "--reconstruct", "--columns", "0.5", "0.6", "--nsamples", "4", "--seqlen", "64",
            "--eval-windows", "2", "--out", str(out)]


def test_next_sentence_task_is_written_deterministically(bench, workspace, tmp_path):
    for d in ("a", "b"):
        bench.main(["--make-next-sentence-task", str(tmp_path / d), "--task-docs", "16",
                    "--data-dir", str(workspace / "data")])
    a, b = ((tmp_path / d / "next_sentence.jsonl").read_text() for d in ("a", "b"))
    docs = [json.loads(line) for line in a.splitlines()]
    assert a == b and len(docs) == 16 and (tmp_path / "a" / "next_sentence.yaml").is_file()
    assert all(d["choices"][d["label"]] for d in docs)
    with pytest.raises(SystemExit, match="--task-docs 100000"):
        bench.main(["--make-next-sentence-task", str(tmp_path / "c"), "--task-docs", "100000",
                    "--data-dir", str(workspace / "data")])


def zero_shot_row(md: str, row: str) -> str:
    (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {row} |")]
    return line.strip("|").split("|")[-1].strip()


def test_zero_shot_column_is_measured_and_added_to_earlier_cells(bench, workspace, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    bench.main(["--make-next-sentence-task", str(tasks), "--task-docs", "40", "--data-dir", str(workspace / "data")])
    out = tmp_path / "out"
    bench.main(common(workspace, out))                      # ppl only, as the published tables were made
    path = out / "results_model.json"
    first = json.loads(path.read_text())
    assert not any("zero_shot" in c for c in first["cells"].values())
    first["cells"]["magnitude@0.5"]["ppl"] = 1.5            # a stored ppl the rerun will not reproduce
    path.write_text(json.dumps(first))
    capsys.readouterr()
    bench.main(common(workspace, out) + ["--tasks", "next_sentence", "--tasks-dir", str(tasks)])
    captured = capsys.readouterr()
    state = json.loads(path.read_text())
    cells = state["cells"]
    assert [k for k, c in cells.items() if "zero_shot" in c] == ["dense", "magnitude@0.5", "wanda@0.5"]
    for key, cell in cells.items():                         # the stored ppl stay the table's
        assert cell["ppl"] == first["cells"][key]["ppl"]
    assert cells["magnitude@0.5"]["ppl_rerun"] != 1.5 and "ppl_rerun" not in cells["wanda@0.5"]
    assert "warning: magnitude@0.5 pruned again" in captured.err

    # the accuracies are those of lm-eval on the dense model and on one pruned the same way
    loaded = load_model(str(workspace / "model"))
    valid = data.tokenize(loaded.tokenizer, data.load_text("validation", data_dir=str(workspace / "data")))
    wb = Workbench(loaded, data.calibration_windows(valid, 4, 64, 0), progress=False)
    dense = run_tasks(loaded.model, loaded.tokenizer, ["next_sentence"], tasks_dir=str(tasks)).to_dict()
    wb.prune(parse("wanda"), sparsity=0.5)
    wanda = run_tasks(loaded.model, loaded.tokenizer, ["next_sentence"], tasks_dir=str(tasks)).to_dict()
    for key, ref in (("dense", dense), ("wanda@0.5", wanda)):
        got = cells[key]["zero_shot"]["tasks"]["next_sentence"]
        assert got["samples"] == 40
        assert got["acc_norm"] == pytest.approx(ref["tasks"]["next_sentence"]["acc_norm"])
        assert got["acc"] == pytest.approx(ref["tasks"]["next_sentence"]["acc"])

    assert dense["tasks"] != wanda["tasks"]                 # so the check above can tell the models apart
    md = (out / "results_model.md").read_text()
    assert "| metric | 50% | 60% | next_sentence acc_norm (50%) |" in md
    for key, row in (("dense", "dense"), ("wanda@0.5", "wanda"), ("magnitude@0.5", "magnitude")):
        s = cells[key]["zero_shot"]["tasks"]["next_sentence"]
        assert zero_shot_row(md, row) == f"{s['acc_norm']:.3f} ± {s['acc_norm_stderr']:.3f}"
    assert "| magnitude | 1.50 |" in md                    # the stored ppl, not the rerun's

    with pytest.raises(SystemExit, match="--task-limit None, not 5"):
        bench.main(common(workspace, out) + ["--tasks", "next_sentence", "--tasks-dir", str(tasks),
                                             "--task-limit", "5"])

"""bench/bench_task_specific.py: the Python corpus split is deterministic and disjoint, and the
tables show the measured perplexities and their ratios (a tiny random Llama, seconds)."""
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def corpus():
    return load("python_corpus")


@pytest.fixture(scope="module")
def bench():
    return load("bench_task_specific")


KEPT = ["mod_{i}.py", "pkg/sub_{i}.py", "pkg/deep/x_{i}.py"]
EXCLUDED = ["test/t_{i}.py", "pkg/tests/t_{i}.py", "idlelib/i_{i}.py", "lib2to3/l_{i}.py",
            "site-packages/s_{i}.py", "_sysconfigdata_{i}.py"]


def fake_stdlib(root: Path, n: int = 40) -> set[str]:
    """A library tree with ``n`` files per pattern; returns the files the corpus may take."""
    for i in range(n):
        for pattern in KEPT + EXCLUDED:
            path = root / pattern.format(i=i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"def f_{i}():\n    return {i}  # {pattern}\n")
    (root / "encodings").mkdir()
    (root / "encodings" / "cp_x.py").write_text('""" Python Character Mapping Codec cp_x generated from '
                                                "'X.TXT' with gencodec.py.\n\"\"\"\nimport codecs\n")
    (root / "notes.txt").write_text("not python")
    return {p.format(i=i) for i in range(n) for p in KEPT}


def files_in(text: str) -> list[str]:
    return re.findall(r"^# file: (\S+)$", text, flags=re.M)


def test_split_is_deterministic_disjoint_and_complete(corpus, tmp_path):
    eligible = fake_stdlib(tmp_path / "lib")
    a = corpus.build_corpus(tmp_path / "lib", tmp_path / "a", cap_mb=10)
    b = corpus.build_corpus(tmp_path / "lib", tmp_path / "b", cap_mb=10)
    for name in corpus.FILES.values():   # the same bytes from two builds
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    calib = files_in((tmp_path / "a" / corpus.FILES["calib"]).read_text())
    heldout = files_in((tmp_path / "a" / corpus.FILES["heldout"]).read_text())
    assert calib == a["files"]["calib"] and heldout == a["files"]["heldout"]
    assert not set(calib) & set(heldout)
    assert set(calib) | set(heldout) == eligible          # no test/, idlelib, codec table, ...
    assert 0.6 < len(calib) / len(eligible) < 0.95       # ~80% of 120 files
    assert a["skipped_generated"] == ["encodings/cp_x.py"]
    for split in ("calib", "heldout"):
        data = (tmp_path / "a" / corpus.FILES[split]).read_bytes()
        assert a["sha256"][split] == hashlib.sha256(data).hexdigest() == b["sha256"][split]
    text = (tmp_path / "a" / corpus.FILES["heldout"]).read_text()
    first = heldout[0]
    assert text.startswith(f"# file: {first}\n" + (tmp_path / "lib" / first).read_text())


def test_cap_takes_a_prefix_in_hash_order_and_keeps_each_files_side(corpus, tmp_path):
    fake_stdlib(tmp_path / "lib")
    full = corpus.build_corpus(tmp_path / "lib", tmp_path / "full", cap_mb=10)
    small = corpus.build_corpus(tmp_path / "lib", tmp_path / "small", cap_mb=600 / 2**20)
    taken = small["files"]["calib"] + small["files"]["heldout"]
    order = sorted(full["files"]["calib"] + full["files"]["heldout"], key=lambda r: (corpus.path_hash(r), r))
    assert set(taken) == set(order[:len(taken)]) and 10 < len(taken) < len(order)
    for split in ("calib", "heldout"):
        assert set(small["files"][split]) <= set(full["files"][split])


def test_corpus_is_reused_and_a_changed_one_refused(corpus, tmp_path):
    fake_stdlib(tmp_path / "lib")
    made = corpus.ensure_corpus(tmp_path / "c", 10, root=tmp_path / "lib")
    (tmp_path / "lib" / "mod_0.py").write_text("changed")  # a reuse does not read the library again
    assert corpus.ensure_corpus(tmp_path / "c", 10, root=tmp_path / "lib")["sha256"] == made["sha256"]
    with pytest.raises(corpus.CorpusError, match="capped at 10 MB, not 5 MB"):
        corpus.ensure_corpus(tmp_path / "c", 5, root=tmp_path / "lib")
    with open(tmp_path / "c" / corpus.FILES["heldout"], "a") as f:
        f.write("x = 1\n")
    with pytest.raises(corpus.CorpusError, match="missing or changed"):
        corpus.ensure_corpus(tmp_path / "c", 10, root=tmp_path / "lib")


def table_row(text: str, *cells: str) -> list[str]:
    """The cells of the Markdown row that starts with ``cells``."""
    prefix = "| " + " | ".join(cells) + " |"
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return [c.strip() for c in line.strip("|").split("|")]


def test_quick_run_tables_show_the_measured_numbers(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_task_specific.py"])
    out = tmp_path / "r.json"
    bench.main(["--quick", "--out", str(out), "--corpus-dir", str(tmp_path / "c"), "--sparsities", "0.5", "0.7"])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert {(r["sparsity"], r["calibration"]) for r in res["runs"]} == {(s, c) for s in (0.5, 0.7)
                                                                        for c in ("wikitext", "python")}
    assert res["corpus"]["sha256"] == res["settings"]["corpus_sha256"]
    assert res["corpus"]["files"]["calib"] and res["corpus"]["files"]["heldout"]
    d = res["dense"]
    for r in res["runs"]:
        assert 0.45 < r["realized"] and r["ppl_python"] != d["ppl_python"]
        row = table_row(printed, "wanda", f"{r['sparsity']:.0%}", bench.SOURCE_LABEL[r["calibration"]])
        assert row[3:] == [f"{r['ppl_python']:.3f}", f"{r['ppl_wikitext']:.3f}",
                           f"{d['ppl_python'] / r['ppl_python']:.3f}", f"{d['ppl_wikitext'] / r['ppl_wikitext']:.3f}"]
    # the table is computed from the file: change one number, the cells that use it follow
    res["runs"][0].update(ppl_python=123.0, ppl_wikitext=456.0)
    out.write_text(json.dumps(res))
    bench.main(["--out", str(out), "--table-only"])
    table = capsys.readouterr().out
    first = res["runs"][0]
    other = next(r for r in res["runs"] if r["sparsity"] == first["sparsity"] and r is not first)
    wiki, py = (first, other) if first["calibration"] == "wikitext" else (other, first)
    assert table_row(table, "wanda", f"{first['sparsity']:.0%}", "WikiText-2")[3:5] == ["123.000", "456.000"]
    assert table_row(table, "wanda", f"{first['sparsity']:.0%} | {wiki['ppl_python'] / py['ppl_python']:.3f}")[3] \
        == f"{wiki['ppl_wikitext'] / py['ppl_wikitext']:.3f}"
    # another model (a fresh tiny workspace) with the same --out is refused, the file is kept
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(["--quick", "--out", str(out), "--corpus-dir", str(tmp_path / "c"), "--sparsities", "0.5"])
    assert json.loads(out.read_text())["runs"][0]["ppl_python"] == 123.0


def test_search_row_is_the_searched_formula_measured_like_the_others(bench, tmp_path, capsys):
    out = tmp_path / "r.json"
    bench.main(["--quick", "--out", str(out), "--corpus-dir", str(tmp_path / "c"), "--sparsities", "0.5",
                "--search-budget", "4", "--search-full-evals", "1"])
    res = json.loads(out.read_text())
    found = res["searches"]["0.5"]
    state = json.loads((Path(found["output"]) / "state.json").read_text())
    fitness = state["config"]["fitness"]
    calib = str(tmp_path / "c" / "python_calib.txt")
    assert fitness["calib_data"] == fitness["eval_data"] == calib   # the held-out text stays unseen
    best = min((c for c in state["candidates"] if c.get("val_ppl") is not None), key=lambda c: c["val_ppl"])
    assert found["text"] == best["text"]
    rows = [r for r in res["runs"] if r["metric"] == "search@50%"]
    assert sorted(r["calibration"] for r in rows) == ["python", "wikitext"]
    assert f"`{found['pretty']}`" in capsys.readouterr().out

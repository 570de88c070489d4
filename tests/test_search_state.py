"""state.json on --resume: a committed version-1 state (written before the version bump)
resumes to the same hall of fame as its current (version-3) form, and a file that is not a search
state is a clear error that leaves the file as it was."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prunedsl.errors import SearchError
from prunedsl.search.hall import write_json
from prunedsl.search.state import STATE_VERSION, read_state

V1 = Path(__file__).parent / "data" / "search_state_v1"


def _search(cwd, out, *extra):
    return subprocess.run([sys.executable, "-m", "prunedsl", "search", "--output", str(out), "--resume",
                           "--threads", "1", *extra], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_v1_state_without_skipped_seeds_gets_them(tmp_path):
    raw = json.loads((V1 / "state.json").read_text())
    del raw["skipped_seeds"]  # version 1 added the key on first use only
    (tmp_path / "state.json").write_text(json.dumps(raw))
    state = read_state(tmp_path)
    assert state.version == 3 and state.skipped_seeds == {}


def test_v1_fixture_migrates_to_current_version():
    raw = json.loads((V1 / "state.json").read_text())
    assert raw["version"] == 1 and "skipped_seeds" in raw
    assert read_state(V1).version == STATE_VERSION == 3  # 1 -> 2 -> 3
    assert json.loads((V1 / "state.json").read_text())["version"] == 1  # reading changes nothing


def test_resume_of_v1_state_equals_resume_of_v2_state(tmp_path):
    from prunedsl.runtime.testing import save_tiny_workspace
    save_tiny_workspace(tmp_path / "tiny")  # the fixture's config names tiny/model, tiny/data
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(V1, v1)
    shutil.copytree(V1, v2)
    write_json(v2 / "state.json", read_state(v1))
    halls = []
    for out in (v1, v2):
        res = _search(tmp_path, out, "--budget", "6", "--quiet")
        assert res.returncode == 0, res.stderr[-3000:]
        st = json.loads((out / "state.json").read_text())
        assert st["version"] == 3 and st["phase"] == "done"
        assert st["counters"]["screened"] - st["counters"]["seeds"] == 6  # it did continue
        halls.append(json.loads((out / "hall.json").read_text()))
    assert halls[0]["front"] == halls[1]["front"] and halls[0]["best"] == halls[1]["best"]
    assert (v1 / "hall.md").read_text() == (v2 / "hall.md").read_text()


@pytest.mark.parametrize("content, why", [
    ("", "empty"),
    ('{"version": 1, "config": {"cli": {"mod', "truncated"),
    ("[]", "list"),
    ('[{"version": 1}]', "list"),
    ("{}", "lacks version"),
])
def test_a_broken_state_is_a_clear_error_that_keeps_the_file(tmp_path, content, why):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_text(content)
    with pytest.raises(SearchError, match="not a prunedsl search state") as e:
        read_state(out)
    assert why in str(e.value) and "left as it is" in e.value.hint and "hall" not in e.value.hint
    (out / "hall.json").write_text("{}")  # the hall of fame written with the last good state
    with pytest.raises(SearchError) as e:
        read_state(out)
    assert "hall.json and hall.md" in e.value.hint
    res = _search(tmp_path, out)
    assert res.returncode != 0
    assert "not a prunedsl search state" in res.stderr and str(out / "state.json") in res.stderr
    assert "Traceback" not in res.stderr and "is required for a new search" not in res.stderr
    assert (out / "state.json").read_text() == content

"""--gradients auto (the default): G is offered when its cost fits the full-evaluation budget,
decided once when a search starts and saved, so --resume keeps the answer."""
from __future__ import annotations

import pytest

from prunedsl import cli
from prunedsl.search.cli import _settings
from prunedsl.search.gradient_budget import decide_gradients, gradient_cost


def _args(*argv):
    return cli.build_parser().parse_args(["search", "--output", "x", "--model", "m", "--sparsity", "0.5", *argv])


def test_the_cost_is_counted_in_full_evaluations():
    assert gradient_cost(16, 16) == 2.0               # 4·16 window-forwards / 32 per evaluation
    assert gradient_cost(128, 16) == pytest.approx(512 / 144)


@pytest.mark.parametrize("full_evals, on", [(10, True), (20, True), (9, False), (3, False)])
def test_auto_is_on_when_g_costs_at_most_a_fifth_of_the_full_evaluations(full_evals, on):
    decided, why = decide_gradients(nsamples=16, val_windows=16, full_evals=full_evals)
    assert decided is on
    assert why.startswith("on (auto)" if on else "off (auto)") and f"--full-evals {full_evals}" in why


def test_auto_is_off_when_the_model_is_offloaded():
    decided, why = decide_gradients(nsamples=16, val_windows=16, full_evals=100, offload=True)
    assert not decided and "offloaded" in why


def test_a_new_search_saves_the_decision_and_the_flags_override_it():
    s = _settings(_args(), None)                        # default --full-evals 10: on
    assert s["gradients"] is True and s["gradients_note"].startswith("on (auto)")
    s = _settings(_args("--full-evals", "4"), None)
    assert s["gradients"] is False and "--gradients turns it on" in s["gradients_note"]
    assert _settings(_args("--full-evals", "4", "--gradients"), None)["gradients"] is True
    s = _settings(_args("--no-gradients"), None)
    assert s["gradients"] is False and "gradients_note" not in s


def test_resume_keeps_the_saved_answer_and_an_old_search_without_it_has_no_g():
    saved = _settings(_args("--full-evals", "4"), None)
    again = _settings(_args("--full-evals", "40"), saved)  # --full-evals may grow; G stays as decided
    assert again["gradients"] is False
    old = {k: v for k, v in saved.items() if k not in ("gradients", "gradients_note")}
    assert _settings(_args(), old)["gradients"] is False


def test_the_report_gives_the_decision_and_the_gradient_pass_time_after_the_model_is_released(tmp_path):
    from test_search_engine import FakeFitness, _config, _evolve
    from prunedsl.search.engine import Engine

    class Timed(FakeFitness):
        timings = {"gradients": 12.5}

    cfg = _config(tmp_path, budget=3, full_evals=1, batch=3, report=True, test_windows=1,
                  cli={"gradients_note": "on (auto): G costs ≈2.0 full evaluations"})
    engine = Engine(cfg, Timed, _evolve(), log=lambda m: None)
    engine.run()
    engine.fitness = None                           # as the transfer phase releases it
    from prunedsl.search.report import gradient_row
    row = gradient_row(engine, cfg.fitness)
    assert row == "on (auto): G costs ≈2.0 full evaluations; the gradient pass took 12.5 s"
    assert row in (tmp_path / "run" / "report.md").read_text()

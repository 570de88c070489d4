"""The operand table (dsl/operands.py) is the one place operands are listed: the views the
parser, checker, search and allocation checker read are derived from it in today's order,
and a new input statistic is one entry there plus its torch code in runtime/stats.py."""
import random

import pytest
import torch

import prunedsl
from prunedsl.api import parse_allocation
from prunedsl.compiler import clear_cache, interpret
from prunedsl.dsl.ast import Operand, walk
from prunedsl.dsl.operands import (INPUT, NAMED_OPERANDS, OPERANDS, X_NORM_TOKENS, X_NORMS, X_STATISTICS,
                                   OperandInfo, register_operand, search_operands, unregister_operand)
from prunedsl.dsl.types import COL, MAT, NONNEG, Type
from prunedsl.errors import DSLNameError, DSLTypeError
from prunedsl.runtime.capture import run_blocks
from prunedsl.runtime.models import LoadedModel
from prunedsl.runtime.prune import prune_model
from prunedsl.runtime.stats import (INPUT_STATISTICS, KNOWN_STATISTICS, STATISTICS, register_statistic,
                                    unregister_statistic)
from prunedsl.runtime.testing import VOCAB, tiny_llama, tiny_tokenizer
from prunedsl.runtime.workbench import Workbench
from prunedsl.search.enumerate import EnumerateProposer, _fingerprint_stats
from prunedsl.search.fitness import BASE_STATISTICS
from prunedsl.search.grammar import Grower, Vocabulary, typecheck

COLS = ("x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std", "x_var", "hinv")


def test_derived_lists_are_todays():
    """Seeded searches draw from these lists by position: their order must not change."""
    assert search_operands() == ("W", "G", *COLS, "n_in", "n_out")
    assert search_operands(COL) == COLS
    assert Vocabulary() == Vocabulary(mat=("W",), col=COLS, scalar=("n_in", "n_out"))
    assert Vocabulary.from_available(BASE_STATISTICS | {"G"}).mat == ("W", "G")
    assert Vocabulary.from_available({"hinv", "x_mean", "n_out", "W"}) == \
        Vocabulary(mat=("W",), col=("x_mean", "hinv"), scalar=("n_out",))
    assert list(_fingerprint_stats()) == ["W", "G", *COLS, "n_in", "n_out"]
    assert set(BASE_STATISTICS) == set(OPERANDS) - {"G", "block_influence"}
    assert NAMED_OPERANDS == {"W": "W", "G": "G", "hinv": "hinv", "n_in": "n_in", "n_out": "n_out"}
    assert list(NAMED_OPERANDS) == ["W", "G", "hinv", "n_in", "n_out"]  # error messages list them
    assert X_STATISTICS == {"mean": "x_mean", "std": "x_std", "var": "x_var"}
    assert X_NORMS == {"2": "x_norm2", "1": "x_norm1", "inf": "x_norminf"}
    assert X_NORM_TOKENS == {"‖X‖": "x_norm2", "‖X‖₂": "x_norm2", "‖X‖₁": "x_norm1", "‖X‖∞": "x_norminf"}
    # the printing order of canonical forms: W first, then G, hinv, the X statistics
    assert list(OPERANDS) == ["W", "G", "hinv", "x_norm2", "x_norm1", "x_norminf", "x_mean", "x_std",
                              "x_var", "n_in", "n_out", "block_influence"]  # the block statistic last


def test_every_spelling_parses_to_its_operand():
    for key, info in OPERANDS.items():
        if info.source == "block":  # structure scores only: tests/test_structure_lang.py
            continue
        for spelling in info.spellings:
            assert prunedsl.parse(f"|W| * {spelling}", allow_scalar=True).requires == {"W", key}, spelling


def test_allocation_rules_may_not_name_metric_operands():
    with pytest.raises(DSLTypeError, match="hinv is an operand of metrics"):
        parse_allocation("spread(hinv, 0.1)")
    with pytest.raises(DSLTypeError, match=r"may only appear in alpha_hill\(W\)"):
        parse_allocation("spread(W, 0.1)")


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="already exists"):
        register_operand(OPERANDS["W"])
    with pytest.raises(ValueError, match="already means 'x_mean'"):
        register_operand(OperandInfo("x_mean2", "mean(X)", "mean(X)", "m", "m", Type(COL, NONNEG), "", INPUT))
    with pytest.raises(ValueError, match="not a name"):
        register_operand(OperandInfo("x_odd", "X + 1", "X + 1", "m", "m", Type(COL, NONNEG), "", INPUT))
    with pytest.raises(ValueError, match="source"):
        register_operand(OperandInfo("x_odd", "odd(X)", "odd(X)", "m", "m", Type(COL, NONNEG), "", "disk"))
    assert "x_odd" not in OPERANDS and "odd" not in X_STATISTICS
    with pytest.raises(ValueError, match="already exists"):
        register_statistic("x_norm2", lambda i: i.x)


# --- a statistic added at run time: one operand entry, one torch entry -------------------
ABSMEAN = OperandInfo("x_absmean", "absmean(X)", "absmean(X)", "absmean(X)", r"\operatorname{absmean}(X)",
                      Type(COL, NONNEG), "mean |x| of the layer input per input channel", INPUT)


@pytest.fixture
def absmean():
    register_operand(ABSMEAN)
    register_statistic("x_absmean", lambda i: i.x.abs().mean(0, keepdim=True))
    clear_cache()
    try:
        yield
    finally:
        unregister_statistic("x_absmean")
        unregister_operand("x_absmean")
        clear_cache()


@pytest.fixture
def ids():
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))


def test_an_unregistered_statistic_is_unknown():
    with pytest.raises(DSLNameError, match="absmean"):
        prunedsl.parse("absmean(X)", allow_scalar=True)


def test_a_registered_statistic_parses_checks_prints_and_compiles(absmean):
    m = prunedsl.parse("|W| * absmean(X) ^ 0.5")
    assert m.requires == {"W", "x_absmean"} and m.type == Type(MAT, NONNEG)
    assert m.text() == "|W| * absmean(X) ^ 0.5" and "absmean(X)" in m.pretty()
    assert r"\operatorname{absmean}(X)" in m.latex()
    # sympy knows it (canonical forms): squaring a nonneg factor keeps the row order
    assert prunedsl.parse("(|W| * absmean(X)) ^ 2").canonical() == prunedsl.parse("|W| * absmean(X)").canonical()
    with pytest.raises(DSLTypeError):
        prunedsl.parse("log(W) * absmean(X)")  # typed like any operand: log of a signed W
    g = torch.Generator().manual_seed(0)
    s = {"W": torch.randn(4, 6, generator=g), "x_absmean": torch.rand(1, 6, generator=g)}
    assert torch.equal(m.compile()(s), interpret(m.expr, s))
    assert "x_absmean" in KNOWN_STATISTICS and "x_absmean" in INPUT_STATISTICS and "x_absmean" in STATISTICS


def test_the_runtime_computes_a_registered_statistic(absmean, ids):
    model = tiny_llama()
    inputs = {}

    def capture(i, name, layer, x):  # the dense inputs (nothing is pruned at sparsity 0)
        inputs[name] = x.reshape(-1, x.shape[-1]).clone()

    run_blocks(model, ids, capture, progress=False)
    m = prunedsl.parse("|W| * absmean(X)")
    compiled, seen = m.compile(), {}

    def scorer(name, stats):
        seen[name] = stats["x_absmean"]
        return compiled(stats, layer=name)

    prune_model(model, ids, scorer, m.requires, sparsity=0.0, progress=False)
    assert set(seen) == set(inputs)
    for name, x in inputs.items():
        torch.testing.assert_close(seen[name], x.abs().mean(0, keepdim=True), rtol=1e-5, atol=1e-7)

    # and the workbench's pruning pass (rank guard included) reaches the target sparsity
    bench = Workbench(LoadedModel(model, tiny_tokenizer(), "tiny", "test"), ids, progress=False)
    report = bench.prune(m, sparsity=0.5).report
    assert report.pruned / report.total == pytest.approx(0.5, abs=0.01)


def test_the_search_uses_a_registered_statistic(absmean):
    assert search_operands(COL)[-1] == "x_absmean"  # after today's, so their order is kept
    vocab = Vocabulary()
    assert vocab.col == (*COLS, "x_absmean")
    assert "x_absmean" in BASE_STATISTICS and Vocabulary.from_available(BASE_STATISTICS) == vocab
    grower = Grower(random.Random(0), Vocabulary(mat=("W",), col=("x_absmean",), scalar=()))
    assert any(Operand("x_absmean") in [Operand(n.key) for n in walk(typecheck(grower.grow(MAT, 2)))
                                        if isinstance(n, Operand)] for _ in range(50))
    enum = EnumerateProposer(max_size=3)
    assert enum.stats["x_absmean"].shape == (1, 7)  # a fingerprint value, drawn after today's
    assert any("absmean(X)" in p.text for p in enum.propose(500))

"""The compiler: plans (CSE, folding, liveness), the cache, errors, and the library
metrics against hand-written torch."""
import ast as pyast
import math
from pathlib import Path

import pytest
import torch

import prunedsl
from prunedsl.compiler import CompiledMetric, clear_cache, compile_expr, interpret
from prunedsl.compiler.plan import Const, build_plan, count_ops
from prunedsl.dsl.ast import BinOp, Num, Operand
from prunedsl.dsl.checker import check
from prunedsl.dsl.parser import parse_expr
from prunedsl.errors import CompileError, NonFiniteScoreError, PruneDSLError


def stats_for(out=6, inn=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inn, generator=g)
    W[1, 2] = 0
    return {
        "W": W, "G": torch.rand(out, inn, generator=g),
        "hinv": torch.rand(1, inn, generator=g) + 0.1,
        "x_norm2": torch.rand(1, inn, generator=g), "x_norm1": torch.rand(1, inn, generator=g),
        "x_norminf": torch.rand(1, inn, generator=g), "x_mean": torch.randn(1, inn, generator=g),
        "x_std": torch.rand(1, inn, generator=g), "x_var": torch.rand(1, inn, generator=g),
        "n_in": inn, "n_out": out,
    }


def compiled(text: str, **kw) -> CompiledMetric:
    return prunedsl.parse(text, **kw).compile()


# --- library metrics vs hand-written torch --------------------------------------------
def test_library_metrics_equal_hand_written_torch():
    s = stats_for(16, 40)
    W, x = s["W"], s["x_norm2"]
    torch.testing.assert_close(compiled("magnitude")(s), W.abs(), rtol=0, atol=0)
    torch.testing.assert_close(compiled("wanda")(s), W.abs() * x, rtol=0, atol=0)
    for a in (0.5, 0.3, 1.0):
        A = W.abs()
        want = (A / A.sum(dim=0, keepdim=True) + A / A.sum(dim=1, keepdim=True)) * x ** a
        torch.testing.assert_close(compiled(f"ria(a={a})")(s), want, rtol=1e-6, atol=0)


def test_sparsegpt_like_and_structured_shapes():
    s = stats_for(5, 7)
    got = compiled("sq(W) / sq(hinv)")(s)
    torch.testing.assert_close(got, s["W"] ** 2 / s["hinv"] ** 2)
    assert compiled("row_norm(W)")(s).shape == (5, 1)
    assert compiled("col_norm(W) * ‖X‖")(s).shape == (1, 7)
    scalar = compiled("fro(W) / n_in", allow_scalar=True)(s)
    assert scalar.shape == () and scalar.dtype == torch.float32
    torch.testing.assert_close(scalar, torch.linalg.vector_norm(s["W"]) / 7)
    assert compiled("row_sum(‖X‖) + 1", allow_scalar=True)(s).shape == ()
    assert compiled("2 + 3", allow_scalar=True)({}).item() == 5


@pytest.mark.parametrize("text, want", [
    ("row_std(W)", lambda s: s["W"].std(dim=1, keepdim=True, correction=0)),
    ("std(W) + W", lambda s: s["W"].std(correction=0) + s["W"]),
    ("row_norm(W)", lambda s: s["W"].norm(dim=1, keepdim=True)),
    ("col_max(W) * W", lambda s: s["W"].amax(dim=0, keepdim=True) * s["W"]),
    ("minmax(W)", lambda s: (s["W"] - s["W"].min()) / (s["W"].max() - s["W"].min())),
    ("zscore(W)", lambda s: (s["W"] - s["W"].mean()) / s["W"].std(correction=0)),
    ("W ^ 3 + max(W, G) - min(W, 0)", lambda s: s["W"] ** 3 + torch.maximum(s["W"], s["G"])
     - torch.clamp(s["W"], max=0)),
])
def test_semantics(text, want):
    s = stats_for()
    torch.testing.assert_close(compiled(text)(s), want(s), rtol=1e-6, atol=1e-6)


def test_minmax_and_zscore_of_a_constant_tensor_are_zero():
    s = stats_for()
    s["G"] = torch.full_like(s["G"], 0.1)
    assert torch.equal(compiled("minmax(G)")(s), torch.zeros_like(s["G"]))
    assert torch.equal(compiled("zscore(G * 0) + W")(s), s["W"])


def test_statistics_may_be_numbers_tensors_or_other_dtypes():
    s = stats_for()
    m = compiled("W * n_in / n_out")
    want = m(s)
    for n_in, n_out in [(torch.tensor(9), torch.tensor(6.0)), (9.0, torch.tensor([[6]]))]:
        assert torch.equal(m({**s, "n_in": n_in, "n_out": n_out}), want)
    got = m({**s, "W": s["W"].double()})
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert compiled("|W|")({**s, "W": s["W"].bfloat16()}).dtype == torch.float32


def test_a_bare_statistic_is_returned_as_a_copy():
    s = stats_for()
    out = compiled("G")(s)
    assert torch.equal(out, s["G"]) and out.data_ptr() != s["G"].data_ptr()


def test_inputs_are_never_modified_and_parameters_work():
    s = stats_for()
    W = torch.nn.Parameter(s["W"].clone())
    before = W.detach().clone()
    out = compiled("sq(W + 1) * ‖X‖ - W")({**s, "W": W})
    assert torch.equal(W.detach(), before) and not out.requires_grad


# --- plans -----------------------------------------------------------------------------
def test_ria_computes_abs_w_once():
    plan = build_plan(prunedsl.parse("ria").expr)
    assert count_ops(plan, "abs") == 1
    assert [k for k, _ in plan.inputs] == ["W", "x_norm2"]
    assert plan.requires == frozenset({"W", "x_norm2"})
    assert len(plan.instrs) == 8  # |W|, col_sum, /, row_sum, /, +, ^, *
    abs_text = next(i.text for i in plan.instrs if i.op == "abs")
    assert abs_text == "|W|"


def test_commutative_cse_and_no_cse_across_different_values():
    plan = build_plan(check(parse_expr("W * ‖X‖ + ‖X‖ * W")))
    assert count_ops(plan, "mul") == 1
    plan = build_plan(check(parse_expr("W - ‖X‖ + (‖X‖ - W)")))
    assert count_ops(plan, "sub") == 2


def test_constant_folding():
    plan = build_plan(check(parse_expr("W * (2 * 3 - 1 / 4) + -(2) ^ 2")))
    assert all(any(isinstance(a, int) for a in i.args) for i in plan.instrs)
    assert Const(5.75) in plan.instrs[0].args and Const(-4.0) in plan.instrs[1].args  # -(2 ^ 2)
    # a fold that would create inf from finite numbers stays, so errors can name it
    plan = build_plan(check(parse_expr("W * (1 / 0)")))
    assert plan.instrs[0].text == "1 / 0"
    # sqrt is not folded (torch's float32 sqrt is not correctly rounded)
    assert count_ops(build_plan(check(parse_expr("W * sqrt(2)"))), "sqrt") == 1


def test_registers_are_freed_after_their_last_use():
    plan = build_plan(check(parse_expr("sqrt(exp(|W| + 1) * 2) + row_sum(W)")))
    live, peak = {r for _, r in plan.inputs}, 0
    for ins, free, pos in zip(plan.instrs, plan.frees, plan.reuse):
        if pos < 0:
            live.add(ins.out)
        live -= set(free)
        if pos >= 0:
            live.add(ins.out)
        peak = max(peak, len(live))
    assert live == {plan.output}
    assert peak <= 3
    assert sum(p >= 0 for p in plan.reuse) >= 3  # exp, *, sqrt, + work in place


def test_plan_module_imports_no_torch():
    src = (Path(prunedsl.__file__).parent / "compiler" / "plan.py").read_text()
    names = set()
    for node in pyast.walk(pyast.parse(src)):
        if isinstance(node, pyast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, pyast.ImportFrom):
            names.add(node.module or "")
    assert not any(n.split(".")[0] == "torch" for n in names)


def test_unchecked_trees_are_rejected():
    with pytest.raises(CompileError, match="check"):
        compile_expr(parse_expr("|W| * ‖X‖"))


# --- cache ------------------------------------------------------------------------------
def test_cache_is_keyed_by_the_resolved_formula_text():
    clear_cache()
    a = compile_expr(prunedsl.parse("ria").expr)
    assert compile_expr(prunedsl.parse("ria(a=0.5)").expr) is a
    assert compile_expr(prunedsl.parse("(|W| / col_sum(|W|) + |W| / row_sum(|W|)) * ‖X‖ ^ 0.5").expr) is a
    assert compile_expr(prunedsl.parse("ria(a=0.3)").expr) is not a
    # rank-equivalent but different values: compiled separately
    w = compile_expr(prunedsl.parse("wanda").expr)
    assert compile_expr(prunedsl.parse("sqrt(|W| * ‖X‖)").expr) is not w
    assert prunedsl.parse("wanda").compile() is w


def test_negative_zero_does_not_share_a_cache_entry_with_zero():
    pos = check(parse_expr("W / 0"))
    neg = BinOp("/", Operand("W", type=pos.left.type), Num(-0.0, type=pos.right.type), type=pos.type)
    s = stats_for()
    a = compile_expr(pos)(s, on_nonfinite="allow")
    b = compile_expr(neg)(s, on_nonfinite="allow")
    nz = s["W"] != 0
    assert torch.equal(a[nz], -b[nz]) and torch.isinf(a[nz]).all()


# --- errors -----------------------------------------------------------------------------
def test_missing_statistics_are_named():
    with pytest.raises(CompileError) as info:
        compiled("|W| * ‖X‖ + G")({"W": torch.ones(2, 3)}, layer="blk.0.q")
    msg = str(info.value)
    assert "x_norm2" in msg and "G" in msg and "blk.0.q" in msg


@pytest.mark.parametrize("key, bad", [("x_norm2", torch.ones(3)), ("x_norm2", torch.ones(3, 1)),
                                      ("x_norm2", torch.ones(1, 4)), ("G", torch.ones(3, 2)),
                                      ("n_in", torch.ones(2))])
def test_wrong_shapes_are_named(key, bad):
    s = {"W": torch.ones(2, 3), "x_norm2": torch.ones(1, 3), "G": torch.ones(2, 3), "n_in": 3}
    s[key] = bad
    with pytest.raises(CompileError) as info:
        compiled("|W| * ‖X‖ + G * n_in")(s, layer="blk.1.k")
    msg = str(info.value)
    assert key in msg and str(tuple(bad.shape)) in msg and "blk.1.k" in msg
    if key != "n_in":
        assert "expected" in msg and ("(1, 3)" in msg or "(2, 3)" in msg)


def test_nonfinite_scores_name_the_layer_and_the_sub_formula():
    s = stats_for()
    with pytest.raises(NonFiniteScoreError) as info:
        compiled("log(|W|) * ‖X‖ + W")(s, layer="model.layers.3.mlp.down_proj")
    err = info.value
    msg = str(err)
    assert isinstance(err, PruneDSLError)
    assert "model.layers.3.mlp.down_proj" in msg
    assert "log(|W|)" in msg and "1 -inf" in msg
    assert "log(|W| + 1e-8)" in err.hint and "allow" in err.hint


def test_nonfinite_division_and_statistics():
    s = stats_for()
    s["G"][2] = 0
    with pytest.raises(NonFiniteScoreError) as info:
        compiled("sqrt(|W|) / row_sum(G) + W")(s, layer="L")
    assert "sqrt(|W|) / row_sum(G)" in str(info.value) and "row_sum(G) + 1e-8" in info.value.hint
    s = stats_for()
    s["x_norm2"][0, 4] = math.nan
    with pytest.raises(NonFiniteScoreError, match=r"statistic ‖X‖ \(x_norm2\)"):
        compiled("wanda")(s, layer="L")


def test_allow_nonfinite_ranks_nan_lowest():
    s = stats_for()
    out = compiled("log(|W|) * 0")(s, on_nonfinite="allow")  # -inf * 0 = NaN at W == 0
    assert out[1, 2] == -math.inf and torch.isfinite(out).sum() == out.numel() - 1
    s["G"][0, 0] = math.inf
    out = compiled("G")(s, on_nonfinite="allow")
    assert out[0, 0] == math.inf  # ±inf are kept
    with pytest.raises(CompileError, match="on_nonfinite"):
        compiled("G")(s, on_nonfinite="ignore")


def test_interpreter_is_the_reference_for_a_formula_with_everything():
    text = ("minmax(sigmoid(W) * tanh(G) + exp(-|W|)) + zscore(log(G + 1)) * sq(‖X‖₁) "
            "- row_max(W) / (col_min(G) + 1) + max(hinv, mean(X)) ^ 2 + std(X) * var(X) "
            "+ row_mean(W) * col_std(G) + sum(W) / mean(G) - max(W) + min(G) * fro(W) "
            "+ row_norm(G) + col_sum(W) + ‖X‖∞ ^ 0.5 / (n_in * n_out) + row_min(G) * col_norm(W)")
    m = prunedsl.parse(text)
    s = stats_for(7, 11)
    torch.testing.assert_close(m.compile()(s), interpret(m.expr, s), rtol=0, atol=0)

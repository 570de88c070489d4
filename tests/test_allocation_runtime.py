"""Allocation on tiny random models: the statistics pass prunes nothing and collects only what
the rule needs, per-block sparsity reaches prune_model, mixed N:M, the job and the CLI."""
import json

import pytest
import torch

from prunedsl.api import parse, parse_allocation
from prunedsl.cli import main
from prunedsl.errors import PruneRuntimeError
from prunedsl.runtime import allocation as alloc_rt
from prunedsl.runtime.allocation import MAX_SPARSITY, plan_allocation
from prunedsl.runtime.models import find_blocks, linear_layers
from prunedsl.runtime.prune import linear_state, prune_model
from prunedsl.runtime.testing import VOCAB, save_tiny_workspace, tiny_gemma3, tiny_llama

WANDA = parse("wanda")


def scorer(name, stats):
    return WANDA.compile()(stats, layer=name)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(0))


def plan(model, ids, rule, **kw):
    kw.setdefault("sparsity", 0.7)
    return plan_allocation(parse_allocation(rule), model, ids, scorer, WANDA.requires, progress=False, **kw)


@pytest.mark.parametrize("make, rule", [
    *[(lambda: tiny_llama(layers=4), r) for r in ("uniform", "owl", "alpha", "sdsa",
                                                   "spread(kurtosis(score) - depth, 0.2)")],
    (tiny_gemma3, "owl"), (tiny_gemma3, "alpha")])
def test_plan_then_prune_meets_the_mean(make, rule, ids):
    model = make()
    before = linear_state(model)
    p = plan(model, ids, rule)
    after = linear_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the statistics pass prunes nothing
    assert abs(p.mean_sparsity - 0.7) < 1e-9
    assert all(0 <= s <= MAX_SPARSITY for s in p.block_sparsity)
    assert len(p.block_sparsity) == len(find_blocks(model)[0])
    report = prune_model(model, ids, scorer, WANDA.requires, sparsity=0.7, group="layer",
                         layer_sparsity=p.layer_sparsity, progress=False)
    assert abs(report.sparsity - 0.7) < 1e-4
    if rule == "uniform":
        assert p.block_sparsity == [0.7] * len(p.block_sparsity) and p.statistics_pass == "none"


def test_only_the_needed_statistics_and_passes(ids, monkeypatch):
    model = tiny_llama(layers=3)
    calls = []
    real = alloc_rt.dense_score_statistics
    monkeypatch.setattr(alloc_rt, "dense_score_statistics",
                        lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    for rule, keys, passes in [("uniform", set(), 0), ("spread(depth + params, 0.1)", {"depth", "params"}, 0),
                               ("alpha", {"alpha_hill"}, 0), ("sdsa", {"skew"}, 1),
                               ("spread(0 * skew(score) + depth, 0.1)", {"depth"}, 0),  # folded away
                               ("spread(skew(score) + outlier_ratio(score, 3), 0.1)",
                                {"skew", "outlier_ratio:3"}, 1)]:
        calls.clear()
        p = plan(model, ids, rule)
        assert set(p.block_stats) == keys and len(calls) == passes, rule
        if passes:
            assert "dense_pass" in p.seconds and sorted(calls[0]) == sorted(k for k in keys)
    assert plan(model, ids, "alpha").statistics_pass == "weights only"
    # statistics computed before (they do not depend on the sparsity) are not computed again
    first = plan(model, ids, "sdsa", sparsity=0.6)
    calls.clear()
    again = plan(model, ids, "sdsa", sparsity=0.8, block_stats=first.block_stats)
    assert calls == [] and again.block_stats == first.block_stats and "dense_pass" not in again.seconds
    # no calibration data needed when the rule reads no scores
    assert plan_allocation(parse_allocation("alpha"), model, None, None, frozenset(), sparsity=0.6,
                           progress=False).mean_sparsity == pytest.approx(0.6, abs=1e-12)


def test_more_outliers_keep_more_weights(ids):
    model = tiny_llama(layers=4)
    p = plan(model, ids, "owl(M = 2, lam = 0.2)")
    r = p.block_stats["outlier_ratio:2"]
    order = sorted(range(4), key=r.__getitem__)
    assert [p.block_sparsity[i] for i in order] == sorted(p.block_sparsity, reverse=True)
    assert max(p.block_sparsity) - min(p.block_sparsity) == pytest.approx(0.4)


def test_dense_statistics_use_the_whole_block(ids):
    model = tiny_llama(layers=2)
    p = plan(model, ids, "spread(outlier_ratio(score, 1), 0.1)")
    blocks, prefix = find_blocks(model)
    seen = {}
    from prunedsl.runtime.prune import dense_scores
    scores = dense_scores(model, ids, scorer, WANDA.requires, progress=False)
    for b in range(2):
        x = torch.cat([scores[f"{prefix}.{b}.{n}"].reshape(-1) for n in linear_layers(blocks[b])]).double()
        seen[b] = float((x > x.mean()).double().mean())
    assert p.block_stats["outlier_ratio:1"] == pytest.approx([seen[0], seen[1]], rel=1e-9)


def test_mixed_nm_gives_each_block_its_own_n(ids):
    model = tiny_llama(layers=4)
    p = plan(model, ids, "owl(M = 2, lam = 0.25)", pattern=(4, 8))
    ns = [int(s.split(":")[0]) for s in p.block_pattern]
    assert sum(ns) == 16 and len(set(ns)) > 1 and all(0 <= n <= 7 for n in ns)
    report = prune_model(model, ids, p.wrap(scorer), WANDA.requires, sparsity=0.5,
                         layer_sparsity=p.layer_sparsity, progress=False)
    assert report.sparsity == 0.5
    blocks, _ = find_blocks(model)
    for b, block in enumerate(blocks):
        for layer in linear_layers(block).values():
            zeros = (layer.weight == 0).reshape(layer.weight.shape[0], -1, 8).sum(-1)  # per group of 8
            assert bool((zeros == ns[b]).all())


def test_mixed_nm_with_reconstruction_keeps_each_blocks_pattern(ids):
    model = tiny_llama(layers=2)
    p = plan(model, ids, "spread(depth, 0.25)", pattern=(4, 8))
    ns = [int(s.split(":")[0]) for s in p.block_pattern]
    assert ns == [6, 2]  # S ± λ = 0.75, 0.25
    prune_model(model, ids, p.wrap(scorer), WANDA.requires, sparsity=0.5,
                layer_sparsity=p.layer_sparsity, progress=False, reconstruct=True)
    for b, block in enumerate(find_blocks(model)[0]):
        for layer in linear_layers(block).values():
            zeros = (layer.weight == 0).reshape(layer.weight.shape[0], -1, 8).sum(-1)
            assert bool((zeros >= ns[b]).all())  # OBS may zero a kept weight only by accident


def test_global_group_is_rejected(ids):
    with pytest.raises(PruneRuntimeError, match="use one or the other"):
        plan(tiny_llama(), ids, "owl", group="global")


def test_non_finite_importance_is_a_clear_error(ids):
    with pytest.raises(PruneRuntimeError, match="not finite in block"):
        plan(tiny_llama(), ids, "spread(log(depth), 0.1)")  # depth 0 in block 0


# --- CLI and job, end to end on a saved tiny model -------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_workspace(tmp_path_factory.mktemp("tiny"), layers=3)


def prune_cli(capsys, tiny_dir, *extra):
    code = main(["prune", "--model", str(tiny_dir / "model"), "--metric", "wanda", "--nsamples", "2",
                 "--seqlen", "32", "--eval-windows", "2", "--data-dir", str(tiny_dir / "data"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prune_with_allocation_records_it(capsys, tiny_dir, tmp_path):
    code, out, err = prune_cli(capsys, tiny_dir, "--sparsity", "0.7", "--allocation", "owl(lam = 0.2)",
                               "--group", "layer", "--output", str(tmp_path / "out"), "--json")
    assert code == 0, err
    rec = json.loads(out)
    a = rec["allocation"]
    assert a["rule"] == "spread(outlier_ratio(score, 5), 0.2)" and a["name"] == "owl"
    assert len(a["block_sparsity"]) == 3 and abs(a["mean_sparsity"] - 0.7) < 1e-9
    assert set(a["block_stats"]) == {"outlier_ratio:5"} and a["statistics_pass"] == "dense forward"
    assert rec["allocation_seconds"] > 0 and abs(rec["sparsity"] - 0.7) < 1e-4
    saved = json.loads((tmp_path / "out" / "pruning.json").read_text())
    assert saved["allocation"]["block_sparsity"] == a["block_sparsity"]


def test_cli_prune_table_and_mixed_nm(capsys, tiny_dir):
    code, out, err = prune_cli(capsys, tiny_dir, "--pattern", "4:8", "--allocation", "sdsa(lam = 0.3)")
    assert code == 0, err
    assert "| allocation" in out and "spread(skew(score), 0.3)" in out
    code, out, err = prune_cli(capsys, tiny_dir, "--pattern", "4:8", "--allocation", "sdsa", "--json")
    rec = json.loads(out)
    assert rec["sparsity"] == 0.5 and all(p.endswith(":8") for p in rec["allocation"]["block_pattern"])


@pytest.mark.parametrize("extra, message", [
    (["--allocation", "spread(score, 0.1)"], "score is the metric's scores"),
    (["--allocation", "owl", "--group", "global"], "use one or the other"),
    (["--allocation", "nosuch"], "unknown name 'nosuch'"),
])
def test_cli_prune_rejects_bad_allocations_before_loading(capsys, extra, message):
    code = main(["prune", "--model", "/no/such/model", "--metric", "wanda", *extra])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_check_accepts_allocation_rules(capsys):
    assert main(["check", "owl", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["kind"] == "allocation" and rec["requires"] == ["outlier_ratio:5"]
    assert rec["pass"].startswith("dense forward")
    assert main(["check", "--allocation", "0"]) == 0
    out = capsys.readouterr().out
    assert "uniform" in out and "statistics pass" in out
    assert main(["check", "spread(W, 0.1)"]) == 2
    err = capsys.readouterr().err
    assert "alpha_hill(W)" in err and "^" in err
    assert main(["check", "wanda", "--json"]) == 0 and json.loads(capsys.readouterr().out)["name"] == "wanda"


def test_gradients_are_computed_once_when_the_rule_reads_scores(tiny_dir, monkeypatch):
    # a G metric with a score statistic: the statistics pass needs G, and the pruning pass
    # must reuse it (prune_model(gradients=...)) rather than run the backward passes again
    from prunedsl.runtime import gradients as grad_mod, prune as prune_mod
    from prunedsl.runtime.job import PruneJob, run_prune
    calls, given = [], []
    real_norms, real_prune = grad_mod.gradient_norms, prune_mod.prune_model

    def norms(*a, **k):
        calls.append(1)
        return real_norms(*a, **k)

    def prune(*a, **k):
        given.append(k.get("gradients"))
        return real_prune(*a, **k)
    monkeypatch.setattr(grad_mod, "gradient_norms", norms)
    monkeypatch.setattr(prune_mod, "gradient_norms", norms)
    monkeypatch.setattr(prune_mod, "prune_model", prune)
    job = PruneJob(model=str(tiny_dir / "model"), metric=parse("gblm"), sparsity=0.6, nsamples=2,
                   seqlen=32, data_dir=str(tiny_dir / "data"), evaluate=False, progress=False,
                   allocation=parse_allocation("sdsa(lam = 0.2)"))
    rec = run_prune(job)
    assert len(calls) == 1 and len(given) == 1 and given[0] is not None
    assert "gradients" in rec.allocation["seconds"] and abs(rec.sparsity - 0.6) < 1e-3
    assert "gradients" not in rec.allocation  # the tensors are not recorded


@pytest.mark.parametrize("dtype, device", [
    (torch.float64, "cpu"), (torch.bfloat16, "cpu"),
    pytest.param(torch.float16, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a GPU")),
])
def test_mixed_nm_scores_follow_the_scores_dtype_and_device(dtype, device):
    scores = torch.randn(4, 16, generator=torch.Generator().manual_seed(1)).to(dtype=dtype, device=device)
    out = alloc_rt.mixed_nm_scorer(lambda name, stats: scores, {"l": (3, 8)})("l", {})
    assert out.dtype == dtype and out.device == scores.device
    pruned = (out == -torch.inf).reshape(4, 2, 8).sum(-1)
    assert bool((pruned == 3).all()) and bool((out[out != -torch.inf] == torch.inf).all())


def _block_fractions(layers, nblocks):
    """Per block: pruned / total over the record's layers (model.layers.<b>.…)."""
    pruned, total = [0] * nblocks, [0] * nblocks
    steps = [0.0] * nblocks  # the largest single mask step, as a fraction of its layer
    for layer in layers:
        b = int(layer["name"].split(".")[2])
        pruned[b] += layer["pruned"]
        total[b] += layer["total"]
        out, inp = layer["shape"]
        steps[b] = max(steps[b], 1 / inp if layer["group_steps"] == "row" else 1 / (out * inp))
    return [p / t for p, t in zip(pruned, total)], steps


@pytest.mark.parametrize("group, extra", [("row", []), ("layer", []), ("layer", ["--reconstruct"])])
def test_each_block_is_pruned_to_the_plans_sparsity(capsys, tiny_dir, group, extra):
    # the plan must reach the pruning pass: each block's pruned fraction (from the record's
    # per-layer results) is the plan's block sparsity to within one mask step
    code, out, err = prune_cli(capsys, tiny_dir, "--sparsity", "0.6", "--allocation",
                               "spread(depth, 0.3)", "--group", group, *extra, "--json")
    assert code == 0, err
    rec = json.loads(out)
    plan_blocks = rec["allocation"]["block_sparsity"]
    assert max(plan_blocks) - min(plan_blocks) > 0.3  # far from uniform: a dropped plan shows
    layers = [dict(layer, group_steps=group) for layer in rec["layers"]]
    got, steps = _block_fractions(layers, len(plan_blocks))
    for b, (g, want, step) in enumerate(zip(got, plan_blocks, steps)):
        assert abs(g - want) <= step + 1e-12, (b, g, want)
    assert rec["allocation"]["realized_block_sparsity"] == pytest.approx(got, abs=1e-12)


def test_pruning_json_records_the_realized_block_sparsity(capsys, tiny_dir, tmp_path):
    code, out, err = prune_cli(capsys, tiny_dir, "--sparsity", "0.7", "--allocation", "owl(lam = 0.2)",
                               "--output", str(tmp_path / "out"), "--json")
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "pruning.json").read_text())
    a = saved["allocation"]
    got, _ = _block_fractions([dict(layer, group_steps="row") for layer in saved["layers"]], 3)
    assert a["realized_block_sparsity"] == pytest.approx(got, abs=1e-12)
    assert a["realized_block_sparsity"] != a["block_sparsity"]  # rounded to mask steps: not the mapping
    assert not {"gradients", "layer_block", "layer_pattern"} & set(a)


def test_realized_block_sparsity_from_layer_results(ids):
    model = tiny_llama(layers=3)
    p = plan(model, ids, "spread(depth, 0.2)", sparsity=0.5)
    report = prune_model(model, ids, scorer, WANDA.requires, sparsity=0.5,
                         layer_sparsity=p.layer_sparsity, progress=False)
    realized = p.realized_block_sparsity(report.layers)
    blocks, _ = find_blocks(model)
    zeros = [sum(int((m.weight == 0).sum()) for m in linear_layers(b).values()) /
             sum(m.weight.numel() for m in linear_layers(b).values()) for b in blocks]
    assert realized == pytest.approx(zeros, abs=1e-12)
    assert p.realized_block_sparsity(report.layers[:7]) == [pytest.approx(zeros[0]), None, None]
    assert p.to_dict([vars(x) for x in report.layers])["realized_block_sparsity"] == realized

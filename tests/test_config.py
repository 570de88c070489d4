"""prunedsl.config: every rule for sparsity, pattern and group, and how its errors read in
the Python API (setting names) and on the command line (flags)."""
import pytest

from prunedsl import config
from prunedsl.cli import main
from prunedsl.errors import ConfigError, PruneDSLError, SearchError

OK = dict(sparsity=0.5, group="row", pattern=None, metric_shape="Mat", allocation=False,
          nsamples=1, seqlen=2, eval_windows=None)


def test_patterns_parse_and_print_back():
    assert config.parse_pattern(None) is None
    assert config.parse_pattern("unstructured") is None
    assert config.parse_pattern(" 2 : 4 ") == (2, 4)
    assert config.pattern_text((4, 8)) == "4:8"
    assert config.pattern_text(None) == "unstructured"


@pytest.mark.parametrize("text, match", [("2:x", "neither 'unstructured' nor N:M"),
                                         ("4:4", "need 0 < N < M"), ("0:4", "need 0 < N < M"),
                                         ("{sparsity}", r"pattern '\{sparsity\}' is neither")])
def test_bad_patterns(text, match):
    with pytest.raises(ConfigError, match=match):
        config.parse_pattern(text)


def test_sparsity_follows_the_pattern_or_defaults():
    assert config.resolve_sparsity(None, (2, 4)) == 0.5
    assert config.resolve_sparsity(0.5, (2, 4)) == 0.5
    assert config.resolve_sparsity(None, (3, 4)) == 0.75
    assert config.resolve_sparsity(None, None) == 0.5
    assert config.resolve_sparsity(None, None, default=None) is None
    assert config.resolve_sparsity(0.7, None) == 0.7
    with pytest.raises(ConfigError, match=r"pattern 2:4 prunes 2/4 = 0.5 of the weights, but sparsity is 0.6"):
        config.resolve_sparsity(0.6, (2, 4))


def test_sparsity_range():
    assert config.check_sparsity(0.0) == 0.0
    with pytest.raises(ConfigError, match=r"sparsity must be in \(0, 1\), got 0.0"):
        config.check_sparsity(0.0, dense_allowed=False)
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"sparsity must be in \[0, 1\)"):
            config.check_sparsity(bad)


def test_groups():
    assert config.GROUPS == ("row", "layer", "global")
    assert config.check_group("layer") == "layer"
    with pytest.raises(ConfigError, match="unknown comparison group 'col'; choose one of row, layer, global"):
        config.check_group("col")
    assert config.default_group(None, reconstruct=False) == "row"
    assert config.default_group(None, reconstruct=True) == "layer"
    assert config.default_group("global", reconstruct=True) == "global"


@pytest.mark.parametrize("change, match", [
    (dict(sparsity=1.0), r"sparsity must be in \[0, 1\)"),
    (dict(group="col"), "unknown comparison group"),
    (dict(nsamples=0), "nsamples must be ≥ 1 and seqlen ≥ 2"),
    (dict(seqlen=1), "nsamples must be ≥ 1 and seqlen ≥ 2"),
    (dict(eval_windows=0), "eval_windows must be ≥ 1"),
    (dict(pattern=(2, 4), metric_shape="Row"), "N:M needs a per-weight .Mat. metric; this metric is Row-typed"),
    (dict(metric_shape="Col", group="global"), "compare channels within a layer; use group layer"),
    (dict(allocation=True, group="global"), "allocation sets per-block sparsity and group global"),
    (dict(allocation=True, sparsity=0.995), "allocation clamps every block to .0, 0.99., so sparsity 0.995"),
])
def test_each_prune_rule(change, match):
    config.check_prune_settings(**OK)
    with pytest.raises(ConfigError, match=match) as err:
        config.check_prune_settings(**{**OK, **change})
    assert "--" not in err.value.message and "--" not in (err.value.hint or "")


def test_seqlen():
    assert config.check_seqlen(2) == 2
    with pytest.raises(ConfigError, match="seqlen must be ≥ 2"):
        config.check_seqlen(1)


def test_the_cli_spells_settings_as_flags():
    try:
        config.check_prune_settings(**{**OK, "allocation": True, "group": "global"})
    except ConfigError as err:
        api = err
    cli = api.for_cli()
    assert type(cli) is PruneDSLError and cli.kind == api.kind == "error"
    assert cli.message.startswith("--allocation sets per-block sparsity and --group global")
    assert cli.hint == "use --group row (default) or --group layer with --allocation"
    assert api.hint == "use group row (default) or group layer with allocation"
    assert isinstance(ConfigError("{eval_windows} x").for_cli(SearchError), SearchError)
    assert ConfigError("{eval_windows} x").for_cli().message == "--eval-windows x"


def test_prune_command_prints_flags(capsys):
    assert main(["prune", "--model", "m", "--metric", "wanda", "--pattern", "2:4", "--sparsity", "0.6"]) == 2
    err = capsys.readouterr().err
    assert "error: --pattern 2:4 prunes 2/4 = 0.5 of the weights, but --sparsity is 0.6" in err
    assert "hint: leave out --sparsity with N:M" in err


def test_canonical_checks_the_group_without_naming_a_flag():
    import prunedsl
    with pytest.raises(prunedsl.ConfigError, match="unknown comparison group 'col'") as err:
        prunedsl.parse("wanda").canonical("col")
    assert "--" not in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--pattern", "2:4", "--sparsity", "0.6"],
     "search error: --pattern 2:4 prunes 2/4 = 0.5 of the weights, but --sparsity is 0.6"),
    (["--sparsity", "0"], "search error: --sparsity must be in (0, 1), got 0.0"),
    (["--pattern", "4:2"], "error: pattern 4:2: need 0 < N < M"),
])
def test_search_command_prints_flags(capsys, tmp_path, argv, message):
    assert main(["search", "--output", str(tmp_path / "run"), "--model", "m", *argv]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "run").exists()  # rejected before anything is written

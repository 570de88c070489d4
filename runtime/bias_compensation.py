"""FLAP-style bias compensation for structured removal (An et al. 2024, §3.3).

When MLP channels (or attention heads) are removed, their mean contribution to the consumer's
output over the calibration data is folded into the consumer's bias, so the output on the
mean input is unchanged:

    b_down += W_down[:, removed] @ mean(X_down)[removed]      (channels; o_proj for heads)

``mean(X)`` is the dense model's ``x_mean`` of the consumer's input (the same statistics pass
that scores the structures). Apply it *before* ``remove_structures`` slices the columns.

The saved model must load with plain transformers, so the architecture has to carry that
bias: ``check_compensable`` instantiates the block's MLP / attention class on the meta device
with ``mlp_bias`` / ``attention_bias`` switched on and refuses with a clear error when the
consumer still has no bias (Qwen2's MLP and o_proj, Gemma-3's MLP are bias-free whatever the
config says). LLaMA / SmolLM2 (``mlp_bias``, ``attention_bias``) and Gemma-3 heads
(``attention_bias``) can. Turning the flag on gives *every* linear of the MLP (attention)
a bias, so the other members get zero biases: same outputs, and the checkpoint has every
tensor the config promises.
"""
from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigError
from .models import find_blocks, text_config
from .structure_plan import RemovalPlan
from .structures import attention_of, mlp_of

CONFIG_FLAG = {"channels": "mlp_bias", "heads": "attention_bias"}
MEMBERS = {"channels": ("gate_proj", "up_proj", "down_proj"),
           "heads": ("q_proj", "k_proj", "v_proj", "o_proj")}
CONSUMER = {"channels": "down_proj", "heads": "o_proj"}
STATISTIC = "x_mean"  # what compensation needs from the statistics pass (consumers' inputs)


def check_compensable(model: nn.Module, kind: str) -> None:
    """Raise a ConfigError unless plain transformers can load a ``kind`` consumer bias."""
    if kind not in CONFIG_FLAG:
        raise ConfigError("{bias_compensation} applies to channels and heads, not {value}", value=kind,
                          hint="removing whole blocks leaves no consumer to hold a bias")
    blocks, _ = find_blocks(model)
    part = "mlp" if kind == "channels" else "self_attn"
    module = getattr(blocks[0], part, None)
    flag = CONFIG_FLAG[kind]
    arch = type(model).__name__
    cfg = copy.deepcopy(text_config(model))
    leave_out = "leave out {bias_compensation} for this model"
    if module is None or not hasattr(cfg, flag):
        raise ConfigError("{arch}'s config has no {flag}: it cannot hold the compensation bias of "
                          "{value}, so the saved model would not load in plain transformers",
                          arch=arch, flag=flag, value=kind, hint=leave_out)
    setattr(cfg, flag, True)
    try:
        with torch.device("meta"):
            probe = type(module)(cfg) if kind == "channels" else type(module)(cfg, 0)
    except Exception as err:  # an unusual constructor: do not guess
        raise ConfigError("cannot check whether {arch} carries a {value} bias ({why})", arch=arch,
                          value=kind, why=f"{type(err).__name__}: {err}", hint=leave_out) from None
    missing = [n for n in MEMBERS[kind] if getattr(getattr(probe, n, None), "bias", None) is None]
    if missing:
        raise ConfigError("{arch} has no bias on {layers} even with {flag}=True: the compensation "
                          "bias of {value} would be lost when plain transformers loads the saved model",
                          arch=arch, layers=", ".join(missing), flag=flag, value=kind, hint=leave_out)


def consumer_means(model: nn.Module, kind: str, layers: Mapping[str, Mapping]) -> dict[str, torch.Tensor]:
    """{consumer layer name: mean of its input over the calibration tokens (in,)} from the
    dense statistics (``structure_scoring.DenseStatistics.layers``)."""
    blocks, prefix = find_blocks(model)
    part = "mlp" if kind == "channels" else "self_attn"
    out = {}
    for i in range(len(blocks)):
        name = f"{prefix}.{i}.{part}.{CONSUMER[kind]}"
        out[name] = layers[name][STATISTIC].detach().reshape(-1).clone()
    return out


def _removed_columns(plan: RemovalPlan, b: int, rep: int, head_dim: int, n: int) -> torch.Tensor:
    """Consumer columns the plan removes in block b (channels: channel ids; heads: o_proj columns)."""
    keep = set(plan.keep[b])
    drop = [i for i in range(plan.total[b]) if i not in keep]
    if plan.kind == "heads":
        size = rep * head_dim if plan.heads_mode == "kv_groups" else head_dim
        drop = [u * size + j for u in drop for j in range(size)]
    cols = torch.as_tensor(drop, dtype=torch.int64)
    assert cols.numel() == 0 or int(cols.max()) < n
    return cols


def _ensure_bias(layer: nn.Linear) -> None:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=layer.weight.dtype,
                                              device=layer.weight.device), requires_grad=False)


@torch.no_grad()
def compensate(model: nn.Module, plan: RemovalPlan, means: Mapping[str, torch.Tensor]) -> None:
    """Fold the removed structures' mean contribution into the consumers' biases (in place,
    before removal) and set the config flag; every member of the kind gets a bias."""
    check_compensable(model, plan.kind)
    blocks, prefix = find_blocks(model)
    part = "mlp" if plan.kind == "channels" else "self_attn"
    for b, block in enumerate(blocks):
        if plan.kind == "channels":
            layers = dict(zip(MEMBERS["channels"], mlp_of(model, block, b)))
            rep, head_dim = 1, 1
        else:
            attn, s = attention_of(model, block, b)
            layers = {n: getattr(attn, n) for n in MEMBERS["heads"]}
            rep, head_dim = s.rep, s.head_dim
        for layer in layers.values():
            _ensure_bias(layer)
        consumer = layers[CONSUMER[plan.kind]]
        mean = means[f"{prefix}.{b}.{part}.{CONSUMER[plan.kind]}"].to(consumer.weight)
        cols = _removed_columns(plan, b, rep, head_dim, consumer.in_features).to(mean.device)
        if cols.numel():
            w = consumer.weight.index_select(1, cols).double()
            consumer.bias += (w @ mean.index_select(0, cols).double()).to(consumer.bias.dtype)
    setattr(text_config(model), CONFIG_FLAG[plan.kind], True)

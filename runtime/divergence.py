"""Paired fitnesses: a pruned model measured against references on the SAME token windows.

    ref = dense_reference(model, windows)             # dense model, once per study
    ev = evaluate_windows(model, windows, ref)        # any (pruned) model, same windows
    ev.kl_mean, ev.ppl, nll_difference(ev.nll, wanda.nll)

Three numbers per candidate, all from one forward pass per window:

- **KL to dense**: mean over predicted positions of KL(p_dense ‖ p_pruned) of the
  next-token distributions, in nats. The dense side is computed once and cached. Storing
  it whole is too big (SmolLM2's vocab is 49152: 64 windows × 255 positions × 49152 ×
  2 bytes = 1.6 GB in float16), and recomputing it per candidate doubles every
  evaluation. So the cache keeps, per position, the dense top-k log-probs (k=1024 by
  default, 8 bytes each: 134 MB for 64 windows of 256) and the log of the remaining mass; the KL is then exact for
  the distributions *coarsened* to k+1 outcomes (the top-k tokens and "any other"):
      KL_k = Σ_topk p (log p − log q) + p_tail (log p_tail − log q_tail)
  By the data-processing inequality 0 ≤ KL_k ≤ KL, equality at k ≥ vocab (then it is
  the plain KL; ``top_k=None`` keeps the whole distribution). What KL_k misses is the
  dense tail's own divergence weighted by its mass; ``DenseReference.tail_mass`` says
  how large that mass is.
- **Per-token NLL** (n, seqlen−1), float32: validation perplexity, and the paired
  difference to a reference model's NLL on the same tokens (``nll_difference``). Its
  mean is log(ppl/ppl_ref), so on a fixed slice it ranks exactly like ppl; what pairing
  adds is the standard error of that difference (tokens of one window are correlated,
  so the error is computed over per-window means), i.e. whether "better than the
  reference" is more than noise on this slice.
- **Per-window NLL sums**: what a bootstrap over windows needs (``runtime/fidelity.py``).

Sums are accumulated in float64 as in ``runtime/perplexity.py``, whose ppl this
module's reproduces (docs/design.md §5: mean NLL over seqlen − 1 tokens per window).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PruneRuntimeError
from .progress import progress_bar

DEFAULT_TOP_K = 1024  # SmolLM2: 8% of the dense mass lies outside the top 256


@dataclass(frozen=True)
class DenseReference:
    """The dense model's next-token distributions on fixed windows, kept small."""
    windows: torch.Tensor            # (n, seqlen) token ids
    top_idx: torch.Tensor | None     # (n, seqlen-1, k) int32; None: top_logp is the whole distribution
    top_logp: torch.Tensor           # (n, seqlen-1, k) float32 dense log-probs (k = vocab when whole)
    tail_logp: torch.Tensor          # (n, seqlen-1) float32 log of the mass outside the top k (-inf: none)
    nll: torch.Tensor                # (n, seqlen-1) float32 dense per-token NLL
    seconds: float

    @property
    def tail_mass(self) -> float:
        """Mean dense probability outside the kept top k (0 when the whole distribution is kept)."""
        return float(self.tail_logp.double().exp().mean())


@dataclass(frozen=True)
class WindowEval:
    """One model on fixed windows: per-token NLL, per-token KL to a dense reference."""
    nll: torch.Tensor                # (n, seqlen-1) float32
    kl: torch.Tensor | None          # (n, seqlen-1) float32 KL(dense ‖ model), None without a reference
    forward_seconds: list[float]     # per window: the model's forward pass and its NLL
    kl_seconds: list[float]          # per window: the KL's extra work

    def nll_mean(self, windows: int | None = None) -> float:
        return _mean64(self.nll[:windows])

    def ppl(self, windows: int | None = None) -> float:
        """exp(mean NLL) over the first ``windows`` windows (all: None)."""
        mean = self.nll_mean(windows)
        return math.exp(mean) if mean < 700 else math.inf

    def kl_mean(self, windows: int | None = None) -> float:
        if self.kl is None:
            raise PruneRuntimeError("this evaluation has no dense reference, so no KL")
        return _mean64(self.kl[:windows])

    def window_nll_sums(self) -> list[float]:
        """Per-window NLL sums (float64): a bootstrap over windows resamples these."""
        return self.nll.double().sum(dim=1).tolist()

    def seconds(self, windows: int | None = None, *, kl: bool = False) -> float:
        """Evaluation cost of the first ``windows`` windows, with or without the KL."""
        return sum(self.forward_seconds[:windows]) + (sum(self.kl_seconds[:windows]) if kl else 0.0)


def _mean64(t: torch.Tensor) -> float:
    if t.numel() == 0:
        raise PruneRuntimeError("no tokens to average over")
    return float(t.double().sum() / t.numel())


def _check_windows(windows: torch.Tensor) -> None:
    if windows.dim() != 2 or windows.shape[1] < 2:
        raise PruneRuntimeError(f"windows must be (n, seqlen ≥ 2) token ids, got {tuple(windows.shape)}")


def _logits(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """Float32 logits (seqlen-1, vocab) of the positions that predict a token of the window."""
    device = next(model.parameters()).device
    logits = model(input_ids=window[None].to(device), use_cache=False).logits  # (1, seqlen, vocab)
    return logits[0, :-1].float()


def _token_nll(logits: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, window[1:].to(logits.device), reduction="none")  # (seqlen-1,)


@torch.no_grad()
def dense_reference(model: nn.Module, windows: torch.Tensor, *, top_k: int | None = DEFAULT_TOP_K,
                    progress: bool = False) -> DenseReference:
    """Cache the (dense) model's next-token distributions on ``windows`` (n, seqlen).

    top_k: how many of the most likely tokens keep their own log-prob per position (the
    rest is one "other" outcome); None, or ≥ vocab: the whole distribution."""
    _check_windows(windows)
    if top_k is not None and top_k < 1:
        raise PruneRuntimeError(f"top_k must be ≥ 1 or None, got {top_k}")
    t0 = time.perf_counter()
    idx, top, tail, nll = [], [], [], []
    with progress_bar(total=windows.shape[0], desc="dense reference", unit="win", progress=progress) as bar:
        for window in windows:
            logits = _logits(model, window)                     # (T, V)
            logp = F.log_softmax(logits, dim=-1)
            nll.append(_token_nll(logits, window).cpu())
            if top_k is None or top_k >= logp.shape[-1]:
                top.append(logp.cpu())
                tail.append(torch.full(logp.shape[:1], -math.inf))
            else:
                values, where = logp.topk(top_k, dim=-1)        # (T, k)
                rest = logp.scatter(-1, where, -math.inf)       # the tail's log-probs
                top.append(values.cpu())
                idx.append(where.to(torch.int32).cpu())
                tail.append(torch.logsumexp(rest, dim=-1).cpu())
            bar.update(1)
    return DenseReference(windows=windows, top_idx=torch.stack(idx) if idx else None,
                          top_logp=torch.stack(top), tail_logp=torch.stack(tail),
                          nll=torch.stack(nll), seconds=time.perf_counter() - t0)


def _token_kl(logq: torch.Tensor, ref: DenseReference, i: int) -> torch.Tensor:
    """KL(dense ‖ model) per position of window i, coarsened to the reference's top k + tail."""
    logp = ref.top_logp[i].to(logq.device)                      # (T, k)
    if ref.top_idx is None:                                     # the whole distribution
        if logp.shape != logq.shape:
            raise PruneRuntimeError(f"the dense reference has vocab {logp.shape[-1]}, the model {logq.shape[-1]}")
        return torch.special.xlogy(logp.exp(), logp.exp()).sum(-1) - (logp.exp() * logq).sum(-1)
    where = ref.top_idx[i].to(logq.device).long()
    logq_top = logq.gather(-1, where)                           # (T, k)
    kl = (logp.exp() * (logp - logq_top)).sum(-1)
    tail_p = ref.tail_logp[i].to(logq.device)
    tail_q = torch.logsumexp(logq.scatter(-1, where, -math.inf), dim=-1)
    kl_tail = torch.where(tail_p == -math.inf, torch.zeros_like(kl), tail_p.exp() * (tail_p - tail_q))
    return kl + kl_tail


@torch.no_grad()
def evaluate_windows(model: nn.Module, windows: torch.Tensor, reference: DenseReference | None = None,
                     *, progress: bool = False) -> WindowEval:
    """Per-token NLL of ``model`` on ``windows`` (n, seqlen), and KL to ``reference`` if given
    (which must have been made on the same windows)."""
    _check_windows(windows)
    if reference is not None and not torch.equal(reference.windows, windows):
        raise PruneRuntimeError("the dense reference was computed on other windows")
    nll, kl, fwd_s, kl_s = [], [], [], []
    with progress_bar(total=windows.shape[0], desc="windows", unit="win", progress=progress) as bar:
        for i, window in enumerate(windows):
            t0 = time.perf_counter()
            logits = _logits(model, window)
            nll.append(_token_nll(logits, window).cpu())
            fwd_s.append(time.perf_counter() - t0)
            if reference is not None:
                t0 = time.perf_counter()
                kl.append(_token_kl(F.log_softmax(logits, dim=-1), reference, i).cpu())
                kl_s.append(time.perf_counter() - t0)
            bar.update(1)
    nll_t = torch.stack(nll)
    if torch.isnan(nll_t).any():
        raise PruneRuntimeError("the model's NLL is NaN on some tokens",
                                hint="the pruned model produces NaN/inf logits")
    return WindowEval(nll=nll_t, kl=torch.stack(kl) if kl else None,
                      forward_seconds=fwd_s, kl_seconds=kl_s or [0.0] * len(fwd_s))


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-token NLL difference (model − reference) on the same tokens, in nats."""
    mean: float                      # = log(ppl / ppl_ref) on these tokens
    se: float                        # standard error over per-window means (windows ~ independent)
    windows: int


def nll_difference(nll: torch.Tensor, reference_nll: torch.Tensor, windows: int | None = None) -> PairedDifference:
    """Paired NLL difference of two (n, seqlen-1) per-token NLLs measured on the same tokens."""
    if nll.shape != reference_nll.shape:
        raise PruneRuntimeError(f"paired NLLs must be on the same tokens: shapes {tuple(nll.shape)} "
                                f"and {tuple(reference_nll.shape)}")
    return window_difference(nll[:windows].double().sum(1).tolist(),
                             reference_nll[:windows].double().sum(1).tolist(), nll.shape[1])


def window_difference(window_sums: list[float], reference_sums: list[float],
                      tokens_per_window: int) -> PairedDifference:
    """The same from per-window NLL sums (what a results file keeps) of equal-length windows."""
    if len(window_sums) != len(reference_sums) or not window_sums:
        raise PruneRuntimeError(f"paired NLLs must be on the same tokens: {len(window_sums)} and "
                                f"{len(reference_sums)} windows")
    per_window = [(a - b) / tokens_per_window for a, b in zip(window_sums, reference_sums)]
    n = len(per_window)
    mean = math.fsum(per_window) / n
    se = math.sqrt(math.fsum((d - mean) ** 2 for d in per_window) / (n - 1) / n) if n > 1 else math.nan
    return PairedDifference(mean=mean, se=se, windows=n)

"""Zero-shot accuracy through lm-eval on a local multiple-choice task (offline).

The task: a WikiText-2 validation sentence, then its true next sentence among three
other sentences. On the tiny random model the accuracy lm-eval reports is checked
against the same accuracy computed here by hand (each choice's log-likelihood from the
model's logits, argmax, compare with the label).
"""
import json

import pytest
import torch

pytest.importorskip("lm_eval")

from prunedsl.errors import ConfigError, PruneRuntimeError  # noqa: E402
from prunedsl.runtime import data  # noqa: E402
from prunedsl.runtime.tasks import parse_task_list, run_tasks, task_manager  # noqa: E402
from prunedsl.runtime.testing import (next_sentence_docs, tiny_char_tokenizer, tiny_llama,  # noqa: E402
                                      write_next_sentence_task)


def wikitext_validation() -> str:
    try:
        return data.load_text("validation")
    except PruneRuntimeError as err:
        pytest.skip(f"WikiText-2 not available: {err}")


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    # 60 characters per sentence: context + choice stay far below the tiny model's 256 positions
    docs = next_sentence_docs(wikitext_validation(), 24, seed=1, max_chars=60)
    directory = tmp_path_factory.mktemp("tasks")
    return directory, write_next_sentence_task(directory, docs), docs


@torch.no_grad()
def continuation_loglikelihood(model, tok, context: str, continuation: str) -> float:
    whole = tok.encode(context + continuation, add_special_tokens=False)
    n_ctx = len(tok.encode(context, add_special_tokens=False))
    logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)  # (T, vocab)
    return sum(float(logp[t - 1, whole[t]]) for t in range(n_ctx, len(whole)))


def hand_accuracy(model, tok, docs):
    acc, acc_norm, gaps = [], [], []
    for d in docs:
        lls = [continuation_loglikelihood(model, tok, d["context"], " " + c) for c in d["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, d["choices"])]
        acc.append(max(range(len(lls)), key=lls.__getitem__) == d["label"])
        acc_norm.append(max(range(len(norm)), key=norm.__getitem__) == d["label"])
        gaps += [sorted(lls)[-1] - sorted(lls)[-2], sorted(norm)[-1] - sorted(norm)[-2]]
    return sum(acc) / len(acc), sum(acc_norm) / len(acc_norm), min(gaps)


def test_local_task_accuracy_matches_the_hand_computed_one(local_task):
    directory, name, docs = local_task
    model, tok = tiny_llama(seed=3), tiny_char_tokenizer()
    acc, acc_norm, gap = hand_accuracy(model, tok, docs)
    assert gap > 1e-4  # no near ties, so batching noise inside lm-eval cannot flip an argmax
    zs = run_tasks(model, tok, [name], tasks_dir=str(directory))
    (score,) = zs.scores
    assert score.task == name and score.samples == len(docs)
    assert score.metrics["acc"] == pytest.approx(acc)
    assert score.metrics["acc_norm"] == pytest.approx(acc_norm)
    n = len(docs)  # lm-eval's stderr of a mean of 0/1 outcomes: sqrt(p (1 - p) / (n - 1))
    assert score.stderr["acc"] == pytest.approx((acc * (1 - acc) / (n - 1)) ** 0.5)
    record = zs.to_dict()
    json.dumps(record)
    assert record["tasks"][name]["acc"] == score.metrics["acc"] and record["num_fewshot"] == 0
    assert record["tasks"][name]["acc_norm_stderr"] == score.stderr["acc_norm"]


def test_limit_evaluates_the_first_documents(local_task):
    directory, name, docs = local_task
    model, tok = tiny_llama(seed=3), tiny_char_tokenizer()
    zs = run_tasks(model, tok, [name], tasks_dir=str(directory), limit=5)
    acc, _, _ = hand_accuracy(model, tok, docs[:5])
    assert zs.scores[0].samples == 5 and zs.scores[0].metrics["acc"] == pytest.approx(acc)
    assert zs.to_dict()["limit"] == 5


def test_unknown_task_and_bad_settings_are_clear_errors(local_task, tmp_path):
    directory, name, _ = local_task
    with pytest.raises(ConfigError, match="no task named next_sentense.*did you mean next_sentence"):
        task_manager(["next_sentense"], str(directory))
    with pytest.raises(ConfigError, match="is not a directory"):
        task_manager([name], str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="tasks is empty"):
        parse_task_list(" , ")
    assert parse_task_list("boolq, piqa,boolq") == ["boolq", "piqa"]
    with pytest.raises(ConfigError, match="limit must be at least 1"):
        run_tasks(tiny_llama(), tiny_char_tokenizer(), [name], tasks_dir=str(directory), limit=0)


def test_missing_lm_eval_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(PruneRuntimeError) as info:
        task_manager(["boolq"])
    assert "prunedsl[eval]" in info.value.render()


@pytest.mark.slow
def test_smollm2_dense_and_wanda_on_the_local_task(tmp_path, capsys):
    """SmolLM2-135M, dense vs wanda 50%, on 50 documents of the local next-sentence task."""
    import prunedsl
    from prunedsl.runtime.job import PruneJob, TaskSettings, run_eval, run_prune
    name = write_next_sentence_task(tmp_path, next_sentence_docs(wikitext_validation(), 200, seed=0))
    tasks = TaskSettings(tasks=(name,), tasks_dir=str(tmp_path), task_limit=50)
    dense = run_eval("smollm2-135m", seqlen=256, eval_windows=2, tasks=tasks, progress=False)
    pruned = run_prune(PruneJob(model="smollm2-135m", metric=prunedsl.parse("wanda"), nsamples=8, seqlen=256,
                                eval_windows=2, progress=False, **vars(tasks)))
    d, p = dense.zero_shot["tasks"][name], pruned.zero_shot["tasks"][name]
    with capsys.disabled():
        print(f"\nSmolLM2-135M on {name} (50 docs): dense acc {d['acc']:.3f} ± {d['acc_stderr']:.3f} "
              f"acc_norm {d['acc_norm']:.3f}; wanda 50% acc {p['acc']:.3f} ± {p['acc_stderr']:.3f} "
              f"acc_norm {p['acc_norm']:.3f}; ppl {dense.ppl:.2f} -> {pruned.ppl:.2f}")
    assert d["samples"] == p["samples"] == 50
    # acc_norm (log-likelihood per character): plain acc favours the shortest sentence whatever it says
    # (measured: dense acc 0.32, acc_norm 0.58 ± 0.07; wanda 50% acc 0.28, acc_norm 0.48)
    assert d["acc_norm"] > 0.25 + 2 * d["acc_norm_stderr"]  # a trained model beats chance (1 in 4)
    assert p["acc_norm"] < d["acc_norm"] + 3 * d["acc_norm_stderr"]  # pruning half the weights does not help

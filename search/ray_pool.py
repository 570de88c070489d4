"""Full evaluations spread over Ray actors (``prunedsl search --workers N``).

    pool = RayPool(settings, workers=4, address="auto", log=log)   # starts the actors
    pool.submit(rec.id, rec.text[, recipe]); pool.next_result(wait=True); pool.close()

Each actor (``FullEvalWorker``) builds a ``Fitness`` from the search's ``FitnessSettings``
once: it loads the model, cuts the same validation and calibration windows, keeps the
dense weights and (with ``gradients``) computes G, so a full evaluation in an actor is the
one the engine would run in process. The proxy's statistics stay in the engine, which
screens; actors only prune and measure. One actor per CPU slot (``threads`` CPUs each), or
per GPU when the cluster has GPUs (``gpus`` per actor, 1 by default there).

The pool hands each actor one candidate at a time from a queue, so a slow actor holds no
queue of its own, and returns results in submission order (``search/pool.py``). A worker
that dies (killed, out of memory, its node lost) is restarted by Ray (``max_restarts``,
reloading its model) and the candidate it held goes back to the front of the queue: a
lost worker loses nothing but time. A candidate that has killed ``MAX_TRIES`` workers is
recorded as a failed full evaluation; when every worker is gone the search stops with
a ``SearchError`` (everything recorded is saved; ``--resume`` continues).

Ray is imported here only, and only when a pool is made: ``--workers 1`` never imports it.
"""
from __future__ import annotations

import os
import re
import signal
import threading
from collections import deque
from typing import Any, Callable

from ..errors import SearchError
from .fitness import Fitness, FitnessSettings
from .pool import FullResult, evaluate_full

MAX_TRIES = 3          # workers one candidate may take down before it is recorded as failed
Job = tuple[str, Any]  # (formula text, recipe or None): one candidate's full evaluation


def import_ray():
    try:
        import ray
    except ImportError:
        raise SearchError("--workers N (N ≥ 2) runs full evaluations on Ray, which is not installed",
                          hint="pip install 'prunedsl[distributed]' (or pip install ray), "
                               "or run with --workers 1") from None
    return ray


class FullEvalWorker:
    """A Ray actor's state: a fitness for full evaluations only, built once."""

    def __init__(self, settings: FitnessSettings, threads: int | None = None, device: dict | None = None):
        """device: the search's --device/--dtype/--offload/--calib-batch (cli.device_options);
        "auto" resolves on the actor, i.e. to the GPU Ray gave it, if any."""
        import torch
        if threads:
            torch.set_num_threads(threads)
        placement, calib_batch = None, None
        if device:
            from ..runtime.device import resolve_placement
            placement = resolve_placement(device["device"], device["dtype"], device["offload"])
            calib_batch = device.get("calib_batch")
        self.fitness = Fitness(settings, progress=False, log=lambda msg: None, screening=False,
                               placement=placement, calib_batch=calib_batch)

    def full(self, text: str, recipe: Any = None) -> tuple[dict[str, Any], float]:
        return evaluate_full(self.fitness, text, recipe)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    def __init__(self, settings: FitnessSettings, workers: int, *, address: str | None = None,
                 threads: int | None = None, gpus: float | None = None, max_restarts: int = 3,
                 log: Callable[[str], None] = print, worker_cls: type = FullEvalWorker,
                 device: dict | None = None):
        """``address``: a Ray cluster ("auto", "ray://host:10001", host:port); None: the one
        this process is connected to, else $RAY_ADDRESS, else a local Ray on this machine.
        ``gpus`` per actor: None = 1 when the cluster has GPUs, else 0."""
        if workers < 1:
            raise SearchError(f"--workers is {workers}; it must be at least 1")
        ray = self.ray = import_ray()
        cpus = threads or 1
        self.owns_ray = not ray.is_initialized()
        local = address is None and not os.environ.get("RAY_ADDRESS")
        if self.owns_ray:
            sigterm = signal.getsignal(signal.SIGTERM)
            ray.init(address=address, include_dashboard=False, configure_logging=False,
                     # a local Ray fits every worker even on fewer cores (they then share them)
                     **({"num_cpus": max(os.cpu_count() or 1, workers * cpus)} if local else {}))
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it; the engine's stops cleanly
        total = ray.cluster_resources()
        if gpus is None:
            gpus = 1 if total.get("GPU", 0) >= 1 else 0
        need = {"CPU": workers * cpus, "GPU": workers * gpus}
        short = [f"{k} {need[k]:g} (it has {total.get(k, 0):g})" for k in need if need[k] > total.get(k, 0)]
        if short:
            log(f"warning: {workers} workers need {', '.join(short)}: some wait until the cluster grows")
        quiet = {"env_vars": {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}}  # no loading bars from each actor
        actor = ray.remote(worker_cls).options(num_cpus=cpus, num_gpus=gpus, max_restarts=max_restarts,
                                               max_task_retries=0, runtime_env=quiet)
        self.workers = workers
        self.last_error: str | None = None                 # why the last worker could not start
        extra = {"device": device} if device else {}
        self.actors = [actor.remote(settings, threads, **extra) for _ in range(workers)]
        self.log = log
        self.requeued = 0                                  # candidates given back by a lost worker
        self.evaluated = [0] * workers                     # results per worker
        self._slot = {id(a): i for i, a in enumerate(self.actors)}
        self._idle = list(self.actors)
        self._queue: deque[tuple[int, Job]] = deque()      # submitted, not yet given to an actor
        self._order: deque[int] = deque()                  # keys in submission order, not returned
        self._running: dict[Any, tuple[Any, int | None, Job]] = {}  # ObjectRef -> (actor, key, job);
        #                                                  key None: waiting for a restarted actor
        self._done: dict[int, FullResult] = {}
        self._tries: dict[int, int] = {}                   # key -> workers lost while holding it
        where = (f"the Ray cluster at {address}" if address else
                 "a local Ray started for this search" if self.owns_ray and local else "the connected Ray")
        log(f"full evaluations on {workers} Ray workers ({cpus} CPU{'s' if cpus > 1 else ''}"
            + (f", {gpus:g} GPU" if gpus else "") + f" each) on {where}")

    # --- the pool protocol -------------------------------------------------------------
    def submit(self, key: int, text: str, recipe: Any = None) -> None:
        self._queue.append((key, (text, recipe)))
        self._order.append(key)
        self._dispatch()

    def next_result(self, wait: bool = True) -> FullResult | None:
        while self._order:
            head = self._order[0]
            if head in self._done:
                self._order.popleft()
                return self._done.pop(head)
            if not self._running:
                self._dispatch()
            if not self._running:
                cause = f" (a worker could not start: {self.last_error})" if self.last_error else ""
                raise SearchError(f"every Ray worker of the search is gone{cause}",
                                  hint="every worker needs the model and data at the same paths (or the "
                                       "alias's package installed); what was evaluated is saved: "
                                       "continue with --resume")
            ready, _ = self.ray.wait(list(self._running), num_returns=1, timeout=None if wait else 0)
            if not ready:
                return None
            for ref in ready:
                self._collect(ref)
        return None

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors, self._idle, self._running = [], [], {}
        self._queue.clear()
        self._order.clear()
        if self.owns_ray:
            self.ray.shutdown()
            self.owns_ray = False

    # --- dispatch ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._idle and self._queue:
            actor = self._idle.pop(0)
            key, job = self._queue.popleft()
            text, recipe = job  # a recipe only when there is one (a worker class may take none)
            ref = actor.full.remote(text) if recipe is None else actor.full.remote(text, recipe)
            self._running[ref] = (actor, key, job)

    def _collect(self, ref) -> None:
        actor, key, job = self._running.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the worker died (a failing candidate returns an error)
            if key is None:
                self._drop(actor, f"a Ray worker is gone for good ({_first_line(err)})")
            else:
                self._lost(actor, key, job, err)
        else:
            if key is not None:
                self._done[key] = FullResult(key, *result)
                self.evaluated[self._slot[id(actor)]] += 1
            self._idle.append(actor)  # after a result, or back from a restart
        self._dispatch()

    def _lost(self, actor, key: int, job: Job, err: Exception) -> None:
        """``actor`` failed while holding ``key``: give the candidate back (or record it as
        failed after MAX_TRIES) and wait for Ray to restart the actor (or drop it)."""
        if getattr(err, "actor_init_failed", False):  # not the candidate's fault: it never ran
            self._queue.appendleft((key, job))
            self.last_error = _init_cause(err)
            self._drop(actor, f"a Ray worker could not start: {self.last_error}")
            return
        tries = self._tries[key] = self._tries.get(key, 0) + 1
        if tries >= MAX_TRIES:
            self._done[key] = FullResult(key, {"error": f"{MAX_TRIES} workers died evaluating it "
                                                        f"(the last: {_first_line(err)})"}, 0.0)
            self.log(f"a Ray worker died; candidate {key} took down {MAX_TRIES}: recorded as failed")
        else:
            self.requeued += 1
            self._queue.appendleft((key, job))
            self.log(f"a Ray worker died ({type(err).__name__}); candidate {key} goes back to the queue")
        # Calls to a restarting actor fail at once; this one waits for the restart (or its death).
        self._running[actor.pid.options(max_task_retries=-1).remote()] = (actor, None, ("", None))

    def _drop(self, actor, why: str) -> None:
        self.actors = [a for a in self.actors if a is not actor]
        self.log(f"{why}; {len(self.actors)} of {self.workers} workers left")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _init_cause(err: Exception) -> str:
    """The exception an actor's constructor raised: the last line of Ray's traceback text
    (``prunedsl.errors.SearchError: no model at ...``), without its colour codes."""
    lines = [l for l in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if l.strip()]
    return lines[-1].strip() if lines else type(err).__name__

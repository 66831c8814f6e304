"""Where ``analyze score`` runs its frame tasks, how it shows progress, and the threads of a task.

:class:`Scheduler` wraps the Dask scheduler of one run: a local one (``threads``,
``processes``, ``sync``), a distributed cluster (an address, a scheduler file, or a
``distributed.Client`` the caller already made), or, from Python, whatever Dask would use
by default (the active client, else ``dask.config`` ``scheduler``), as Dask libraries do.
Each pass over the frames shows one progress bar, labelled with what it computes and
``pass i/n``, counting frame tasks and their rate in frames per second.

:func:`single_threaded_tasks` keeps torch and BLAS on one thread while frame tasks run (Dask
provides the parallelism) and gives the caller back its own settings afterwards.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Union

from schemas.errors import OptionError

if TYPE_CHECKING:
    from distributed import Client

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
#: names ``dask.compute(scheduler=...)`` accepts for a local scheduler
_DASK_LOCAL = {"threads", "threading", "processes", "multiprocessing", "sync", "synchronous", "single-threaded"}
_SYNC = {"sync", "synchronous", "single-threaded"}  # of those, the ones that run one task at a time
_FORKING = {"processes", "multiprocessing"}  # of those, the ones whose tasks run in forked processes
#: memory a worker process of the processes scheduler holds before its first frame task: the
#: modules the frame tasks import (torch, numba, zarr, pandas), in a process Dask spawns afresh.
#: Measured as the proportional set size of ``python -c "import analyze.run.tasks"``: 0.65 GiB
#: (torch 2.14.1, numpy 2.4, Linux x86_64); tests/test_plan.py checks it still holds.
WORKER_PROCESS_BYTES = 704 * 2**20
CONNECT_TIMEOUT = "5s"  # a scheduler that does not answer within this is an option error
FRAME_TASK = "frame_task"  # key prefix of the tasks counted by the progress bars


def forks_workers(spec: str | None) -> bool:
    """Whether the ``--scheduler`` value ``spec`` runs frame tasks in forked local processes
    (where a CUDA context made before the fork does not work)."""
    return (spec or "").lower() in _FORKING


def worker_bytes(spec: str | None) -> int:
    """Memory each frame task's worker process holds beyond the task, for the plan
    (:attr:`analyze.plan.passes.PlanOptions.worker_bytes`): :data:`WORKER_PROCESS_BYTES` where
    ``spec`` runs each task at once in a process of its own (processes), 0 where the tasks share
    this process (threads, sync) or run on a cluster's workers (whose memory is not counted)."""
    return WORKER_PROCESS_BYTES if forks_workers(spec) else 0


def tasks_at_once(spec: str | None, scheduler_file: str | None = None, workers: int | None = None) -> int | None:
    """How many frame tasks the scheduler ``spec`` (as :class:`Scheduler` takes it) runs at once on
    this machine: ``workers`` (default: the usable cores) for the threads and processes
    schedulers, 1 for sync, None for a distributed cluster (its workers hold their own memory).
    The plan counts their memory in the budget (:func:`analyze.plan.passes.tasks_within`)."""
    if scheduler_file or (spec is None and os.environ.get("DASK_SCHEDULER_ADDRESS")):
        return None
    name = (spec or "threads").lower()
    if name not in _DASK_LOCAL:
        return None
    if name in _SYNC:
        return 1
    from dask.system import CPU_COUNT

    return workers or CPU_COUNT


# ---- threads of a frame task ---------------------------------------------------------------

_thread_lock = threading.Lock()
_active_tasks = 0
_saved: tuple[int, Any] | None = None


@contextmanager
def single_threaded_tasks():
    """torch and BLAS on one thread while any frame task of this process runs.

    Both settings are process-wide and tasks overlap on the threads scheduler, so the first
    task to start saves the caller's settings and the last to finish restores them
    (``torch.set_num_threads``; ``threadpoolctl`` for numpy's BLAS, used by the EoMT
    class-score products).
    """
    global _active_tasks, _saved
    import torch
    from threadpoolctl import threadpool_limits

    with _thread_lock:
        if _active_tasks == 0:
            _saved = (torch.get_num_threads(), threadpool_limits(1, user_api="blas"))
            torch.set_num_threads(1)
        _active_tasks += 1
    try:
        yield
    finally:
        with _thread_lock:
            _active_tasks -= 1
            if _active_tasks == 0:
                n, limiter = _saved
                torch.set_num_threads(n)
                limiter.restore_original_limits()
                _saved = None


# ---- progress ------------------------------------------------------------------------------

def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=" frames", dynamic_ncols=True, mininterval=0.5,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames "
                           "[{elapsed}<{remaining}, {rate_noinv_fmt}]")


def _frame_progress(total: int, desc: str):
    """A local-scheduler callback that advances a bar each time a frame task finishes."""
    from dask.callbacks import Callback
    from dask.utils import key_split

    class FrameProgress(Callback):
        def _start(self, dsk):
            self.bar = _bar(total, desc)

        def _posttask(self, key, result, dsk, state, worker_id):
            if key_split(key).endswith(FRAME_TASK):  # frame_task, fit_frame_task
                self.bar.update(1)

        def _finish(self, dsk, state, errored):
            self.bar.close()

    return FrameProgress()


# ---- the scheduler -------------------------------------------------------------------------

@contextmanager
def _local_pool(spec: str, workers: int | None):
    """The threads scheduler's pool, owned by one pass: when a frame task fails, Dask raises at
    once while the pool's other tasks still run (and later ones still start); shutting the pool
    down here cancels those not started and waits for those running, so no frame task of a
    pass outlives it. (Stragglers of a failed pass left numpy's OpenBLAS ignoring the next
    caller's one-thread limit: tests/test_scheduler.py, test_tasks_run_on_one_thread after a
    failing score.) Other schedulers: None."""
    if spec not in ("threads", "threading"):
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    from dask.system import CPU_COUNT

    pool = ThreadPoolExecutor(workers or CPU_COUNT, thread_name_prefix="frame-task")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

#: what ``score_cache(scheduler=...)`` and ``fit_id_stats(scheduler=...)`` accept
#: (:meth:`Scheduler.resolve`): a :class:`Scheduler`, a name or address, a ``distributed.Client``, None
SchedulerLike = Union["Scheduler", str, "Client", None]

def _active_client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):  # distributed missing, or no client made
        return None


def _check_address(address: str) -> None:
    """ValueError for an address whose scheme distributed does not know, before a Client is
    made (a Client that fails on it hangs ~40 s in its destructor when it is not the default)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import get_backend

    scheme, location = parse_address(address)
    get_backend(scheme)
    if scheme in ("tcp", "tls", "ws", "wss", "ucx"):
        parse_host_port(location)  # "missing port number": a Client would fail on it the same way, then hang


class Scheduler:
    """The Dask scheduler of one run.

    ``spec``: ``threads`` (default), ``processes``, ``sync``, or a distributed scheduler
    address (``tcp://host:8786``); ``None`` means ``DASK_SCHEDULER_ADDRESS`` when set, else
    ``threads`` (the command line's rule). ``scheduler_file``: a distributed scheduler file.
    ``workers``: threads or processes of a local scheduler. A client made here is closed by
    :meth:`close`; one passed with :meth:`from_client` belongs to the caller.
    """

    def __init__(self, spec: str | None = None, scheduler_file: str | None = None, workers: int | None = None,
                 progress: bool = True):
        self.spec = spec or "threads"
        self.workers = workers
        self.progress = progress
        self.client: Client | None = None
        self._own_client = False
        self._passes: tuple[int, int] = (0, 0)
        self._tasks: int | None = None  # the plan's cap on frame tasks at once (start_passes)
        address = os.environ.get("DASK_SCHEDULER_ADDRESS") if spec is None and not scheduler_file else None
        if scheduler_file or address or self.spec not in _DASK_LOCAL:
            from distributed import Client

            where = scheduler_file or address or self.spec
            if scheduler_file and not os.path.isfile(scheduler_file):  # Dask would wait for it forever
                raise OptionError(f"--scheduler-file: {scheduler_file}: no such file (a scheduler writes it when "
                                  "started with `dask scheduler --scheduler-file FILE`)")
            try:
                if not scheduler_file:
                    _check_address(address or self.spec)
                self.client = (Client(scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT, set_as_default=False)
                               if scheduler_file
                               else Client(address or self.spec, timeout=CONNECT_TIMEOUT, set_as_default=False))
            except (OSError, ValueError, TypeError) as exc:
                raise OptionError(f"--scheduler: cannot connect to the Dask scheduler {where!r} ({exc}); "
                                  f"use one of {', '.join(LOCAL_SCHEDULERS)} or a reachable address") from None
            self._own_client = True
            self.spec = where

    @classmethod
    def from_client(cls, client, progress: bool = False) -> "Scheduler":
        """Run on the caller's ``distributed.Client`` (not closed by :meth:`close`)."""
        sched = cls("sync", progress=progress)
        sched.client, sched.spec = client, f"client {client.scheduler.address}"
        return sched

    @classmethod
    def dask_default(cls, progress: bool = False) -> "Scheduler":
        """What Dask itself would use: ``dask.config`` ``scheduler`` when set, the active
        ``distributed`` client (``Client()`` sets that config too), else ``threads``."""
        import dask

        name = dask.config.get("scheduler", None)
        if name in (None, "dask.distributed", "distributed"):
            client = _active_client()
            if client is not None:
                return cls.from_client(client, progress)
        if isinstance(name, str) and name in _DASK_LOCAL:
            return cls(name, progress=progress)
        return cls("threads", progress=progress)

    @classmethod
    def resolve(cls, scheduler) -> tuple["Scheduler", bool]:
        """(scheduler, made here) for what ``score_cache(scheduler=...)`` accepts: a
        :class:`Scheduler`, a scheduler name or address, a ``distributed.Client``, or None."""
        if isinstance(scheduler, Scheduler):
            return scheduler, False
        if scheduler is None:
            return cls.dask_default(), True
        if isinstance(scheduler, str):
            return cls(scheduler, progress=False), True
        from distributed import Client

        if isinstance(scheduler, Client):
            return cls.from_client(scheduler), True
        raise TypeError(f"scheduler must be a name ({', '.join(LOCAL_SCHEDULERS)}), an address, a "
                        f"distributed.Client, a Scheduler or None; got {type(scheduler).__name__}")

    def tasks_at_once(self) -> int | None:
        """How many frame tasks run at once on this machine (:func:`tasks_at_once`; None on a cluster)."""
        if self.client is not None:
            return None
        return tasks_at_once(self.spec, None, self.workers)

    def worker_bytes(self) -> int:
        """Memory each frame task's worker process holds beyond the task (:func:`worker_bytes`)."""
        return 0 if self.client is not None else worker_bytes(self.spec)

    def start_passes(self, n: int, tasks: int | None = None) -> None:
        """The next ``n`` :meth:`map_reduce` calls are passes 1..n of one cache; ``tasks``: at most
        that many frame tasks at once on a local scheduler (the plan's memory; None: as many as
        it has workers)."""
        self._passes = (0, n)
        self._tasks = tasks

    def more_passes(self, k: int = 1) -> None:
        """The cache needs ``k`` passes more than :meth:`start_passes` said (known only once one ran)."""
        i, n = self._passes
        self._passes = (i, n + k)

    def map_reduce(self, parts: list[Any], reduce: Callable[[list[Any]], Any], label: str) -> Any:
        """Compute ``reduce(parts)`` (a Dask graph over the frame tasks ``parts``), with a bar."""
        import dask

        i, n = self._passes
        self._passes = (i + 1, n)
        desc = f"pass {i + 1}/{max(n, i + 1)} {label}"
        if self.client is not None:
            return self._distributed(self.client, parts, reduce, desc)
        cap = self._tasks  # the plan's: the local scheduler runs at most that many frame tasks at once
        workers = self.workers if cap is None else min(tasks_at_once(self.spec, None, self.workers) or cap, cap)
        kwargs = {"num_workers": workers} if workers and self.spec not in _SYNC else {}
        try:
            with _local_pool(self.spec, workers) as pool, (_frame_progress(len(parts), desc) if self.progress
                                                                else nullcontext()):
                return dask.compute(reduce(parts), scheduler=self.spec, **(kwargs if pool is None else {"pool": pool}))[0]
        finally:
            if self.spec in _SYNC:  # the frame tasks ran on this thread: do not hold their maps after the pass
                from analyze.scorers.kept_maps import drop

                drop()

    def _distributed(self, client: Client, parts: list[Any], reduce: Callable[[list[Any]], Any], desc: str) -> Any:
        if not self.progress:
            return client.compute(reduce(parts)).result()
        from distributed import as_completed

        frames = client.compute(list(parts))  # one future per frame, merged on the workers
        total = client.compute(reduce(frames))
        n, finished = len(frames), as_completed(frames, loop=client.loop)
        del frames  # hold no frame result here: each is freed once merged
        with _bar(n, desc) as bar:
            for _ in finished:
                bar.update(1)
        return total.result()

    def close(self) -> None:
        if self.client is not None and self._own_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"Scheduler({self.spec!r})"

"""An ordered process pool for CPU-bound per-item work (dataset generation, conversion).

    with parallel.ordered_map(fn, workers=4, preload=[module.__name__]) as run:
        for result in run(items):      # results in item order; workers=0 or 1 runs in-process
            ...

Workers come from a forkserver: they fork from a clean server process, never from a caller that
may hold threads (jax, tqdm's monitor), and preloading the worker's module makes each fork cheap.
Workers ignore SIGINT: Ctrl-C reaches the whole process group, and a worker dying while it holds
the task queue's lock would hang the parent; the parent handles it and terminates the pool.
"""

import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any


class ordered_map:  # noqa: N801 (used like a function: `with ordered_map(...) as run`)
    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int,
        preload: Sequence[str] = (),
        chunksize: int = 1,
        in_process_below: int = 2,
    ):
        self._fn = fn
        self._workers = workers
        self._preload = list(preload)
        self._chunksize = chunksize
        self._in_process = workers < in_process_below
        self._pool = None

    def __enter__(self) -> Callable[[Iterable[Any]], Iterator[Any]]:
        if not self._in_process:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(self._preload)
            self._pool = ctx.Pool(self._workers, initializer=_ignore_sigint)
        return self._run

    def _run(self, items: Iterable[Any]) -> Iterator[Any]:
        if self._pool is None:
            return map(self._fn, items)
        return self._pool.imap(self._fn, items, chunksize=self._chunksize)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            with contextlib.suppress(Exception):
                self._pool.join()
        return False


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

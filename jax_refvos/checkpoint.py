"""Training checkpoints: an Orbax `CheckpointManager` over `<workdir>/checkpoints`, plus preemption.

One checkpoint step holds two items (shared/reference/jax_stack.md §4.1):

    <directory>/<step>/state/      the train-state pytree (OCDBT arrays + `_sharding`, `_METADATA`)
    <directory>/<step>/data_iter/  the Grain iterator position, `process_<i>-of-<n>.json`

Saves are asynchronous: `save()` copies the arrays to host memory before it returns (so the next
train step may donate them) and writes in a background thread; the next `save()`, `wait()` or
`close()` waits for it. Orbax writes a step into a temporary directory and renames it on commit, so
a run killed mid-save leaves no step behind that `latest_step()` would pick. Restores go into an
abstract target whose leaves carry shardings: restoring is also resharding, onto any mesh.

All processes of a multi-process run call every method here (Orbax's saves are collective).
"""

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint

from jax_refvos.errors import InputError

STATE_ITEM = "state"
DATA_ITER_ITEM = "data_iter"


def abstract_like(tree: Any) -> Any:
    """The restore target of a pytree: `jax.Array` leaves become `ShapeDtypeStruct` with sharding.

    Leaves that are already abstract (`jax.ShapeDtypeStruct`) or not arrays are kept as they are,
    so a freshly initialised, sharded train state can serve as its own restore target.
    """

    def leaf(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, tree)


class Checkpointer:
    """Orbax CheckpointManager over <workdir>/checkpoints: train state pytree + Grain iterator
    state, async, keep-N.

    Args:
        directory: where the step directories live (created if missing), normally
            `<workdir>/checkpoints`.
        keep: how many of the newest checkpoints to keep; older ones are deleted after a save.
        save_every: `save(step, ...)` writes when `step % save_every == 0` (or with `force`).
        async_save: write in a background thread (the default); False blocks in `save()`.
    """

    def __init__(
        self, directory: str | Path, *, keep: int = 3, save_every: int, async_save: bool = True
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        self.directory = Path(directory).absolute()
        self.save_every = save_every
        # The save cadence is decided here (`save_every`), so Orbax's own interval policy is off:
        # every `save` call that reaches the manager is forced.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest committed step in the directory, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All committed steps, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any = None, *, force: bool = False) -> bool:
        """Starts saving `state` (and the iterator position) as checkpoint `step`.

        Args:
            step: the number of optimizer updates `state` has seen.
            state: any pytree of jax arrays, sharded or not (e.g. `nnx.state(...)`, optax states).
            data_iter: a Grain `DatasetIterator` (saved with `grain.checkpoint.CheckpointSave`),
                or None to save the state alone.
            force: save even when `step % save_every != 0` (e.g. the last step, a preemption).

        Returns:
            Whether a save was started. A step that is already saved is not saved again.
        """
        if not (force or step % self.save_every == 0):
            return False
        if step in self._manager.all_steps():
            return False
        items = {STATE_ITEM: ocp.args.StandardSave(state)}
        if data_iter is not None:
            items[DATA_ITER_ITEM] = grain_checkpoint.CheckpointSave(data_iter)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(
        self, abstract_state: Any, data_iter: Any = None, *, step: int | None = None
    ) -> Any:
        """Restores checkpoint `step` (default: the latest) into the abstract target.

        Args:
            abstract_state: the target pytree; `jax.ShapeDtypeStruct` leaves carrying shardings
                (e.g. from `nnx.get_abstract_model` or `jax.eval_shape` + shardings) say where each
                array goes, so the checkpoint restores onto any mesh. Concrete `jax.Array` leaves
                are accepted too and stand for their shape, dtype and sharding.
            data_iter: a fresh Grain iterator of the same pipeline; its position is restored in
                place. None skips the iterator state.
            step: which checkpoint; None means `latest_step()`.

        Returns:
            The restored state, with the target's tree structure (optax NamedTuples included).

        Raises:
            InputError naming the directory: nothing to restore, the step does not exist, or the
            checkpoint is incomplete, corrupt or does not match the target's structure/shapes.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise InputError(f"{self.directory}: no checkpoint to restore")
        elif step not in self._manager.all_steps():
            raise InputError(
                f"{self.directory}: no checkpoint for step {step} (found {self.all_steps()})"
            )
        where = f"{self.directory / str(step)}"
        if not (self.directory / str(step) / STATE_ITEM).is_dir():
            raise InputError(f"{where}: incomplete checkpoint (no '{STATE_ITEM}' item)")
        items = {STATE_ITEM: ocp.args.StandardRestore(abstract_like(abstract_state))}
        if data_iter is not None:
            if not (self.directory / str(step) / DATA_ITER_ITEM).is_dir():
                raise InputError(
                    f"{where}: the checkpoint holds no data iterator state, but one was asked for"
                )
            items[DATA_ITER_ITEM] = grain_checkpoint.CheckpointRestore(data_iter)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            # Orbax/tensorstore raise many types (KeyError, JSONDecodeError, ValueError, ...); the
            # user needs to know which checkpoint failed and why, not the library's stack.
            raise InputError(
                f"{where}: cannot restore checkpoint ({type(e).__name__}: {_first_line(e)}); it "
                "is incomplete or corrupt, or was written for another model/config (delete the "
                "step directory to fall back to an earlier one)"
            ) from e
        return restored[STATE_ITEM]

    def wait(self) -> None:
        """Blocks until the save in flight (if any) is committed; re-raises its error."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight and releases the manager."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_subtree(directory: str | Path, target: Any, *, step: int | None = None) -> Any:
    """Part of a saved train state, e.g. `{"model": abstract model state}` for inference.

    Reads only the entries of `target` (Orbax partial restore) from the state item of
    checkpoint `step` (default the newest) in `directory`; the rest (optimizer moments, ...) is
    not read. `target`'s `jax.ShapeDtypeStruct` leaves carry the shardings to restore onto.

    Raises:
        InputError naming the checkpoint: none there, or it does not hold / fit `target`.
    """
    directory = Path(directory).absolute()
    steps = (
        sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
        if (directory.is_dir())
        else []
    )
    if step is None:
        if not steps:
            raise InputError(f"{directory}: no checkpoint to restore")
        step = steps[-1]
    elif step not in steps:
        raise InputError(f"{directory}: no checkpoint for step {step} (found {steps})")
    item = directory / str(step) / STATE_ITEM
    if not item.is_dir():
        raise InputError(f"{directory / str(step)}: incomplete checkpoint (no '{STATE_ITEM}' item)")
    args = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    try:
        with ocp.PyTreeCheckpointer() as ckpt:
            return ckpt.restore(item, args=args)
    except Exception as e:  # see `Checkpointer.restore`
        raise InputError(
            f"{directory / str(step)}: cannot restore ({type(e).__name__}: {_first_line(e)}); "
            "the checkpoint is incomplete or corrupt, or was written for another model"
        ) from e


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if len(text) <= limit else text[:limit] + "..."


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag (`.requested`) the loop polls, so it can save and exit
    cleanly; restores the previous handlers on exit.

    A second SIGINT while the flag is already set raises `KeyboardInterrupt` as usual, so Ctrl-C
    twice still stops a run that hangs. Signal handlers can only be installed from the main thread;
    elsewhere the guard logs a warning and does nothing (the flag then never sets).

        with PreemptionGuard() as guard:
            for step in ...:
                ...
                if guard.stop_requested():
                    checkpointer.save(step, state, it, force=True)
                    break
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = signals
        self.requested = False
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.received = signum
        logging.warning(
            "received %s: saving a checkpoint and stopping after this step",
            signal.Signals(signum).name,
        )

    def stop_requested(self) -> bool:
        """Whether any process was signalled. With several processes this is a collective call:
        every process must make it at the same step, so that they all stop (and save) together."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.requested))
        return bool(np.any(flags))

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is not threading.main_thread():
            logging.warning("PreemptionGuard: not in the main thread, signals are not caught")
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            # None means the previous handler was not installed from Python: restore the default.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

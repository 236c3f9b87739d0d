"""The method protocol: everything the trainer, the evaluator and the `refvos` CLI ask of a method.

A method (VIRST, SAM 2, GLUS) is one package under `jax_refvos/methods/` with a module
exposing `METHOD`, an instance of a `Method` subclass, named by one line in
`methods/registry.py`. The trainer (`training/loop.py`), the evaluator (`eval/runner.py`) and
the CLI reach it only through the registry, so they never import a method; the method builds
on the building blocks (`model/`, `losses/`, `weights/`), the input pipeline and the core.

Training, per run (`training/loop.py::train`):

1. `sections` / `scalars`: the config keys the method owns (validated with the trainer's own);
2. `check(c)`: cheap checks before the workdir is touched (data, weights, tokenizer present);
3. `prepare(c, workdir)`: main process only, makes what the run needs (synthetic data, the
   tokenizer copied into the workdir);
4. `model_record(c, workdir)`: the `"components"` (every component's config) and
   `"method_config"` that config.json records, so a workdir rebuilds its model without presets;
5. `build(c, record, workdir)`: the model (random init, or the config's start weights);
6. `trainable(c)`: which parameters train; `init_method_state(c, model)`: the pytree the method
   carries through training besides the model (GLUS: its contrastive bank; `{}` for none);
7. `train_data(c, model, ...)`: this process's part of every global batch (a Grain dataset);
8. `loss(c, model)`: `loss_fn(model, method_state, batch) -> (loss, (metrics, method_state))`;
9. `batch_counts(c, model, batch)`: real clips / frames / tokens of a batch, for throughput.

Inference (`eval/runner.py`, `refvos predict`): `load(path, kind, options)` opens a weights dir
(`kind="weights"`) or a training workdir (`kind="training"`) as a `Predictor`, which runs whole
videos: `infer_video` (every expression of a record video, for the evaluator) and `predict` (one
text on a video, for `refvos predict`). `import_weights` turns the method's released checkpoint
into a weights dir (`refvos import-weights --kind <method>`).
"""

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import ml_collections
import numpy as np
from flax import nnx

from jax_refvos.errors import InputError

Config = ml_collections.ConfigDict
WorkdirKind = Literal["weights", "training"]
# (frame indices int64[n], mask logits float32[n, e, H, W]) for e expressions (predict: e = 1).
LogitsChunk = tuple[np.ndarray, np.ndarray]
# loss_fn(model, method_state, batch) -> (scalar loss, (metrics dict, new method_state))
LossFn = Callable[[nnx.Module, Any, Mapping[str, Any]], tuple[Any, tuple[dict, Any]]]


class Predictor(abc.ABC):
    """A loaded model that segments whole videos (what `Method.load` returns)."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the model runs with, for eval.json / predict.json (e.g. a switch it was trained
        with); JSON values."""

    @abc.abstractmethod
    def infer_video(
        self, example: Any, *, seed: int, chunk_size: int
    ) -> tuple[dict[str, Any], Iterator[LogitsChunk]]:
        """Every expression of a record video (`datasets.example.VideoExample`) ->
        (plan: JSON-ready facts of what was sampled, chunks of logits [n, e, H, W] at the
        video's resolution, frames in increasing order, each once, e in the record's order)."""

    @abc.abstractmethod
    def predict(
        self, video: Any, text: str, *, seed: int, chunk_size: int
    ) -> tuple[dict[str, Any], Iterator[LogitsChunk]]:
        """One text on a video (`video_io.Video`: `names`, `size`, `images(indices)`, `len`) ->
        (facts for predict.json, chunks of logits [n, 1, H, W])."""


class Method(abc.ABC):
    """One method behind the protocol of the module docstring."""

    name: ClassVar[str]
    # Config sections the method owns -> the frozen dataclass that validates each.
    sections: ClassVar[Mapping[str, type]] = {}
    # Top-level scalar config keys the method owns (beyond the trainer's, `training/run_config`).
    scalars: ClassVar[frozenset[str]] = frozenset()
    # Options `load` accepts -> their defaults (`resolve_options`; others are an error).
    load_options: ClassVar[Mapping[str, Any]] = {}

    # ------------------------------------------------------------------ training
    def check(self, c: Config) -> None:  # noqa: B027 (optional hook)
        """Cheap checks before anything is written (InputError naming the problem)."""

    def prepare(self, c: Config, workdir: Path) -> None:  # noqa: B027 (optional hook)
        """Main process, before the model is built: make what the run needs."""

    @abc.abstractmethod
    def model_record(self, c: Config, workdir: Path) -> dict[str, Any]:
        """`{"components": {name: {"config": ..., "num_params": n}}, "method_config": {...}}`:
        what config.json records of the model, enough to rebuild it without presets."""

    @abc.abstractmethod
    def build(self, c: Config, record: Mapping[str, Any], workdir: Path) -> nnx.Module:
        """The model to train (unsharded; the trainer places it on the mesh)."""

    @abc.abstractmethod
    def trainable(self, c: Config):
        """The `training.trainable.TrainableSpec` of the run."""

    def init_method_state(self, c: Config, model: nnx.Module) -> Any:
        """The pytree the method carries through training besides the model (default none)."""
        return {}

    @abc.abstractmethod
    def train_data(
        self, c: Config, model: nnx.Module, *, process_index: int, process_count: int
    ) -> Any:
        """This process's rows of every global batch: a Grain dataset whose iterator is
        checkpointable, of dicts of numpy arrays, the leading axis the videos
        (`c.data.batch_size` per process); `model` is the built model (its input sizes)."""

    @abc.abstractmethod
    def loss(self, c: Config, model: nnx.Module) -> LossFn:
        """The training loss (traced inside the trainer's compiled step)."""

    @abc.abstractmethod
    def batch_counts(
        self, c: Config, model: nnx.Module, batch: Mapping[str, Any]
    ) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """A jitted `counts(batch) -> {"clips", "frames", "tokens"}` (int scalars, real items of
        the global batch); `batch` is an example of the batches it will see."""

    # ------------------------------------------------------------------ inference
    @abc.abstractmethod
    def load(self, path: Path, kind: WorkdirKind, options: Mapping[str, Any]) -> Predictor:
        """A weights dir or training workdir of this method as a `Predictor`."""

    def check_predict(self, text: str, options: Mapping[str, Any]) -> None:  # noqa: B027
        """Cheap checks of `refvos predict`'s text and options before anything is loaded."""

    # ------------------------------------------------------------------ weights
    def import_weights(
        self, src: Path, out_dir: Path, options: Mapping[str, Any], *, overwrite: bool
    ) -> None:
        """The method's released checkpoint -> a weights dir (`refvos import-weights`)."""
        raise InputError(f"method {self.name!r} has no checkpoint importer")


def resolve_options(method: Method, given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every option of `method.load_options`, `given` over the defaults. Text values (the CLI's
    `--option KEY=VALUE`) are cast to the default's type; unknown keys are an InputError."""
    from jax_refvos import config_lib

    unknown: Sequence[str] = sorted(set(given) - set(method.load_options))
    if unknown:
        known = ", ".join(sorted(method.load_options)) or "none"
        raise InputError(f"{where}: method {method.name!r} takes no {unknown} (takes: {known})")
    out = dict(method.load_options)
    for key, value in given.items():
        default = method.load_options[key]
        out[key] = config_lib.parse_value(key, value, default) if isinstance(value, str) else value
    return out


def parse_option_flags(items: Sequence[str]) -> dict[str, str]:
    """`["KEY=VALUE", ...]` (the CLI's repeatable `--option`) -> {KEY: "VALUE"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out

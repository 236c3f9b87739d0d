"""The `refvos` console script: `refvos <command> --flags` runs `jax_refvos.main.<command>`.

Every command module exposes ``main(argv) -> int`` built with `run_command`, so it also runs as
``python -m jax_refvos.main.<command>``. Flags are absl flags with underscores (``--out_dir``),
held in a per-command `FlagValues`, so commands can be imported and called side by side (tests do).
Expected problems (`InputError`, bad flags) print one ``error: ...`` line and exit with status 2.
"""

import importlib
import sys
from collections.abc import Callable, Sequence

from absl import flags

from jax_refvos import __version__
from jax_refvos.errors import InputError

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "jax_refvos.main.synth",
        "write the built-in synthetic RVOS benchmark (MeViS layout)",
    ),
    "baseline": ("jax_refvos.main.baseline", "write reference predictions (union, oracle, empty)"),
    "score": (
        "jax_refvos.main.score",
        "J, F and J&F of predictions, as the official MeViS/DAVIS code",
    ),
    "convert": (
        "jax_refvos.main.convert",
        "raw benchmark split -> ArrayRecord/TFRecord shards + manifest.json",
    ),
    "import-weights": (
        "jax_refvos.main.import_weights",
        "official checkpoints (a method's: VIRST; backbones: HF LM, VideoChat-Flash, LISA, "
        "CLIP) -> our weights dir",
    ),
    "track": (
        "jax_refvos.main.track",
        "SAM2/SAM2.1 video object tracking from a mask, clicks or a box (official .pt weights)",
    ),
    "train": (
        "jax_refvos.main.train",
        "train a method from a config (sharded, resumable): metrics.jsonl, TensorBoard, "
        "checkpoints",
    ),
    "predict": (
        "jax_refvos.main.predict",
        "mask a video's object named by a sentence (logits.npy, PNGs, overlay mp4 or GIF)",
    ),
    "evaluate": (
        "jax_refvos.main.evaluate",
        "a model on every expression of a converted split -> PNGs + J&F (or a submission zip)",
    ),
}

EXIT_INPUT_ERROR = 2


def run_command(
    name: str,
    doc: str,
    define_flags: Callable[[flags.FlagValues], None],
    body: Callable[[flags.FlagValues], None],
    argv: Sequence[str] | None,
) -> int:
    """Parses `argv` into a fresh FlagValues, runs `body`, maps expected errors to exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fv = flags.FlagValues()
    define_flags(fv)
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print(f"usage: refvos {name} [flags]\n\n{doc.strip()}\n\nflags:")
        print(fv.get_help(include_special_flags=False))
        return 0
    try:
        rest = fv([f"refvos {name}", *argv])
        if len(rest) > 1:
            raise flags.Error(f"unexpected arguments: {' '.join(rest[1:])}")
    except flags.Error as e:
        print(f"error: {e}\n(see: refvos {name} --help)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    try:
        body(fv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def method_options(fv: flags.FlagValues, names: Sequence[str]) -> dict:
    """The method options the user gave: `--option KEY=VALUE`s and the named option flags
    `names` that are present (the method's defaults apply to the rest)."""
    from jax_refvos.methods.base import parse_option_flags

    given = parse_option_flags(fv.option)
    given.update({name: fv[name].value for name in names if fv[name].present})
    return given


def _usage() -> str:
    lines = [
        f"refvos {__version__}: language-guided video object segmentation in JAX",
        "",
        "usage: refvos <command> [--flag=value ...]   (refvos <command> --help)",
        "",
        "commands:",
    ]
    lines += [f"  {cmd:<10} {summary}" for cmd, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else EXIT_INPUT_ERROR)
    if argv[0] == "--version":
        print(__version__)
        sys.exit(0)
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sys.exit(module.main(argv[1:]))


if __name__ == "__main__":
    main()

"""Progress bars that read well both in a terminal and in a log file."""

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; in a log (stderr not a terminal) it updates every 30 s, not 10x/s."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
    kwargs.setdefault("dynamic_ncols", interactive)
    return tqdm(iterable, disable=not enabled, **kwargs)

"""Where the project's shared reference data lives (fixtures, tokenizers) for tests.

Looked up in order: $REFVOS_SHARED_DIR, `<repo>/shared`, `<repo>/../shared` (the developers'
layout). Tests that need it skip when none exists.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    candidates = [os.environ.get("REFVOS_SHARED_DIR"), REPO / "shared", REPO.parent / "shared"]
    for c in candidates:
        if c and (Path(c) / "fixtures").is_dir():
            return Path(c)
    return None


VIRST_FIXTURE = (shared_dir() or REPO / "missing-shared") / "fixtures" / "virst_tiny_dev"
# The Qwen2 tokenizer of VideoChat-Flash / VIRST (`shared/tokenizers/`).
QWEN2_TOKENIZER = (shared_dir() or REPO / "missing-shared") / "tokenizers" / "videochat_flash_qwen2"

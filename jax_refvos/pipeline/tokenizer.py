"""Hugging Face tokenizer from a local directory, with the special tokens the methods need.

VIRST adds `[SEG]` as an ordinary added token (`tokenizer.add_tokens(["[SEG]"])`, id 151646 on
Qwen2) and `<image>` as a special one that becomes id -200. GLUS (LISA-7B-v1's tokenizer) already
has `[SEG]`, `<im_start>`, `<im_end>`; they are added here when a tokenizer lacks them. The model
must size its embedding table to `TextTokenizer.vocab_size`.
"""

import dataclasses
import functools
import threading
from typing import Any

from jax_refvos.token_ids import IGNORE_INDEX, IMAGE_TOKEN_INDEX  # noqa: F401 (re-exported)

IMAGE_TOKEN = "<image>"
SEG_TOKEN = "[SEG]"
GLUS_SPECIAL = ("<im_start>", "<im_end>")


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
    """A loaded tokenizer plus the ids the prompt builders use."""

    hf: Any  # a transformers PreTrainedTokenizer(Fast)
    seg_id: int
    pad_id: int
    vocab_size: int  # len(tokenizer) after additions

    def token_id(self, token: str) -> int:
        i = self.hf.convert_tokens_to_ids(token)
        if i is None or i == self.hf.unk_token_id:
            raise KeyError(f"tokenizer has no token {token!r}")
        return int(i)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self.hf(text, add_special_tokens=add_special_tokens)["input_ids"])


_LOAD_LOCK = threading.Lock()


def load_tokenizer(path: str, method: str = "virst") -> TextTokenizer:
    """Loads `path` with `AutoTokenizer` (local files only) and adds missing method tokens.

    Cached per process, so Grain workers load it once. Grain's reader threads call this
    concurrently; transformers' lazy imports are not thread-safe (a racing thread sees
    "cannot import name 'AutoTokenizer'"), so the first load is serialised.
    """
    with _LOAD_LOCK:
        return _load_tokenizer(path, method)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(path: str, method: str) -> TextTokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    vocab = tok.get_vocab()
    if SEG_TOKEN not in vocab:
        tok.add_tokens([SEG_TOKEN])  # ordinary added token, as VIRST's training code does
    if method == "glus":
        missing = [t for t in GLUS_SPECIAL if t not in vocab]
        if missing:
            tok.add_tokens(missing, special_tokens=True)
    pad = tok.pad_token_id
    if pad is None:  # LISA/LLaMA pads with unk (id 0)
        pad = tok.unk_token_id if tok.unk_token_id is not None else tok.eos_token_id
    return TextTokenizer(
        hf=tok,
        seg_id=int(tok.convert_tokens_to_ids(SEG_TOKEN)),
        pad_id=int(pad or 0),
        vocab_size=len(tok),
    )

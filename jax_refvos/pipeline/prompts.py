"""Prompts with `[SEG]` slots, tokenised to static length with target masking.

VIRST (`utils/preprocess.py::preprocess_virst`, `get_qa_pair`, templates in `utils/utils.py`):
Qwen ChatML, system "You are a helpful assistant.", one of 3 short / 2 long questions (long when
the expression ends in "?"), one of 4 answers, always 10 `[SEG]` as "(0) [SEG], ..., (9) [SEG]".
Labels: system and user turns -100 except "\\n", <|im_start|>, <|im_end|>; the assistant turn
keeps its ids (the model drops `[SEG]` from the CE itself). `<image>` -> -200.

GLUS (`dataset/refer_video_seg_dataset.py`, `dataset/dataset.py::collate_fn`, `utils/utils.py`):
llava_v1, 4 rounds (one per query frame), the context instruction before round 1, a random
question (4) and answer (5) per round, one `[SEG]` each; `<image>` wrapped in <im_start> <im_end>,
tokenised with `tokenizer_image_token`; labels keep only the assistant answers and their "</s>".
"""

import dataclasses
from collections.abc import Callable

import numpy as np
from jaxtyping import Bool, Int

from jax_refvos.pipeline.tokenizer import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    IMAGE_TOKEN_INDEX,
    TextTokenizer,
)

VIRST_SYSTEM = "You are a helpful assistant."
VIRST_NUM_SEG = 10  # hard-coded in get_qa_pair whatever seg_token_num says
VIRST_MODALITY = "image"  # preprocess_virst's default, also for videos
_REF = "Reference {modality}: " + IMAGE_TOKEN + " \n"
VIRST_SHORT_QUESTIONS = (
    _REF + "What is {sent} in the Reference {modality}? Please respond with segmentation mask in"
    " the Target Image.",
    _REF + "What is {sent} in the Reference {modality}? Please output segmentation mask in the"
    " Target Image.",
    _REF + "Please find {sent} in the Reference {modality} and segment it in the Target Image.",
)
VIRST_LONG_QUESTIONS = (
    _REF + "{sent} Please find it in the Reference {modality} and respond with segmentation mask"
    " in the Target Image.",
    _REF + "{sent} Please find it in the Reference {modality} and output segmentation mask in the"
    " Target Image.",
)
VIRST_ANSWERS = (
    "It is {seg}.",
    "Sure, {seg}.",
    "Sure, it is {seg}.",
    "Sure, the segmentation result is {seg}.",
)

GLUS_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
GLUS_ROLES = ("USER", "ASSISTANT")
GLUS_SEP, GLUS_SEP2 = " ", "</s>"
GLUS_CONTEXT = (
    IMAGE_TOKEN * 4 + "\nPlease finished the following tasks on the context frames above.\n"
)
GLUS_QUESTIONS = (
    IMAGE_TOKEN + "\nCan you segment the {class_name} in this frame?",
    IMAGE_TOKEN + "\nPlease segment the {class_name} in this frame.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this frame? Please respond with segmentation mask.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this frame? Please output segmentation mask.",
)
GLUS_ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)
GLUS_IM_START, GLUS_IM_END = "<im_start>", "<im_end>"


@dataclasses.dataclass(frozen=True)
class Tokens:
    """One tokenised conversation, padded to a static length."""

    input_ids: Int[np.ndarray, "l"]
    labels: Int[np.ndarray, "l"]
    valid: Bool[np.ndarray, "l"]
    seg_index: Int[np.ndarray, "n"]  # positions of the [SEG] ids (-1 padding)
    text: str  # the expression text actually used (after any shortening)


def virst_text(text: str, *, train: bool, dataset: str = "") -> str:
    """Expression as VIRST feeds it: raw in training (LV-VIS '_' -> ' '), normalised at eval."""
    if train:
        return text.replace("_", " ") if "lvvis" in dataset else text
    return " ".join(text.lower().split())


def glus_text(text: str) -> str:
    """Expression as GLUS feeds it: one trailing '.' removed, stripped, lowercased."""
    text = text[:-1] if text.endswith(".") else text
    return text.strip().lower()


def virst_messages(sent: str, q: int, a: int) -> list[tuple[str, str]]:
    """ChatML turns for template choices `q` (index into short or long list) and `a`."""
    questions = VIRST_LONG_QUESTIONS if sent.endswith("?") else VIRST_SHORT_QUESTIONS
    seg = ", ".join(f"({i}) [SEG]" for i in range(VIRST_NUM_SEG))
    return [
        ("system", VIRST_SYSTEM),
        ("user", questions[q % len(questions)].format(sent=sent, modality=VIRST_MODALITY)),
        ("assistant", VIRST_ANSWERS[a].format(seg=seg)),
    ]


def virst_choices(sent: str, rng: np.random.Generator) -> tuple[int, int]:
    n = len(VIRST_LONG_QUESTIONS if sent.endswith("?") else VIRST_SHORT_QUESTIONS)
    return int(rng.integers(n)), int(rng.integers(len(VIRST_ANSWERS)))


def virst_encode(tok: TextTokenizer, messages: list[tuple[str, str]]) -> tuple[list, list]:
    """Token ids and labels exactly as `preprocess_virst` builds them (before padding)."""
    keep = {tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>"), *tok.encode("\n")}
    ids, labels = [], []
    for role, content in messages:
        # Each turn is delimited by special tokens, so per-turn tokenisation equals the whole
        # string's (the reference measures its label spans the same way).
        turn = []
        for k, chunk in enumerate(f"<|im_start|>{role}\n{content}<|im_end|>\n".split(IMAGE_TOKEN)):
            turn += ([IMAGE_TOKEN_INDEX] if k else []) + tok.encode(chunk)
        ids += turn
        if role == "assistant":
            labels += [i if i != IMAGE_TOKEN_INDEX else IGNORE_INDEX for i in turn]
        else:
            labels += [i if i in keep else IGNORE_INDEX for i in turn]
    return ids, labels


def glus_conversation(sent: str, qs: list[int], ans: list[int]) -> tuple[str, list[tuple]]:
    """llava_v1 prompt (with <im_start><image><im_end>) and the answers' character spans."""
    user, assistant = GLUS_ROLES
    out, spans = GLUS_SYSTEM + GLUS_SEP, []
    for j, (q, a) in enumerate(zip(qs, ans, strict=True)):
        question = GLUS_QUESTIONS[q].format(class_name=sent)
        out += f"{user}: " + (GLUS_CONTEXT if j == 0 else "") + question + GLUS_SEP
        out += f"{assistant}: "
        answer = GLUS_ANSWERS[a]
        start = len(out.replace(IMAGE_TOKEN, GLUS_IM_START + IMAGE_TOKEN + GLUS_IM_END))
        out += answer + GLUS_SEP2
        spans.append((start, start + len(answer) + len(GLUS_SEP2)))
    return out.replace(IMAGE_TOKEN, GLUS_IM_START + IMAGE_TOKEN + GLUS_IM_END), spans


def glus_choices(rng: np.random.Generator, rounds: int, *, train: bool) -> tuple[list, list]:
    """Template indices per round; eval uses the inference prompt (question 0, answer 3)."""
    if not train:
        return [0] * rounds, [3] * rounds
    qs, ans = [], []
    for _ in range(rounds):  # the reference draws question then answer, round by round
        qs.append(int(rng.integers(len(GLUS_QUESTIONS))))
        ans.append(int(rng.integers(len(GLUS_ANSWERS))))
    return qs, ans


def glus_encode(tok: TextTokenizer, prompt: str, spans: list[tuple]) -> tuple[list, list]:
    """`tokenizer_image_token` ids; labels keep the tokens overlapping the answer spans."""
    chunks = prompt.split(IMAGE_TOKEN)
    enc = [tok.hf(c, return_offsets_mapping=True) for c in chunks]
    bos = tok.hf.bos_token_id
    first = enc[0]["input_ids"]
    offset = 1 if first and bos is not None and first[0] == bos else 0
    ids = [bos] * offset
    labels = [IGNORE_INDEX] * offset
    pos = 0
    for k, (chunk, e) in enumerate(zip(chunks, enc, strict=True)):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            pos += len(IMAGE_TOKEN)
        for tid, (s, t) in zip(e["input_ids"][offset:], e["offset_mapping"][offset:], strict=True):
            ids.append(tid)
            hit = t > s and any(pos + s < b and pos + t > a for a, b in spans)
            labels.append(tid if hit else IGNORE_INDEX)
        pos += len(chunk)
    return ids, labels


def fit(
    encode: Callable[[str], tuple[list, list]], text: str, max_len: int
) -> tuple[list, list, str]:
    """Encodes `text`; if too long, drops words from the end of the expression until it fits.

    The template (and every `[SEG]`) is never cut; raises when even one word does not fit.
    """
    ids, labels = encode(text)
    if len(ids) <= max_len:
        return ids, labels, text
    words = text.split()
    lo, hi, best = 1, len(words) - 1, None
    while lo <= hi:  # the longest prefix of words that fits
        mid = (lo + hi) // 2
        cand = encode(" ".join(words[:mid]))
        if len(cand[0]) <= max_len:
            best, lo = (*cand, " ".join(words[:mid])), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError(
            f"max_text_len={max_len} cannot hold the prompt template (needs {len(encode('')[0])})"
        )
    return best


def pad_tokens(
    tok: TextTokenizer, ids: list, labels: list, text: str, max_len: int, num_seg: int
) -> Tokens:
    n = len(ids)
    out_ids = np.full(max_len, tok.pad_id, np.int32)
    out_labels = np.full(max_len, IGNORE_INDEX, np.int32)
    out_ids[:n], out_labels[:n] = ids, labels
    valid = np.arange(max_len) < n
    seg = np.flatnonzero(out_ids[:n] == tok.seg_id)
    if len(seg) != num_seg:
        raise ValueError(f"expected {num_seg} [SEG] tokens, found {len(seg)} in {text!r}")
    return Tokens(out_ids, out_labels, valid, seg.astype(np.int32), text)


def virst_tokens(tok: TextTokenizer, sent: str, rng: np.random.Generator, max_len: int) -> Tokens:
    q, a = virst_choices(sent, rng)
    # The template is chosen on the full expression ("?" ending), then kept while shortening.
    long = sent.endswith("?")

    def encode(s):
        msgs = virst_messages(s + ("?" if long and not s.endswith("?") else ""), q, a)
        return virst_encode(tok, msgs)

    ids, labels, used = fit(encode, sent, max_len)
    return pad_tokens(tok, ids, labels, used, max_len, VIRST_NUM_SEG)


def glus_tokens(
    tok: TextTokenizer,
    sent: str,
    rng: np.random.Generator,
    max_len: int,
    *,
    rounds: int = 4,
    train: bool = True,
) -> Tokens:
    qs, ans = glus_choices(rng, rounds, train=train)
    ids, labels, used = fit(
        lambda s: glus_encode(tok, *glus_conversation(s, qs, ans)), sent, max_len
    )
    return pad_tokens(tok, ids, labels, used, max_len, rounds)

"""Prompt templates, [SEG] slots, target masking and tokeniser ids."""

import copy

import numpy as np
import pytest
from shared_paths import QWEN2_TOKENIZER

from jax_refvos.pipeline import prompts
from jax_refvos.pipeline.config import SYNTH_TOKENIZER
from jax_refvos.pipeline.tokenizer import IGNORE_INDEX, IMAGE_TOKEN_INDEX, load_tokenizer

QWEN2 = QWEN2_TOKENIZER
SEG10 = ", ".join(f"({i}) [SEG]" for i in range(10))


def test_virst_messages_match_official_templates():
    msgs = prompts.virst_messages("the red car", 0, 1)
    assert msgs[0] == ("system", "You are a helpful assistant.")
    assert msgs[1][1] == (
        "Reference image: <image> \nWhat is the red car in the Reference image? Please respond"
        " with segmentation mask in the Target Image."
    )
    assert msgs[2][1] == f"Sure, {SEG10}."
    long = prompts.virst_messages("which car turns left?", 1, 3)
    assert long[1][1] == (
        "Reference image: <image> \nwhich car turns left? Please find it in the Reference image"
        " and output segmentation mask in the Target Image."
    )
    assert long[2][1].count("[SEG]") == 10


def test_virst_text_normalisation():
    assert prompts.virst_text("The  Red\tCar", train=False) == "the red car"
    assert prompts.virst_text("The  Red Car", train=True) == "The  Red Car"
    assert prompts.virst_text("brown_bear", train=True, dataset="lvvis") == "brown bear"


def test_glus_conversation_matches_llava_v1():
    conv, spans = prompts.glus_conversation("dog", [0, 1, 0, 0], [3, 0, 4, 1])
    im = "<im_start><image><im_end>"
    want = (
        prompts.GLUS_SYSTEM + " USER: " + im * 4 + "\nPlease finished the following tasks on the"
        " context frames above.\n" + im + "\nCan you segment the dog in this frame? ASSISTANT:"
        " Sure, the segmentation result is [SEG].</s>USER: " + im + "\nPlease segment the dog in"
        " this frame. ASSISTANT: It is [SEG].</s>USER: " + im + "\nCan you segment the dog in"
        " this frame? ASSISTANT: [SEG].</s>USER: " + im + "\nCan you segment the dog in this"
        " frame? ASSISTANT: Sure, [SEG].</s>"
    )
    assert conv == want
    assert [conv[a:b] for a, b in spans] == [
        "Sure, the segmentation result is [SEG].</s>",
        "It is [SEG].</s>",
        "[SEG].</s>",
        "Sure, [SEG].</s>",
    ]
    assert prompts.glus_text("The Dog Running.") == "the dog running"


def test_virst_tokens_labels_and_seg_slots():
    tok = load_tokenizer(SYNTH_TOKENIZER, "virst")
    t = prompts.virst_tokens(tok, "the small red circle", np.random.default_rng(0), 200)
    n = int(t.valid.sum())
    assert (t.input_ids[:n] == tok.seg_id).sum() == 10 and len(t.seg_index) == 10
    assert (t.input_ids[:n] == IMAGE_TOKEN_INDEX).sum() == 1
    assert np.all(t.input_ids[n:] == tok.pad_id) and np.all(t.labels[n:] == IGNORE_INDEX)
    # Assistant turn keeps its labels; system/user only "\n", <|im_start|>, <|im_end|>.
    starts = np.flatnonzero(t.input_ids == tok.token_id("<|im_start|>"))
    assistant = starts[2]
    np.testing.assert_array_equal(t.labels[assistant:n], t.input_ids[assistant:n])
    keep = {tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>"), *tok.encode("\n")}
    for i in range(assistant):
        want = t.input_ids[i] if t.input_ids[i] in keep else IGNORE_INDEX
        assert t.labels[i] == want


def test_glus_tokens_label_only_answers():
    tok = load_tokenizer(SYNTH_TOKENIZER, "glus")
    t = prompts.glus_tokens(tok, "the dog", np.random.default_rng(3), 400)
    n = int(t.valid.sum())
    assert len(t.seg_index) == 4 and (t.input_ids[:n] == IMAGE_TOKEN_INDEX).sum() == 8
    kept = t.input_ids[:n][t.labels[:n] != IGNORE_INDEX]
    text = tok.hf.decode(kept.tolist())
    assert text.count("[SEG]") == 4 and text.count("</s>") == 4
    assert "USER" not in text and "segment the dog" not in text


def test_too_long_expression_is_shortened_not_the_seg_slots():
    tok = load_tokenizer(SYNTH_TOKENIZER, "virst")
    sent = " ".join(["the small red circle moving left"] * 30)
    t = prompts.virst_tokens(tok, sent, np.random.default_rng(0), 120)
    assert t.valid.sum() <= 120 and (t.input_ids == tok.seg_id).sum() == 10
    assert sent.startswith(t.text) and len(t.text) < len(sent)
    with pytest.raises(ValueError, match="cannot hold"):
        prompts.virst_tokens(tok, "the dog", np.random.default_rng(0), 20)


def _reference_preprocess_virst(hf, messages):
    """`utils/preprocess.py::preprocess_virst`; the chat template rendered by hand (no jinja)."""
    ref = copy.deepcopy(hf)
    ref.add_tokens(["<image>"], special_tokens=True)
    image_id = ref.convert_tokens_to_ids("<image>")
    im_start, im_end = ref.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])

    def render(msgs):
        return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in msgs)

    ids = ref(render(messages), add_special_tokens=False)["input_ids"]
    targets = list(ids)
    cur = 0
    for msg in messages:
        n = len(ref(render([msg]), add_special_tokens=False)["input_ids"])
        if msg[0] in ("user", "system"):
            targets[cur : cur + n] = [IGNORE_INDEX] * n
        cur += n
    for i, t in enumerate(ids):
        if t in (198, im_start, im_end):
            targets[i] = t
        if t == image_id:
            ids[i] = IMAGE_TOKEN_INDEX
    return ids, targets


@pytest.mark.skipif(not QWEN2.is_dir(), reason="real Qwen2 tokenizer files not present")
@pytest.mark.parametrize("sent", ["the red car on the left", "which animal jumps first?"])
def test_virst_ids_equal_official_preprocessing_with_qwen2(sent):
    tok = load_tokenizer(str(QWEN2), "virst")
    assert tok.seg_id == 151646 and tok.vocab_size == 151647
    assert tok.encode("\n") == [198]
    for q, a in [(0, 0), (1, 3), (2, 2)]:
        msgs = prompts.virst_messages(sent, q, a)
        ours = prompts.virst_encode(tok, msgs)
        want = _reference_preprocess_virst(tok.hf, msgs)
        assert ours[0] == want[0] and ours[1] == want[1]


def test_first_tokenizer_load_is_thread_safe():
    """Grain's reader threads load the tokenizer concurrently in a fresh process."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from jax_refvos.pipeline.tokenizer import load_tokenizer\n"
        "from jax_refvos.pipeline.config import SYNTH_TOKENIZER\n"
        "errors = []\n"
        "def go():\n"
        "    try:\n"
        "        load_tokenizer(SYNTH_TOKENIZER, 'virst')\n"
        "    except Exception as e:\n"
        "        errors.append(repr(e))\n"
        "ts = [threading.Thread(target=go) for _ in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "assert not errors, errors\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

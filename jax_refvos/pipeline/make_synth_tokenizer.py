"""Regenerates `jax_refvos/assets/tokenizers/synth_qwen2/`: a tiny Qwen2-style tokenizer.

A byte-level BPE (the Qwen2 model family's tokenizer type) trained on the synthetic benchmark's
expression grammar and the VIRST/GLUS prompt templates, wrapped as `Qwen2Tokenizer`, with the
special tokens both templates need. Byte-level means any text still encodes (just longer).

    python -m jax_refvos.pipeline.make_synth_tokenizer [--out_dir DIR]
"""

import argparse
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jax_refvos.datasets.synthetic import appearance, phrases
from jax_refvos.pipeline import prompts
from jax_refvos.pipeline.config import SYNTH_TOKENIZER

VOCAB_SIZE = 1024
# ChatML (VIRST/Qwen2) first: VIRST reads <|im_start|>, <|im_end|> as additional ids [0:2].
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "</s>", "<im_start>", "<im_end>")
ADDED = ("[SEG]",)  # an ordinary added token, as VIRST adds it


def corpus() -> list[str]:
    """Synthetic expressions (every noun phrase x predicate) plus the filled templates."""
    rng = np.random.default_rng(0)
    sizes = (None, *appearance.SIZES)
    colours = (None, *appearance.COLOURS)
    shapes = (None, *appearance.SHAPES)
    nouns = [phrases.Noun(s, c, h) for s, c, h in itertools.product(sizes, colours, shapes)]
    texts = []
    for noun in nouns:
        for _ in range(2):
            for pred in phrases.MOTION_SUFFIXES:
                texts += [phrases.motion_text(pred, noun, n, rng) for n in (1, 2, 3)]
            texts += [phrases.superlative_text(p, noun, rng) for p in phrases.SUPERLATIVE_TEMPLATES]
            texts += [phrases.appearance_text(noun, n, rng) for n in (1, 2, 4)]
            ref = nouns[int(rng.integers(len(nouns)))]
            texts += [phrases.relation_text(r, noun, ref, rng) for r in phrases.RELATION_TEMPLATES]
    prompt_texts = []
    for sent in texts[:: max(1, len(texts) // 400)]:
        for q, a in itertools.product(range(3), range(4)):
            msgs = prompts.virst_messages(sent, q, a)
            prompt_texts.append("".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in msgs))
            msgs = prompts.virst_messages(sent + "?", q, a)
            prompt_texts.append(msgs[1][1])
        conv, _ = prompts.glus_conversation(sent, [0, 1, 2, 3], [0, 1, 2, 4])
        prompt_texts.append(conv)
        conv, _ = prompts.glus_conversation(sent, [3, 2, 1, 0], [3, 3, 3, 3])
        prompt_texts.append(conv)
    return texts + prompt_texts


def build(out_dir: str | Path) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, Qwen2Tokenizer

    # Qwen2's pre-tokenizer: its split regex, then byte-level without a prefix space.
    split = pre_tokenizers.Split(
        Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
        behavior="isolated",
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        tok.model.save(tmp)  # vocab.json + merges.txt, the files a Qwen2 checkpoint ships
        hf = Qwen2Tokenizer(
            vocab=f"{tmp}/vocab.json",
            merges=f"{tmp}/merges.txt",
            unk_token=None,
            bos_token=None,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
        )
    hf.add_special_tokens({"additional_special_tokens": list(SPECIAL[1:])})
    hf.add_tokens(list(ADDED))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    hf.save_pretrained(out)
    check = AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "<|im_start|>user\nthe red circle (0) [SEG]<|im_end|>\n"
    if check(text)["input_ids"] != hf(text)["input_ids"]:
        raise RuntimeError("saved tokenizer does not round-trip")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default=SYNTH_TOKENIZER)
    out = build(parser.parse_args(argv).out_dir)
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()

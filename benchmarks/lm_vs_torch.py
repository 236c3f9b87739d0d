r"""Decoder LM speed: ours (jit, Flax NNX) against transformers' PyTorch, same weights, same run.

A random transformers `Qwen2ForCausalLM` (or `LlamaForCausalLM` with --llama) is saved with
`save_pretrained` and loaded into ours with `weights.hf.load_causal_lm`, so both sides hold the
same weights. Measured, warm, best of --repeats calls:

  prefill   tokens/s of one forward pass producing the logits of every position, for
            (batch, seq) = (1, 512) and (4, 256). Ours: a jitted `model(input_ids).logits`;
            torch: `model(input_ids).logits` under `torch.inference_mode()` with the default
            attention implementation (sdpa) and, unless --no_eager, with `eager` too.
  decode    new tokens/s of greedy generation of 64 tokens after a 128-token prompt (the prompt's
            prefill included), batch 1 and 4. Ours: `generate.generate` (one jitted program with
            the static KV cache; its compile time is reported separately); torch:
            `model.generate(do_sample=False, max_new_tokens=64, min_new_tokens=64)` with its
            default (dynamic) KV cache.

Both sides are checked to agree: max |Δlogit| / max |logit| of the prefill, and equal greedy
tokens.

  python benchmarks/lm_vs_torch.py                 # CPU, Qwen2-shaped (hidden 1024, 8 layers)
  python benchmarks/lm_vs_torch.py --llama         # LLaMA-shaped (no biases, llama3 RoPE)
  python benchmarks/lm_vs_torch.py --device cuda --layers 4 --peak_tflops 989
      # GPU: Qwen2-7B-shaped stack (depth --layers), bf16 both sides, tokens/s and MFU

CPU configs run in float32 with `torch.set_num_threads(--threads)` (default 2). GPU mode
(`--device cuda`) needs CUDA builds of jax and torch (`pip install "jax[cuda12]==0.10.2"` and a
CUDA torch); it has not been run in this repository's CI (no GPU). MFU counts
2 * (matmul params) * tokens + 4 * l^2 * d per layer and sequence for prefill (the causal half is
not subtracted, as is customary) and 2 * params + 4 * context * d per layer for each decoded
token, against --peak_tflops (default 989: H100 SXM bf16 dense). Prints a markdown table;
--out writes JSON.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESETS = {
    # Small Qwen2 shape: GQA 16/2, q/k/v biases, untied head.
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=1024,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=2,
        intermediate_size=2816,
        vocab_size=32000,
        tie_word_embeddings=False,
        rope_theta=1e6,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
    ),
    # Small LLaMA-3 shape: GQA 16/4, no biases, llama3 RoPE scaling.
    "llama": dict(
        model_type="llama",
        hidden_size=1024,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        intermediate_size=2816,
        vocab_size=32000,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        rope_theta=5e5,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=2048,
        ),
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    ),
    # Qwen2-7B shape (depth set by --layers), for GPU mode.
    "qwen2_7b": dict(
        model_type="qwen2",
        hidden_size=3584,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        tie_word_embeddings=False,
        rope_theta=1e6,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
    ),
}


def _import_transformers():
    if "torchvision" not in sys.modules:
        # A torchvision build that does not match torch fails at import, and transformers imports
        # it whenever it is installed; the LM classes do not need it.
        try:
            import torchvision  # noqa: F401
        except Exception:
            sys.modules["torchvision"] = None
    import transformers

    return transformers


def build_torch(preset: dict, device: str, dtype, seed: int = 0):
    """A random HF causal LM; norms and biases perturbed so that they matter."""
    import torch

    transformers = _import_transformers()
    kw = dict(preset)
    model_type = kw.pop("model_type")
    if model_type == "qwen2":
        config, cls = transformers.Qwen2Config(**kw), transformers.Qwen2ForCausalLM
    else:
        config, cls = transformers.LlamaConfig(**kw), transformers.LlamaForCausalLM
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 0, None, None
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls(config).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def matmul_params(preset: dict) -> int:
    """Parameters that take part in a matmul per token (everything but the embedding table)."""
    d, f, n, m = (preset[k] for k in ("hidden_size", "intermediate_size",
                                      "num_attention_heads", "num_key_value_heads"))  # fmt: skip
    k = d // n
    layer = d * n * k + 2 * d * m * k + n * k * d + 3 * d * f
    return preset["num_hidden_layers"] * layer + d * preset["vocab_size"]


def _sync(device: str):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_torch_prefill(model, ids, repeats: int, device: str) -> tuple[float, np.ndarray]:
    import torch

    x = torch.as_tensor(ids, device=device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            logits = model(x).logits
            _sync(device)
            times.append(time.perf_counter() - start)
    return min(times[1:]), logits.float().cpu().numpy()


def time_ours_prefill(model, ids, repeats: int) -> tuple[float, float, np.ndarray]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def logits_fn(state, ids):
        return nnx.merge(graphdef, state)(ids).logits

    x = jnp.asarray(ids, jnp.int32)
    start = time.perf_counter()
    jax.block_until_ready(logits_fn(state, x))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(logits_fn(state, x))
        times.append(time.perf_counter() - start)
    return min(times), compile_s, np.asarray(out, np.float32)


def time_torch_generate(model, ids, new: int, repeats: int, device: str):
    import torch

    x = torch.as_tensor(ids, device=device)
    kw = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, use_cache=True,
              pad_token_id=0, attention_mask=torch.ones_like(x))  # fmt: skip
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            _sync(device)
            start = time.perf_counter()
            out = model.generate(x, **kw)
            _sync(device)
            times.append(time.perf_counter() - start)
    return min(times[1:]), out[:, ids.shape[1] :].cpu().numpy()


def time_ours_generate(model, ids, new: int, repeats: int):
    import jax
    import jax.numpy as jnp

    from jax_refvos.model.backbone.generate import generate

    x = jnp.asarray(ids, jnp.int32)
    start = time.perf_counter()
    jax.block_until_ready(generate(model, x, max_new_tokens=new))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(generate(model, x, max_new_tokens=new))
        times.append(time.perf_counter() - start)
    return min(times), first - min(times), np.asarray(out)


def prefill_flops(preset: dict, b: int, seq: int) -> float:
    attn = 4 * seq * seq * preset["hidden_size"] * preset["num_hidden_layers"]
    return b * (2 * matmul_params(preset) * seq + attn)


def decode_flops(preset: dict, b: int, prompt: int, new: int) -> float:
    """FLOPs of the `new` decode steps (context prompt + i at step i), prompt prefill excluded."""
    d, layers = preset["hidden_size"], preset["num_hidden_layers"]
    ctx = sum(prompt + i for i in range(new))
    return b * (2 * matmul_params(preset) * new + 4 * ctx * d * layers)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--llama", action="store_true", help="LLaMA-shaped preset instead of Qwen2")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="default: qwen2 (--llama: llama; --device cuda: qwen2_7b)")  # fmt: skip
    p.add_argument("--layers", type=int, default=None, help="override num_hidden_layers")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--prefill", default="1x512,4x256", help="batch x seq, comma-separated")
    p.add_argument("--decode_batches", default="1,4")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    p.add_argument("--no_eager", action="store_true", help="skip torch eager attention")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="GPU peak for MFU")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import torch

    from jax_refvos.weights.hf import load_causal_lm

    gpu = args.device == "cuda"
    name = args.preset or ("qwen2_7b" if gpu else "llama" if args.llama else "qwen2")
    preset = dict(PRESETS[name])
    if args.layers is not None:
        preset["num_hidden_layers"] = args.layers
    elif gpu and name == "qwen2_7b":
        preset["num_hidden_layers"] = 4
    if not gpu:
        torch.set_num_threads(args.threads)
    tdtype, jdtype = (torch.bfloat16, jnp.bfloat16) if gpu else (torch.float32, jnp.float32)

    ref = build_torch(preset, args.device, tdtype)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = load_causal_lm(tmp, jdtype)
        refs = {"torch (sdpa)": ref}
        if not args.no_eager:
            cls = type(ref)
            eager = cls.from_pretrained(tmp, attn_implementation="eager", dtype=tdtype)
            refs["torch (eager)"] = eager.to(args.device).eval()
    params = sum(x.numel() for x in ref.parameters())
    res = dict(
        date=time.strftime("%Y-%m-%d"),
        preset=name,
        config=preset,
        params=params,
        jax=jax.__version__,
        jax_device=str(jax.devices()[0]),
        torch=torch.__version__,
        transformers=_import_transformers().__version__,
        torch_threads=torch.get_num_threads(),
        torch_attn_default=ref.config._attn_implementation,
        args=vars(args),
        prefill={},
        decode={},
    )
    rng = np.random.default_rng(0)
    for shape in args.prefill.split(","):
        b, seq = (int(v) for v in shape.split("x"))
        ids = rng.integers(1, preset["vocab_size"], (b, seq))
        ours_s, compile_s, ours_logits = time_ours_prefill(ours, ids, args.repeats)
        row = dict(ours=b * seq / ours_s, compile_s=compile_s)
        for rname, model in refs.items():
            ref_s, ref_logits = time_torch_prefill(model, ids, args.repeats, args.device)
            row[rname] = b * seq / ref_s
            if rname == "torch (sdpa)":
                err = np.abs(ours_logits - ref_logits).max() / np.abs(ref_logits).max()
                row["max_rel_logit_diff"] = float(err)
        if gpu:
            row["mfu_ours"] = prefill_flops(preset, b, seq) / ours_s / (args.peak_tflops * 1e12)
        res["prefill"][shape] = row
        print(shape, row, flush=True)
    for b in (int(v) for v in args.decode_batches.split(",")):
        ids = rng.integers(1, preset["vocab_size"], (b, args.prompt))
        ours_s, compile_s, ours_tok = time_ours_generate(ours, ids, args.new_tokens, args.repeats)
        row = dict(ours=b * args.new_tokens / ours_s, compile_s=compile_s)
        ref_s, ref_tok = time_torch_generate(ref, ids, args.new_tokens, args.repeats, args.device)
        row["torch (sdpa)"] = b * args.new_tokens / ref_s
        row["tokens_equal"] = float(np.mean(ours_tok == ref_tok))
        if gpu:
            flops = decode_flops(preset, b, args.prompt, args.new_tokens)
            row["mfu_ours"] = flops / ours_s / (args.peak_tflops * 1e12)
        res["decode"][b] = row
        print(f"decode b={b}", row, flush=True)

    print(f"\n{name} ({params / 1e6:.0f}M params), {res['jax_device']}, torch {res['torch']} "
          f"with {res['torch_threads']} threads")  # fmt: skip
    names = ["ours", *refs]
    head = [f"{n} tok/s" for n in names] + [f"ours / {n}" for n in refs]
    print("| prefill b x l | " + " | ".join(head) + " | our compile | logits rel err |")
    print("|---" * (2 * len(names) + 2) + "|")
    for shape, row in res["prefill"].items():
        cells = [f"{row[n]:.0f}" for n in names]
        cells += [f"**{row['ours'] / row[n]:.2f}x**" for n in refs]
        cells += [f"{row['compile_s']:.1f} s", f"{row['max_rel_logit_diff']:.1e}"]
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print("\n| decode, b (128 + 64 tokens) | ours new tok/s | torch (sdpa) | ratio | our compile "
          "| greedy tokens equal |\n|---|---|---|---|---|---|")  # fmt: skip
    for b, row in res["decode"].items():
        print(f"| {b} | {row['ours']:.1f} | {row['torch (sdpa)']:.1f} | "
              f"{row['ours'] / row['torch (sdpa)']:.2f}x | {row['compile_s']:.1f} s | "
              f"{row['tokens_equal']:.0%} |")  # fmt: skip
    if gpu:
        for shape, row in res["prefill"].items():
            print(f"prefill {shape}: MFU ours {row['mfu_ours']:.1%}")
        for b, row in res["decode"].items():
            print(f"decode b={b}: MFU ours {row['mfu_ours']:.2%}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

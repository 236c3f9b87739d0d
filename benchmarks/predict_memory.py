"""Peak memory and wall time of `refvos predict` against the video length (tiny VIRST).

    PYTHONPATH=. python benchmarks/predict_memory.py [--frames 16,64,256] [--work DIR]

A tiny VIRST weights dir: the fixture's (`shared/fixtures/virst_tiny_dev`, random fp16-exact
weights, imported with `refvos import-weights --kind virst`) or, without the fixture, the same
kind of tiny model with random weights (UMT `umt_tiny`, Qwen2 `tiny_qwen2`, SAM2.1 Hiera-T,
the repo's `synth_qwen2` tokenizer). Synthetic 480 x 854 JPEG videos (a square moving over a
gradient) of each length; `refvos predict` runs on each in a fresh subprocess, whose peak RSS
(`ru_maxrss` from `os.wait4`) and wall time (compile included) are recorded.

The table's "growth" is (peak RSS - the previous row's) / (frames added), compared with one
decoded frame (480 * 854 * 3 bytes = 1.2 MB). Up to 64 frames the VLM (T_vlm = L) and ST-Fusion
(min(32, T_vlm)) views still grow with L, by design (reference/virst.md §1.1); past 64 frames
nothing should: the propagation decodes and writes one chunk at a time.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REFVOS_SHARED_DIR", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "virst_tiny_dev"
TOKENIZER = SHARED / "tokenizers" / "videochat_flash_qwen2"
HEIGHT, WIDTH = 480, 854
FRAME_BYTES = HEIGHT * WIDTH * 3
TEXT = "the red square moving right"


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def fixture_weights(out: Path) -> None:
    args = [sys.executable, "-m", "jax_refvos.main.import_weights", "--kind", "virst"]
    args += ["--src", str(FIXTURE / "virst_tiny.safetensors"), "--out_dir", str(out)]
    args += ["--config", str(FIXTURE / "config_llm_virst.json")]
    args += ["--sam2_config", str(FIXTURE / "sam2.1_hiera_tiny_virst_fixture.yaml")]
    args += ["--vision_config", str(FIXTURE / "config_umt_tiny.json")]
    args += ["--tokenizer", str(TOKENIZER)]
    subprocess.run(args, check=True, env=_env(), stdout=subprocess.DEVNULL)


def random_weights(out: Path) -> None:
    """The tiny VIRST with random weights, written as `import-weights` would."""
    import dataclasses

    from flax import nnx

    from jax_refvos.methods.virst import fusion
    from jax_refvos.methods.virst import weights as cvirst
    from jax_refvos.model.backbone import lm_config, tome, umt
    from jax_refvos.model.backbone.decoder_lm import DecoderLM
    from jax_refvos.model.sam2.config import from_name
    from jax_refvos.model.sam2.sam2_model import Sam2Model
    from jax_refvos.pipeline.tokenizer import SEG_TOKEN, load_tokenizer

    tok_dir = REPO / "jax_refvos" / "assets" / "tokenizers" / "synth_qwen2"
    seg = load_tokenizer(str(tok_dir), "virst").token_id(SEG_TOKEN)
    r = nnx.Rngs(0)
    ucfg = umt.umt_tiny()
    lcfg = lm_config.tiny_qwen2(vocab_size=seg + 1, max_position_embeddings=4096)
    tcfg = tome.Tome16Config(
        vision_dim=ucfg.embed_dim, llm_dim=lcfg.hidden_size, metric_heads=ucfg.num_heads
    )
    scfg = dataclasses.replace(
        from_name("sam2.1_hiera_t"), binarize_mask_from_pts_for_mem_enc=False
    )
    icfg = fusion.InitialSegFusionConfig(hidden_dim=lcfg.hidden_size)
    pcfg = fusion.SegPrompterConfig(in_dim=lcfg.hidden_size)
    ocfg = cvirst.OccPredictorConfig(token_dim=pcfg.token_dim)
    components = {
        "vision": (umt.UmtVisionTower(ucfg, rngs=r), ucfg),
        "projector": (tome.Tome16Projector(tcfg, rngs=r), tcfg),
        "lm": (DecoderLM(lcfg, rngs=r), lcfg),
        "sam2": (Sam2Model(scfg, rngs=r), scfg),
        "initial_seg_fusion": (fusion.InitialSegFusion(icfg, rngs=r), icfg),
        "seg_prompter": (fusion.SegPrompter(pcfg, rngs=r), pcfg),
        "occ_predictor": (cvirst.OccPredictor(ocfg, rngs=r), ocfg),
    }
    cvirst.save_virst(
        out, components, source="random (benchmarks/predict_memory.py)", tokenizer_dir=tok_dir
    )


def write_video(folder: Path, num_frames: int) -> None:
    """A 48 px red square crossing a gradient, `num_frames` 480 x 854 JPEGs."""
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, 96)], -1)
    for i in range(num_frames):
        frame = base.astype(np.uint8)
        x = int((WIDTH - 48) * i / max(1, num_frames - 1))
        frame[216:264, x : x + 48] = (230, 20, 20)
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)


def run_predict(weights: Path, video: Path, out: Path, overlay: str) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of one `refvos predict` subprocess."""
    args = [sys.executable, "-m", "jax_refvos.main.predict", "--workdir", str(weights)]
    args += ["--video", str(video), "--text", TEXT, "--out_dir", str(out), "--overlay", overlay]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"refvos predict failed on {video} (exit {proc.returncode})")
    return usage.ru_maxrss * 1024, wall  # Linux: kilobytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="16,64,256", help="video lengths, comma-separated")
    ap.add_argument("--work", default=None, help="scratch dir (default: a temporary one)")
    ap.add_argument("--overlay", default="auto", choices=["auto", "mp4", "gif"])
    args = ap.parse_args()
    lengths = [int(n) for n in args.frames.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="predict_memory."))
    weights = work / "weights"
    if not weights.exists():
        fixture = (FIXTURE / "virst_tiny.safetensors").exists() and TOKENIZER.is_dir()
        (fixture_weights if fixture else random_weights)(weights)
        print(f"weights: {'fixture' if fixture else 'random'} -> {weights}", file=sys.stderr)
    rows = []
    for n in lengths:
        video = work / f"video{n}"
        if not video.exists():
            write_video(video, n)
        rss, wall = run_predict(weights, video, work / f"out{n}", args.overlay)
        overlay = next((work / f"out{n}").glob("overlay.*")).suffix[1:]
        rows.append((n, rss, wall, overlay))
        print(f"{n} frames: peak RSS {rss / 2**20:.0f} MiB, {wall:.1f} s", file=sys.stderr)

    print(f"\n`refvos predict`, tiny VIRST, {HEIGHT}x{WIDTH} JPEGs, CPU, one subprocess per row")
    print(f"(one decoded frame = {FRAME_BYTES / 2**20:.2f} MiB).\n")
    print("| frames L | T_vlm | T_seg | overlay | peak RSS (MiB) | wall (s) | growth / frame |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    prev = None
    for n, rss, wall, overlay in rows:
        t_vlm = (min(64, n) // 4) * 4 if n > 8 else 8
        cell = ""
        if prev is not None:
            growth = (rss - prev[1]) / (n - prev[0])
            cell = f"{growth / 2**10:.0f} KiB = {growth / FRAME_BYTES:.2f} frames"
        print(
            f"| {n} | {t_vlm} | {min(32, t_vlm)} | {overlay} | {rss / 2**20:.0f} | {wall:.1f} "
            f"| {cell} |"
        )
        prev = (n, rss)


if __name__ == "__main__":
    main()

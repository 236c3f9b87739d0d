"""`PipelineConfig`: everything the Grain input pipeline needs, as one frozen dataclass (R2)."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path

METHODS = ("virst", "glus", "sam2")
SYNTH_TOKENIZER = str(Path(__file__).parents[1] / "assets" / "tokenizers" / "synth_qwen2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Input pipeline settings. Sizes are square sides in pixels.

    Attributes:
      method: "virst", "glus" or "sam2" (frame sampling, prompt template, image views).
      mixture: {name: (records directory, weight)}; weights need not sum to 1.
      batch_size: per-process batch size (the global batch is this times the process count).
      vlm_size: VLM view side (VIRST UMT 448, square resize; GLUS CLIP 224, shortest side +
        centre crop).
      sam_size: SAM2 view side (1024 in both methods, aspect ratio ignored).
      mask_size: side of the ground-truth masks in the batch (the references use 1024 for
        VIRST and the original resolution for GLUS; smaller saves host memory).
      vlm_frames / vlm_min_frames: VIRST flex cap (64) and the short-video pad length (8).
      sam_frames: VIRST SAM-frame cap (32).
      context_frames / query_frames: GLUS 4 + 4.
      max_expressions: expressions per video sample (both references draw up to 3).
      max_objects: sam2: objects per clip (the official trainer's `max_num_objects`, 3); the
        clip is `sam_frames` consecutive frames (8).
      max_text_len: static token length per expression (ids, labels, valid mask).
      tokenizer_dir: a local Hugging Face tokenizer directory (loaded with AutoTokenizer).
      seed: the only source of randomness; same seed -> same batches.
      num_workers: Grain multiprocessing workers (0 = in-process).
      worker_buffer_size: batches each worker prefetches.
      read_threads / read_buffer: Grain ReadOptions for the in-process prefetch.
      shuffle_buffer: window-shuffle size for sequential (TFRecord) sources.
      tfrecord_cycle_length: how many TFRecord shards are read at once (interleave).
      train: training (random, infinite, mixed) vs eval (every (video, expression) once).
      normalize_on_host: emit float32 normalised images instead of uint8 (default: on device).
      hflip_prob: probability of a horizontal flip (with left/right swapped in the text); the
        references use no augmentation, so 0 is faithful.
      color_jitter: max relative brightness/contrast change (0 = off, faithful).
      eval_max_expressions_per_video: fan-out cap of the eval expansion.
    """

    method: str = "virst"
    mixture: Mapping[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    batch_size: int = 2
    vlm_size: int = 448
    sam_size: int = 1024
    mask_size: int = 1024
    vlm_frames: int = 64
    vlm_min_frames: int = 8
    sam_frames: int = 32
    context_frames: int = 4
    query_frames: int = 4
    max_expressions: int = 3
    max_objects: int = 3
    max_text_len: int = 256
    tokenizer_dir: str = SYNTH_TOKENIZER
    seed: int = 0
    num_workers: int = 0
    worker_buffer_size: int = 2
    read_threads: int = 4
    read_buffer: int = 16
    shuffle_buffer: int = 64
    tfrecord_cycle_length: int = 4
    train: bool = True
    normalize_on_host: bool = False
    hflip_prob: float = 0.0
    color_jitter: float = 0.0
    eval_max_expressions_per_video: int = 1024

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.mixture:
            raise ValueError("mixture is empty: give {name: (records_dir, weight)}")
        for name, entry in self.mixture.items():
            if len(entry) != 2 or float(entry[1]) <= 0:
                raise ValueError(f"mixture[{name!r}] must be (records_dir, weight > 0)")
        if not self.train and len(self.mixture) != 1:
            raise ValueError("eval mode reads exactly one dataset")
        if self.vlm_frames % 4 or self.vlm_min_frames % 4:
            raise ValueError("vlm_frames and vlm_min_frames must be multiples of 4")
        if min(self.batch_size, self.max_expressions, self.sam_frames, self.max_text_len) < 1:
            raise ValueError("batch_size, max_expressions, sam_frames, max_text_len must be >= 1")

    @property
    def num_anchors(self) -> int:
        """Anchor capacity: 3 random anchors in training, T_seg // 4 uniform ones at eval."""
        return max(3, self.sam_frames // 4)

    @staticmethod
    def virst(**overrides) -> "PipelineConfig":
        """VIRST defaults: UMT 448 view, SAM2 1024, <= 64 VLM / 32 SAM frames."""
        return PipelineConfig(method="virst", **overrides)

    @staticmethod
    def sam2(**overrides) -> "PipelineConfig":
        """SAM 2 training defaults: clips of 8 frames at 1024, up to 3 objects each."""
        return PipelineConfig(**{"method": "sam2", "sam_frames": 8, **overrides})

    @staticmethod
    def glus(**overrides) -> "PipelineConfig":
        """GLUS defaults: CLIP 224 view, SAM2 1024, 4 context + 4 query frames."""
        return PipelineConfig(**{"method": "glus", "vlm_size": 224, **overrides})

"""The optimiser: AdamW with warmup + cosine / linear decay, gradient clipping, accumulation.

reference/virst.md §6.2: VIRST trains with AdamW (`adamw_torch`), lr 1e-5, weight decay 0, a
linear warmup then decay (`get_linear_schedule_with_warmup` is imported by its eval script; the
VideoChat-Flash log it ships shows warmup then cosine). Both decays are here.
"""

import dataclasses

import optax


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser settings (optimizer steps count accumulated micro-batches once).

    Attributes:
      lr: peak learning rate.
      schedule: "cosine", "linear" (to `end_lr_ratio * lr` at `total_steps`) or "constant".
      warmup_steps: linear warmup from 0 to `lr`.
      total_steps: optimizer steps of the whole run (the decay's length).
      clip_norm: global-norm gradient clipping (None: off).
      grad_accum: micro-batches per optimizer step (`optax.MultiSteps`).
    """

    lr: float = 1e-5
    schedule: str = "cosine"
    warmup_steps: int = 0
    total_steps: int = 1000
    end_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0
    grad_accum: int = 1

    def __post_init__(self):
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be cosine, linear or constant, got {self.schedule!r}")
        if self.total_steps < 1 or self.warmup_steps < 0 or self.grad_accum < 1:
            raise ValueError("need total_steps >= 1, warmup_steps >= 0, grad_accum >= 1")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate per optimizer step."""
    end = cfg.lr * cfg.end_lr_ratio
    decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_ratio)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(cfg.lr, end, decay_steps)
    else:
        decay = optax.constant_schedule(cfg.lr)
    if cfg.warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """clip -> AdamW(schedule), wrapped in `MultiSteps` when accumulating gradients."""
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    )
    tx = optax.chain(*parts)
    if cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum)
    return tx

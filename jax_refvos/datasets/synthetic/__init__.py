"""The built-in synthetic RVOS benchmark behind `refvos synth` (MeViS layout, numpy + PIL only).

Modules, one concept each: `config` (parameters), `appearance` (shapes, colours, sizes), `scene`
(objects and trajectories), `render` (occlusion-ordered rasterisation and textured frames), `facts`
(tri-valued predicates), `phrases` (the grammar), `expressions` (unambiguous meanings and quotas),
`video` (one video end to end), `writer` (the dataset on disk), `readme` (statistics and README).
"""

from jax_refvos.datasets.synthetic.config import GENERATOR_VERSION, SynthConfig
from jax_refvos.datasets.synthetic.writer import generate_benchmark

__all__ = ["GENERATOR_VERSION", "SynthConfig", "generate_benchmark"]

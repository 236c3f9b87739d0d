"""`torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` for mask logits.

jax.image.resize with the linear kernel and half-pixel centres equals torch's bilinear
interpolation: without antialiasing for any scale, and with antialiasing (torch `antialias=True`,
a triangle filter widened by the scale) when downsampling. Masks are [..., h, w].
"""

import jax
from jaxtyping import Array, Float


def resize_bilinear(
    x: Float[Array, "*b h w"], size: tuple[int, int], *, antialias: bool = False
) -> Float[Array, "*b h2 w2"]:
    """Resize the last two axes to `size`; a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return jax.image.resize(x, (*x.shape[:-2], *size), method="linear", antialias=antialias)

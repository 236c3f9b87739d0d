"""`Sam2ImagePredictor`: single-image prompting (points, box, mask) with a `Sam2Model`.

Port of `sam2/sam2_image_predictor.py::SAM2ImagePredictor` (sam2 1.1.0) for one image: the image
is resized to image_size (bilinear, antialiased, as torchvision `Resize` on a float tensor),
normalised, encoded once; `predict` runs the prompt encoder and mask decoder (no memory, features
+ `no_mem_embed`) and resizes the logits back to the image's size.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.model.sam2.propagation import IMAGENET_MEAN, IMAGENET_STD
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import Sam2Model


class Sam2ImagePredictor:
    """Call `set_image` once, then `predict` with any prompts."""

    def __init__(self, model: Sam2Model, mask_threshold: float = 0.0):
        self.model = model
        self.mask_threshold = mask_threshold
        self._graphdef, self._params = nnx.split(model)
        self._features = None
        self._orig_hw = None

    @functools.partial(jax.jit, static_argnums=0)
    def _encode(self, params, image):
        model = nnx.merge(self._graphdef, params)
        size = model.cfg.image_size
        x = jnp.transpose(image.astype(jnp.float32) / 255.0, (2, 0, 1))
        x = resize_bilinear(x, (size, size), antialias=True)
        x = (jnp.transpose(x, (1, 2, 0)) - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        feats = model.forward_image(x[None])
        return feats.replace(pix=model.pix_without_memory(feats))

    def set_image(self, image) -> None:
        """`image`: uint8 RGB [H, W, 3] (numpy or PIL)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        self._orig_hw = image.shape[:2]
        self._features = self._encode(self._params, jnp.asarray(image))

    @functools.partial(jax.jit, static_argnums=(0,), static_argnames=("multimask_output", "hw"))
    def _decode(self, params, feats, coords, labels, mask_input, *, multimask_output, hw):
        model = nnx.merge(self._graphdef, params)
        enc = model.sam_prompt_encoder
        points = None if coords is None else (coords, labels)
        masks_in = None if mask_input is None else mask_input[..., None]
        sparse, dense = enc(points=points, boxes=None, masks=masks_in)
        dec = model.sam_mask_decoder(
            feats.pix,
            enc.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=feats.high_res,
        )
        low = dec.masks.astype(jnp.float32)
        return resize_bilinear(low, hw), dec.iou_pred, jnp.clip(low, -32.0, 32.0)

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ):
        """Returns (masks [c, H, W], iou [c], low-res logits float32[c, S/4, S/4]) as numpy."""
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        h, w = self._orig_hw
        size = self.model.cfg.image_size
        coords = labels = None
        if point_coords is not None:
            coords = np.asarray(point_coords, np.float32).reshape(1, -1, 2)
            labels = np.asarray(point_labels, np.int32).reshape(1, -1)
        if box is not None:
            box_pts = np.asarray(box, np.float32).reshape(1, 2, 2)
            box_lab = np.array([[2, 3]], np.int32)
            coords = box_pts if coords is None else np.concatenate([box_pts, coords], 1)
            labels = box_lab if labels is None else np.concatenate([box_lab, labels], 1)
        if coords is not None:
            if normalize_coords:
                coords = coords / np.array([w, h], np.float32)
            coords = jnp.asarray(coords * size)
            labels = jnp.asarray(labels)
        if mask_input is not None:
            mask_input = jnp.asarray(np.asarray(mask_input, np.float32).reshape(1, size // 4, -1))
        masks, iou, low = self._decode(
            self._params,
            self._features,
            coords,
            labels,
            mask_input,
            multimask_output=multimask_output,
            hw=(h, w),
        )
        masks, iou, low = np.asarray(masks[0]), np.asarray(iou[0]), np.asarray(low[0])
        return (masks if return_logits else masks > self.mask_threshold), iou, low

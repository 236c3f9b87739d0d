"""Resize views and normalisation (host numpy == device jax)."""

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jax_refvos.pipeline import image_ops


def test_normalize_same_on_host_and_device():
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    host = image_ops.normalize_imagenet(x)
    assert host.dtype == np.float32
    np.testing.assert_allclose(
        np.asarray(image_ops.normalize_imagenet(jnp.asarray(x))), host, atol=1e-6
    )
    want = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(host, want, atol=1e-5)
    clip = image_ops.normalize_clip(x)
    np.testing.assert_allclose(
        np.asarray(image_ops.normalize_clip(jnp.asarray(x))), clip, atol=1e-6
    )


def test_views_sizes_and_clip_centre_crop():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    assert image_ops.vlm_view_virst(img, 16).shape == (16, 16, 3)
    assert image_ops.sam_view(img, 20).shape == (20, 20, 3)
    clip = image_ops.vlm_view_clip(img, 12)
    full = np.asarray(img.resize((int(12 * 50 / 30), 12), Image.Resampling.BICUBIC))
    left = (full.shape[1] - 12) // 2
    np.testing.assert_array_equal(clip, full[:, left : left + 12])


def test_mask_resize_keeps_binary():
    m = np.zeros((30, 50), bool)
    m[5:20, 10:40] = True
    r = image_ops.resize_mask(m, 10)
    assert r.dtype == bool and r[4, 5] and not r[0, 0]

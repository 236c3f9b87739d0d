"""Read a folder of JPEG frames the way `sam2.utils.misc.load_video_frames` does.

Frames are sorted by their integer stem when every stem is an integer (the reference's order),
otherwise by name. Each frame is converted to RGB and resized to image_size x image_size with PIL's
default (bicubic) filter, exactly as `_load_img_as_tensor`; we keep uint8 and normalise on device.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jax_refvos.errors import InputError

JPEG_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


def sorted_frame_paths(frames_dir: str | Path) -> list[Path]:
    """The JPEG frames of `frames_dir` in video order.

    Raises:
        InputError: not a directory, or no JPEG frame in it.
    """
    root = Path(frames_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory of JPEG frames")
    paths = [p for p in root.iterdir() if p.suffix in JPEG_SUFFIXES and p.is_file()]
    if not paths:
        raise InputError(f"{root}: no JPEG frames (*.jpg, *.jpeg) found")
    if all(p.stem.isdigit() for p in paths):
        return sorted(paths, key=lambda p: (int(p.stem), p.name))
    return sorted(paths, key=lambda p: p.name)


def load_frame(path: Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """uint8[image_size, image_size, 3] and the frame's own (height, width)."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise InputError(f"{path}: cannot read the image ({err})") from None
    width, height = rgb.size
    return np.asarray(rgb.resize((image_size, image_size))), (height, width)


def resize_frame(frame: np.ndarray, image_size: int) -> np.ndarray:
    """An in-memory uint8 [H, W, 3] frame resized like `load_frame`."""
    return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((image_size,) * 2))


def load_video_frames(frames_dir: str | Path, image_size: int, *, progress: bool = False):
    """All frames: (uint8[t, S, S, 3], (height, width), frame paths).

    Raises:
        InputError: unreadable frame, or frames of different sizes.
    """
    paths = sorted_frame_paths(frames_dir)
    if progress:
        from tqdm import tqdm

        paths_iter = tqdm(paths, desc="frame loading (JPEG)", unit="frame")
    else:
        paths_iter = paths
    frames, size = [], None
    for path in paths_iter:
        frame, hw = load_frame(path, image_size)
        if size is None:
            size = hw
        elif hw != size:
            raise InputError(
                f"{path}: frame size {hw[1]}x{hw[0]} differs from the first frame's "
                f"{size[1]}x{size[0]}"
            )
        frames.append(frame)
    return np.stack(frames), size, paths

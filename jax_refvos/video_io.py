"""Video input and output: frames read lazily, logits and overlays streamed.

`Video` reads a folder of JPEG frames (sorted by name, numerically when every name is a number)
or a video file through PyAV (optional extra `video`), decoding only the frames asked for
(`RecordVideo`: a record video's frames, the same way); `prop_loader` gives SAM 2's
propagation frames (PIL default resize) chunk by chunk (fixture README "Dataset path"); a
method's own views of its sampled frames are the method's (VIRST: `methods/virst/views.py`).
`LogitsFile` and `write_overlay` write the outputs without holding the video in memory.
"""

import contextlib
import io
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jax_refvos.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
GIF_MAX_SIDE, MP4_MAX_SIDE = 320, 640
FOLDER_FPS = Fraction(20, 3)  # JPEG folders: 150 ms a frame
NEED_AV = "needs PyAV (pip install 'jax_refvos[video]')"


def import_av(path: Path):
    try:
        import av
    except ImportError:
        raise InputError(
            f"{path}: reading a {path.suffix} video {NEED_AV}; or pass a JPEG folder "
            "(e.g. ffmpeg -i video.mp4 frames/%05d.jpg)"
        ) from None
    return av


# ----------------------------------------------------------------------------- input video
class RecordVideo:
    """A record video's frames (`datasets.example.VideoExample`) behind `Video`'s interface
    (`names`, `size`, `images`), so `views` / `prop_loader` build the views of a record exactly
    as `refvos predict` does from a JPEG folder (same bytes, same PIL decode)."""

    def __init__(self, ex):
        self.ex = ex
        self.names = list(ex.frame_names)
        self.size = (ex.height, ex.width)

    def __len__(self) -> int:
        return len(self.names)

    def images(self, indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        """(i, RGB image) for the distinct `indices`, in increasing order."""
        for i in sorted(set(int(i) for i in indices)):
            try:
                with Image.open(io.BytesIO(self.ex.frame_bytes[i])) as img:
                    im = img.convert("RGB")
            except (OSError, UnidentifiedImageError, SyntaxError) as err:
                raise InputError(
                    f"video {self.ex.video_id!r}, frame {self.names[i]!r}: cannot decode ({err})"
                ) from None
            if (im.height, im.width) != self.size:
                raise InputError(
                    f"video {self.ex.video_id!r}, frame {self.names[i]!r}: {im.width}x{im.height}"
                    f", the record says {self.size[1]}x{self.size[0]}"
                )
            yield i, im


class Video:
    """A video's frames as RGB PIL images, decoded on demand (never all at once).

    `names[i]` names frame i (PNG stem), `size` is (height, width), `fps` the overlay's rate.
    """

    def __init__(self, path: Path):
        self.path = path
        self._av = self._container = self._decoder = None
        self._pos = 0
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            self._av = import_av(path)
            self._open_file()
        elif path.is_file():
            raise InputError(
                f"{path}: not a folder of JPEG frames nor a video ({', '.join(VIDEO_SUFFIXES)})"
            )
        else:
            self._open_folder()

    def _open_folder(self) -> None:
        from jax_refvos.model.sam2.video_frames import sorted_frame_paths

        self.paths = sorted_frame_paths(self.path)
        self.names = [p.stem for p in self.paths]
        if len(set(self.names)) != len(self.names):
            dup = next(s for s in self.names if self.names.count(s) > 1)
            raise InputError(f"{self.path}: two frames named {dup!r} (their masks would clash)")
        self.size, self.fps = None, FOLDER_FPS
        for p in self.paths:  # headers only: sizes checked before any work
            try:
                with Image.open(p) as img:
                    hw = (img.height, img.width)
            except (OSError, UnidentifiedImageError, SyntaxError) as err:
                raise InputError(f"{p}: cannot read the image ({err})") from None
            self._check_size(hw, p)

    def _check_size(self, hw: tuple[int, int], where) -> None:
        if self.size is not None and hw != self.size:
            raise InputError(
                f"{where}: frame size {hw[1]}x{hw[0]} differs from the first frame's "
                f"{self.size[1]}x{self.size[0]}"
            )
        self.size = hw

    def _open_file(self) -> None:
        """One decoding pass: frame count, size and rate (the frames are not kept)."""
        self.size, n = None, 0
        with self._decode_errors(), self._av.open(str(self.path)) as container:
            if not container.streams.video:
                raise InputError(f"{self.path}: no video stream")
            stream = container.streams.video[0]
            self.fps = stream.average_rate or stream.guessed_rate or FOLDER_FPS
            for frame in container.decode(stream):
                self._check_size((frame.height, frame.width), f"{self.path}: frame {n}")
                n += 1
        if n == 0:
            raise InputError(f"{self.path}: no frame could be decoded")
        width = max(5, len(str(n - 1)))
        self.names = [f"{i:0{width}d}" for i in range(n)]

    @contextlib.contextmanager
    def _decode_errors(self) -> Iterator[None]:
        try:
            yield
        except self._av.error.FFmpegError as err:
            raise InputError(f"{self.path}: cannot decode the video ({err})") from None

    def __len__(self) -> int:
        return len(self.names)

    def images(self, indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        """(i, RGB image) for the distinct `indices`, in increasing order."""
        for i in sorted(set(int(i) for i in indices)):
            if self._av is None:
                try:
                    with Image.open(self.paths[i]) as img:
                        im = img.convert("RGB")
                except (OSError, UnidentifiedImageError, SyntaxError) as err:
                    raise InputError(f"{self.paths[i]}: cannot read the image ({err})") from None
                self._check_size((im.height, im.width), self.paths[i])
                yield i, im
            else:
                yield i, self._seek(i)

    def _seek(self, i: int) -> Image.Image:
        """Frame i of the file: decoding goes on from the last frame read (restarts if behind)."""
        with self._decode_errors():
            if self._decoder is None or self._pos > i:
                self.close()
                self._container = self._av.open(str(self.path))
                self._decoder = self._container.decode(self._container.streams.video[0])
                self._pos = 0
            while True:
                frame = next(self._decoder, None)
                if frame is None:
                    raise InputError(f"{self.path}: frame {i} could not be decoded again")
                self._pos += 1
                if self._pos > i:
                    return frame.to_image().convert("RGB")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._decoder = None


def prop_loader(video: Video, sam_size: int):
    """Propagation frames uint8[n, S, S, 3] (PIL default resize) of a list of indices."""

    def load(indices: Sequence[int]) -> np.ndarray:
        index = np.asarray(indices)
        out = np.empty((len(index), sam_size, sam_size, 3), np.uint8)
        for i, im in video.images(index):
            out[index == i] = np.asarray(im.resize((sam_size,) * 2))
        return out

    return load


# ----------------------------------------------------------------------------- outputs
class LogitsFile:
    """float32[t, h, w] .npy filled row by row with plain file writes.

    `np.lib.format.open_memmap` lays the file out (header, sparse data); the rows are then
    written and read with seek + write/read rather than through the mapping, because resident
    pages of a mapping count towards the process's RSS and would grow with the video.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        self.offset, self.row = mm.offset, shape[1] * shape[2] * 4
        self.shape = shape
        del mm
        self.file = open(path, "r+b")  # noqa: SIM115 (closed by close())

    def write(self, index: Sequence[int], rows: np.ndarray) -> None:
        for i, row in zip(index, np.asarray(rows, np.float32), strict=True):
            self.file.seek(self.offset + int(i) * self.row)
            self.file.write(np.ascontiguousarray(row).tobytes())

    def read(self, i: int) -> np.ndarray:
        self.file.seek(self.offset + i * self.row)
        return np.frombuffer(self.file.read(self.row), np.float32).reshape(self.shape[1:])

    def close(self) -> None:
        self.file.close()


def _tinted(im: Image.Image, logits: np.ndarray, max_side: int, *, even: bool) -> Image.Image:
    """The frame, at most `max_side` px, with the mask (logits > 0) tinted red."""
    scale = min(1.0, max_side / max(im.size))
    w, h = (max(2, round(s * scale)) for s in im.size)
    if even:  # yuv420p needs even sides
        w, h = w - w % 2, h - h % 2
    small = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    mask = Image.fromarray(((logits > 0) * 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.NEAREST
    )
    mask = np.asarray(mask)[..., None] > 0
    tinted = np.where(mask, 0.5 * small + 0.5 * np.array([255, 0, 0], np.float32), small)
    return Image.fromarray(tinted.astype(np.uint8))


def write_overlay(path: Path, video: Video, logits: LogitsFile, kind: str) -> Path:
    """overlay.mp4 streamed frame by frame (PyAV), or overlay.gif (PIL keeps one palette image
    per frame, <= 320 x 320 bytes, until it writes)."""
    frames = ((i, im, logits.read(i)) for i, im in video.images(range(len(video))))
    if kind == "gif":
        out = path / "overlay.gif"
        tinted = (_tinted(im, lg, GIF_MAX_SIDE, even=False) for _, im, lg in frames)
        first = next(tinted)
        ms = round(1000 / video.fps)
        first.save(out, save_all=True, append_images=tinted, duration=ms, loop=0)
        return out
    av = import_av(path / "overlay.mp4")
    out = path / "overlay.mp4"
    with av.open(str(out), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = None
        for _, im, lg in frames:
            small = _tinted(im, lg, MP4_MAX_SIDE, even=True)
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(video.fps).limit_denominator())
                stream.width, stream.height, stream.pix_fmt = *small.size, "yuv420p"
            frame = av.VideoFrame.from_image(small)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out

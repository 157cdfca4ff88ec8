"""Colorize videos: frames streamed through the generator, colors held steady along the motion,
the audio copied untouched.

How one video goes (`colorize_video`):

1. `probe` reads the file's header, before any frame is decoded: it must hold a video stream,
   of at most MAX_FRAME_PIXELS a frame, with a frame rate. Anything else is a `BadVideo`
   naming the file.
2. The output is written to a hidden temporary name in the output folder
   (`.clip.<random>.partial.mp4`) and renamed to its real name only once it is complete; an error
   or Ctrl-C removes it. Nothing half-written ever carries the final name.
3. Packets are read in file order (`demux`): audio packets are copied to the output as they are
   (remuxed, never re-encoded); video packets are decoded into frames.
4. Frames are colorized in small batches exactly as photos are (colorray.colorize): the
   generator sees each frame's lightness L at `render_shape()` and predicts its colors (ab);
   the frame's own full-resolution L is kept.
5. With temporal consistency on (the default), `TemporalFilter.step` makes each frame's ab
   agree with the previous output wherever the same surface is visible in both frames (see
   that class). Off, each frame is colorized on its own, as a photo would be.
6. The ab is upsampled to the frame's size, joined with its L, converted to RGB and encoded
   (H.264 where FFmpeg has it) with the input's frame rate and timestamps.

Memory does not grow with the clip's length: at most `batch_size` decoded frames (and
BATCH_PIXELS pixels) are held, plus the filter's previous frame and the encoder's own
look-ahead.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from colorray.atomic import publish
from colorray.colorize import (BATCH_PIXELS, RenderTooLarge, full_resolution_L, model_input, recombine,
                               render_shape, stride_of)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Pixels one frame may have. 4K DCI (4096 x 2160) passes; 8K (7680 x 4320, 33 MP) is refused:
# a 33-MP frame takes about 1 GB to colorize and, on a 2-core CPU, seconds per frame.
MAX_FRAME_PIXELS = 4096 * 2160
# Frames the header may promise and the decoder not deliver before the file counts as truncated.
MISSING_FRAMES_TOLERATED = 1


class BadVideo(ValueError):
    """A video that cannot be used; `str(e)` names the file and the reason."""


# ---- 1. the header ------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction  # frames per second
    frames: int  # as the header says; 0 when it does not say
    duration: float | None  # seconds of the video stream, as the header says (None: it does not)
    codec: str
    audio: str | None  # the first audio stream's codec, None without one


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise BadVideo(f"{path}: not a regular file")
    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise BadVideo(f"{path}: not a readable video ({e})") from None


def _info(path: Path, container) -> VideoInfo:
    if not container.streams.video:
        raise BadVideo(f"{path}: has no video stream")
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if w <= 0 or h <= 0:
        raise BadVideo(f"{path}: its video stream has no frame size")
    if w * h > MAX_FRAME_PIXELS:
        raise BadVideo(f"{path}: its frames are {w}x{h} ({w * h / 1e6:.1f} megapixels), over the limit of "
                       f"{MAX_FRAME_PIXELS / 1e6:.1f} megapixels a frame (4K); scale it down first")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise BadVideo(f"{path}: its video stream has no frame rate")
    audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    return VideoInfo(w, h, Fraction(rate), int(stream.frames or 0), _duration(container, stream),
                     stream.codec_context.name, audio)


def _duration(container, stream) -> float | None:
    """The video stream's length in seconds: its own duration field (MP4), its DURATION tag
    (Matroska), or the file's when it has no other stream; None when the header does not say."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION", "")
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        pass
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def probe(path: str | Path) -> VideoInfo:
    """The video's header, checked (a BadVideo otherwise); no frame is decoded."""
    path = Path(path)
    with _open(path) as container:
        return _info(path, container)


# ---- 5. temporal consistency --------------------------------------------------------------------

TEMPORAL_SIDE = 320  # long side of the grid the flow and the blend run on (at least the render's)
MAX_CONFIDENCE = 0.85  # the most the previous output may weigh: new colors always come in
LUMA_SIGMA = 12.0  # gray levels (of 255): a warped pixel this much off the current one is doubted
FB_RELATIVE, FB_ABSOLUTE = 0.01, 1.0  # forward-backward tolerance (Sundaram et al. 2010), in px^2
CUT_FRACTION = 0.6  # a scene cut: more than this share of pixels cannot be followed ...
CUT_MEAN_LUMA = 30.0  # ... or the warped previous frame differs by this many gray levels on average
# OpenCV's DIS preset: MEDIUM follows the motion more closely than FAST (on the benchmark's camera
# path: 4 to 7% less warping error after the filter, 15% fewer frames/s; docs/benchmarks/video.md).
DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def temporal_grid(h: int, w: int, render: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) the filter works at: the frame's aspect, long side TEMPORAL_SIDE or the
    render's long side if larger, never above the frame's own size."""
    side = min(max(h, w), max(TEMPORAL_SIDE, *render))
    scale = side / max(h, w)
    return max(8, round(h * scale)), max(8, round(w * scale))


def sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel x reads from: x + flow(x), as cv2.remap's two coordinate maps."""
    h, w = flow.shape[:2]
    return (flow[..., 0] + np.arange(w, dtype=np.float32)[None, :],
            flow[..., 1] + np.arange(h, dtype=np.float32)[:, None])


def warp(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)) with maps = sample_maps(flow); bilinear, the
    edges repeated."""
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def flow_confidence(gray: np.ndarray, prev_gray: np.ndarray, fwd: np.ndarray, bwd: np.ndarray,
                    maps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(how surely each pixel of `gray` was at x + fwd(x) in `prev_gray`, in [0, 1]; the
    lightness difference there, in gray levels). Sure when
    - the two flows agree: going to the previous frame and back lands where it started
      (|fwd(x) + bwd(x + fwd(x))|^2 small next to the motion: Sundaram et al.'s occlusion test);
    - the previous frame, warped, has the same lightness there (within about LUMA_SIGMA);
    - x + fwd(x) lies inside the previous frame."""
    h, w = gray.shape
    bwd_at = warp(bwd, maps)
    mismatch = ((fwd + bwd_at) ** 2).sum(-1)
    tolerance = FB_RELATIVE * ((fwd ** 2).sum(-1) + (bwd_at ** 2).sum(-1)) + FB_ABSOLUTE
    luma = np.abs(gray.astype(np.float32) - warp(prev_gray, maps).astype(np.float32))
    inside = (maps[0] >= 0) & (maps[0] <= w - 1) & (maps[1] >= 0) & (maps[1] <= h - 1)
    confidence = np.exp(-mismatch / tolerance - (luma / LUMA_SIGMA) ** 2) * inside
    return confidence.astype(np.float32), luma


class TemporalFilter:
    """Each frame's colors made to agree with the previous output where the scene goes on.

    For frame t (gray levels G_t and the generator's prediction P_t, on the same grid):
      f = DIS flow from G_t to G_{t-1}       where each pixel was in the previous frame
      b = DIS flow from G_{t-1} to G_t       the other way, for the forward-backward check
      W = warp(ab_{t-1}, f)                  the previous output, moved to where things are now
      c = MAX_CONFIDENCE * flow_confidence(...)
      ab_t = c * W + (1 - c) * P_t
    Where the motion is followed surely, the color stays (flicker goes); where it is not
    (occlusions, new objects, the frame's edge) the new prediction is taken. A scene cut (most
    pixels not followed, or a large lightness change after warping) starts afresh: ab_t = P_t.
    """

    def __init__(self, max_confidence: float = MAX_CONFIDENCE):
        self.max_confidence = max_confidence
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESET)
        self.prev_gray: np.ndarray | None = None
        self.prev_ab: np.ndarray | None = None
        self.cuts = 0  # scene cuts found (the first frame not counted)
        self.mean_confidence: list[float] = []  # per frame, for reports and tests

    def step(self, gray: np.ndarray, ab: np.ndarray) -> np.ndarray:
        """gray (h, w) uint8 and the predicted ab (h, w, 2) float32 -> the ab to show."""
        out, confidence = ab, 0.0
        if self.prev_gray is not None and self.prev_gray.shape == gray.shape:
            fwd = self.dis.calc(gray, self.prev_gray, None)
            bwd = self.dis.calc(self.prev_gray, gray, None)
            maps = sample_maps(fwd)
            c, luma = flow_confidence(gray, self.prev_gray, fwd, bwd, maps)
            if (c < 0.5).mean() > CUT_FRACTION or luma.mean() > CUT_MEAN_LUMA:
                self.cuts += 1  # a new scene: nothing to follow
            else:
                c = self.max_confidence * c[..., None]
                out = c * warp(self.prev_ab, maps) + (1.0 - c) * ab
                confidence = float(c.mean())
        self.mean_confidence.append(confidence)
        self.prev_gray, self.prev_ab = gray, np.ascontiguousarray(out, dtype=np.float32)
        return self.prev_ab


def _gray_levels(L: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Normalised L (1, 1, H, W) -> (rows, cols) uint8 gray levels on the filter's grid."""
    small = F.interpolate(L, size=grid, mode="bilinear", antialias=True, align_corners=False)
    return ((small[0, 0] + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()


# ---- 3, 4, 6: decode, colorize, encode ----------------------------------------------------------

ENCODERS = {".webm": ("libvpx-vp9", "mpeg4")}  # per output extension; every other: H.264
DEFAULT_ENCODERS = ("libx264", "mpeg4")  # the first one this FFmpeg has


def _encoder(suffix: str) -> str:
    for name in ENCODERS.get(suffix.lower(), DEFAULT_ENCODERS):
        if name in av.codecs_available:
            return name
    raise BadVideo(f"no video encoder for {suffix} files in this FFmpeg build")


def _add_video_stream(output, suffix: str, info: VideoInfo, time_base: Fraction, encoder: str | None = None):
    name = encoder or _encoder(suffix)
    stream = output.add_stream(name, rate=info.rate)
    stream.width, stream.height = info.width, info.height
    # 4:2:0 chroma needs even sides; an odd-sized frame keeps its size with 4:4:4.
    even = info.width % 2 == 0 and info.height % 2 == 0
    stream.pix_fmt = "yuv420p" if even or name == "mpeg4" else "yuv444p"
    stream.codec_context.time_base = time_base
    if name == "ffv1":  # lossless RGB: the colorizer's frames bit for bit (benchmarks/video.py)
        stream.pix_fmt = "bgr0"
    elif name == "libx264":
        stream.options = {"crf": "18", "preset": "fast"}
    elif name == "libvpx-vp9":
        stream.options = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    else:
        stream.bit_rate = 8 * info.width * info.height * int(np.ceil(float(info.rate)))
    return stream


@dataclass
class VideoResult:
    frames: int
    seconds: float
    cuts: int  # scene cuts the temporal filter found
    audio: bool  # an audio stream was copied


def colorize_video(G: nn.Module, image_size: int, src: str | Path, dst: str | Path, *,
                   render_size: int | None = None, temporal: bool = True, batch_size: int = 8,
                   device="cpu", progress: bool = True, encoder: str | None = None) -> VideoResult:
    """Colorize the video `src` into `dst` (written under a temporary name, then renamed). The
    output has the input's frame size, rate, timestamps and frame count, and its first audio
    stream copied. `encoder`: an FFmpeg video encoder (default: H.264, VP9 for .webm; "ffv1"
    in a .mkv: lossless). Raises BadVideo (naming `src`) for a file that is not a usable video, a
    RenderTooLarge for a render size too large for its frames."""
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    with _open(src) as inp:
        info = _info(src, inp)
        shape = render_shape(info.height, info.width, image_size, render_size, stride_of(G))
        grid = temporal_grid(info.height, info.width, shape)
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=f".partial{dst.suffix}", dir=dst.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with av.open(str(tmp), mode="w", format=_container_format(dst)) as out:
                if ain is not None and ain.codec_context.name not in out.supported_codecs:
                    raise BadVideo(f"{src}: its audio ({ain.codec_context.name}) cannot be copied into a "
                                   f"{dst.suffix} file; write a .mkv instead")
                vout = _add_video_stream(out, dst.suffix, info, vin.time_base or 1 / info.rate, encoder)
                aout = out.add_stream_from_template(ain) if ain is not None else None
                filt = TemporalFilter() if temporal else None
                bar = tqdm(total=info.frames or None, desc=src.name, unit="frame", disable=not progress)
                pending: list[av.VideoFrame] = []
                count = 0
                last_pts = None

                time_base = vout.codec_context.time_base  # the input's: its timestamps are kept
                tick = max(1, round(1 / (info.rate * time_base)))  # one frame, in time_base units

                def flush() -> None:
                    nonlocal count, last_pts
                    rgbs = [f.to_ndarray(format="rgb24") for f in pending]
                    for frame, rgb in zip(pending, _colorize_frames(G, rgbs, shape, grid, filt, device)):
                        new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                        pts = frame.pts if frame.pts is not None else (last_pts + tick if last_pts is not None else 0)
                        if last_pts is not None and pts <= last_pts:  # an encoder needs rising timestamps
                            pts = last_pts + 1
                        new.pts, new.time_base, last_pts = pts, time_base, pts
                        for packet in vout.encode(new):
                            out.mux(packet)
                        count += 1
                    bar.update(len(pending))
                    pending.clear()

                streams = [vin] + ([ain] if ain is not None else [])
                try:
                    for packet in inp.demux(*streams):
                        if packet.stream.type == "audio":
                            if packet.dts is None:  # the demuxer's end-of-stream marker
                                continue
                            packet.stream = aout
                            out.mux(packet)
                            continue
                        for frame in packet.decode():
                            held = sum(f.width * f.height for f in pending)
                            if pending and (len(pending) >= batch_size or held + frame.width * frame.height > BATCH_PIXELS):
                                flush()
                            pending.append(frame)
                except av.error.FFmpegError as e:
                    raise BadVideo(f"{src}: damaged or truncated after {count + len(pending)} frames ({e})") from None
                if pending:
                    flush()
                bar.close()
                for packet in vout.encode():  # the encoder's last frames
                    out.mux(packet)
                if count == 0:
                    raise BadVideo(f"{src}: no frame could be decoded")
                if info.frames and count < info.frames - MISSING_FRAMES_TOLERATED:
                    raise BadVideo(f"{src}: truncated: its header promises {info.frames} frames, only {count} "
                                   "could be decoded")
                shown = float(last_pts * time_base) + 1 / float(info.rate) - float((vin.start_time or 0) * time_base)
                if info.duration and shown < info.duration - (MISSING_FRAMES_TOLERATED + 1) / float(info.rate):
                    raise BadVideo(f"{src}: truncated: its header promises {info.duration:.2f} s of video, only "
                                   f"{shown:.2f} s could be decoded")
            publish(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return VideoResult(count, time.perf_counter() - t0, filt.cuts if filt else 0, ain is not None)


def _container_format(path: Path) -> str:
    """FFmpeg's muxer for the output's extension (the temporary name ends in it too, but say so)."""
    return {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}.get(path.suffix.lower(), "mp4")


@torch.no_grad()
def _colorize_frames(G: nn.Module, rgbs: list[np.ndarray], shape: tuple[int, int], grid: tuple[int, int],
                     filt: TemporalFilter | None, device) -> list[np.ndarray]:
    """A batch of frames (H, W, 3) uint8 -> colorized frames: one generator call, then each frame
    through the temporal filter in order, then joined with its own full-resolution L."""
    Ls = [full_resolution_L(rgb, device) for rgb in rgbs]
    ab_small = G(torch.cat([model_input(L, shape) for L in Ls])).float().cpu()
    out = []
    for L, ab in zip(Ls, ab_small):
        ab = ab[None]
        if filt is not None:
            pred = F.interpolate(ab, size=grid, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
            ab = torch.from_numpy(filt.step(_gray_levels(L.cpu(), grid), np.ascontiguousarray(pred)))
            ab = ab.permute(2, 0, 1)[None].to(L.device)
        out.append(recombine(L, ab))
    return out


# ---- inputs and outputs of the command ----------------------------------------------------------

def find_videos(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(video file, its path relative to the output folder) for video files, folders (recursive,
    VIDEO_EXTENSIONS only) and glob patterns; each once, in the order given. What is not there
    is left to colorray.colorize.find_inputs to report."""
    import glob

    found: dict[Path, Path] = {}
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in VIDEO_EXTENSIONS and not f.is_dir():
                    found.setdefault(f.absolute(), f.relative_to(p))
        elif p.is_file() or not any(ch in arg for ch in "*?["):
            if p.suffix.lower() in VIDEO_EXTENSIONS and (p.is_file() or p.is_symlink()):
                found.setdefault(p.absolute(), Path(p.name))
        else:
            for m in sorted(glob.glob(arg, recursive=True)):
                if Path(m).suffix.lower() in VIDEO_EXTENSIONS and Path(m).is_file():
                    found.setdefault(Path(m).absolute(), Path(Path(m).name))
    return list(found.items())


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def colorize_videos(G: nn.Module, image_size: int, videos: list[tuple[Path, Path]], out: Path, *,
                    single_file: bool = False, overwrite: bool = False, replace_inputs: bool = False,
                    render_size: int | None = None, temporal: bool = True, batch_size: int = 8, device="cpu",
                    progress: bool = True) -> dict:
    """Each video into `out`/its relative path (or into the file `out` itself with
    `single_file`); a bad video is reported, not fatal. Returns {"written", "failed", "skipped"}
    as colorray.colorize.colorize_files does."""
    written, failed, skipped = [], {}, {}
    inputs = {src.resolve() for src, _ in videos}
    for src, rel in videos:
        dst = out if single_file else out / rel
        if dst.resolve() in inputs and not (overwrite and replace_inputs):
            skipped[str(src)] = f"the output {dst} is an input (--overwrite --replace-inputs replaces it)"
            continue
        if dst.exists() and not overwrite:
            skipped[str(src)] = f"{dst} exists (--overwrite replaces it)"
            continue
        try:
            r = colorize_video(G, image_size, src, dst, render_size=render_size, temporal=temporal,
                               batch_size=batch_size, device=device, progress=progress)
        except (BadVideo, RenderTooLarge) as e:
            failed[str(src)] = str(e).removeprefix(f"{src}: ")
            continue
        written.append(f"{dst} ({r.frames} frames, {r.frames / max(r.seconds, 1e-9):.1f} frames/s"
                       f"{', audio copied' if r.audio else ''}{f', {r.cuts} scene cuts' if temporal else ''})")
    return {"written": written, "failed": failed, "skipped": skipped}

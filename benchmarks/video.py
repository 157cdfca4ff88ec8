"""Video colorization on real motion: flicker (warping error), fidelity (PSNR), speed and memory,
per-frame vs temporal (issue 31).

    python benchmarks/video.py [--model builtin:base] [--out bench-video] [--frames 120]
                               [--long-frames 1200] [--threads 2]

No test video ships, so one is made from real photographs: a virtual camera moves over a color
photo (skimage's astronaut): a pan, then a zoom in, then a cut to another photo (scikit-learn's
china.jpg), then a pan over it. 512x288 frames at 25 frames/s, H.264, with a 440 Hz sine tone as
an AAC audio track (so the audio copy is exercised). Its gray version (each frame's Lab L, no
chroma) is colorized by `colorray.video.colorize_video`, once per frame alone (--temporal off)
and once with the temporal filter (on), and each output is decoded and compared:

- warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the mean
  |ab_t - warp(ab_{t-1})| in Lab units, over the pixels where the motion is reliable, warping
  with optical flow computed from the TRUE color frames' lightness (Farneback, full resolution:
  not the DIS flow the filter itself uses), the pair across the cut left out. The true clip's own
  warping error is the floor (interpolation and flow errors).
- PSNR of the output's RGB against the true color frames (mean over frames), and of the gray
  input for reference.
- frames/s of colorize_video (decode, colorize, filter, encode) on this CPU.
- the output's frame count, size, rate and audio against the input's.
- peak memory (VmHWM from /proc/self/status, in a fresh process: ru_maxrss of a forked child
  would include its parent's peak) for a clip of --frames and of --long-frames frames.

--model: builtin:base (default: the base model that ships with colorray), a generator .pt,
checkpoint or models:/ URI. A path that does not exist falls back to a randomly initialized
generator of the demo preset's shape, and the script says so: its flicker figures still compare
the two modes, its PSNR means nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SIZE = (512, 288)  # frame width, height
FPS = 25
AUDIO_RATE = 48_000


# ---- the clip -----------------------------------------------------------------------------------

def photos() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    return data.astronaut(), load_sample_image("china.jpg")


def camera_path(n: int) -> list[tuple[int, float, float, float]]:
    """(photo, center x, center y, scale: output pixels per photo pixel) of each of n frames:
    pan over photo 0 (35% of the frames), zoom in on it (25%), cut, pan over photo 1 (40%)."""
    a, b = round(0.35 * n), round(0.25 * n)
    c = n - a - b
    path = []
    for i in range(a):  # pan right and a little down
        t = i / max(1, a - 1)
        path.append((0, 175 + 165 * t, 200 + 30 * t, 1.5))
    for i in range(b):  # zoom in on the face
        t = i / max(1, b - 1)
        path.append((0, 340 - 90 * t, 230 - 90 * t, 1.5 * (1.6 ** t)))
    for i in range(c):  # the cut, then a pan to the right over the other photo
        t = i / max(1, c - 1)
        path.append((1, 215 + 210 * t, 200 + 20 * t, 1.2))
    return path


def render(photo: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """The frame the camera sees: photo pixel (cx, cy) at the frame's center, s output pixels per
    photo pixel (bicubic)."""
    w, h = SIZE
    m = np.array([[1 / s, 0, cx - w / 2 / s], [0, 1 / s, cy - h / 2 / s]], np.float32)
    return cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def true_frames(n: int):
    imgs = photos()
    for p, cx, cy, s in camera_path(n):
        yield render(imgs[p], cx, cy, s)


def cut_index(n: int) -> int:
    return round(0.35 * n) + round(0.25 * n)  # the first frame of the second photo


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """What the model sees: the frame's Lab L with no chroma, as 8-bit RGB (colorray's own Lab
    formulas, in numpy)."""
    from colorray.onnx_runtime import lab_to_srgb, srgb_to_L

    L = srgb_to_L(rgb)
    return lab_to_srgb(L, np.zeros((2, *L.shape), np.float32))


def write_clip(path: Path, n: int, gray: bool) -> None:
    """The clip (gray or true color) as H.264 + AAC, audio muxed frame by frame (interleaved)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        v.options = {"crf": "18", "preset": "fast"}  # as colorray.video encodes
        a = out.add_stream("aac", rate=AUDIO_RATE)
        a.layout = "mono"
        sent = 0
        for i, rgb in enumerate(true_frames(n)):
            frame = av.VideoFrame.from_ndarray(gray_of(rgb) if gray else rgb, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
            upto = (i + 1) * AUDIO_RATE // FPS  # the tone up to this frame's end, in 1024-sample frames
            while sent + 1024 <= upto or (i == n - 1 and sent < upto):
                k = min(1024, upto - sent)
                t = (sent + np.arange(k)) / AUDIO_RATE
                af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = AUDIO_RATE, sent
                sent += k
                for p in a.encode(af):
                    out.mux(p)
        for s in (v, a):
            for p in s.encode():
                out.mux(p)


def streams(path: Path) -> dict:
    """What must be kept: frame count (decoded), size, rate, audio codec and packet count."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        audio = c.streams.audio[0] if c.streams.audio else None
        frames = sum(1 for _ in c.decode(video=0))
        c.seek(0)
        packets = sum(1 for p in c.demux(audio) if p.dts is not None) if audio is not None else 0
        return {"frames": frames, "size": f"{v.codec_context.width}x{v.codec_context.height}",
                "rate": str(v.average_rate), "audio": f"{audio.codec_context.name}, {packets} packets" if audio else None}


# ---- the measures -------------------------------------------------------------------------------

def decoded_frames(path: Path):
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> Lab float32 (L 0..100, ab in Lab units)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def reliable_flow(cur_gray: np.ndarray, prev_gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Farneback flow cur -> prev on the true frames, and the mask of pixels it follows reliably
    (forward-backward consistent, inside the previous frame)."""
    args = dict(pyr_scale=0.5, levels=4, winsize=21, iterations=5, poly_n=7, poly_sigma=1.5, flags=0)
    fwd = cv2.calcOpticalFlowFarneback(cur_gray, prev_gray, None, **args)
    bwd = cv2.calcOpticalFlowFarneback(prev_gray, cur_gray, None, **args)
    h, w = cur_gray.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + fwd[..., 0], gy + fwd[..., 1]
    bwd_at = cv2.remap(bwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mismatch = ((fwd + bwd_at) ** 2).sum(-1)
    ok = mismatch <= 0.01 * ((fwd ** 2).sum(-1) + (bwd_at ** 2).sum(-1)) + 0.5
    ok &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return np.stack([mx, my], -1), ok


def camera_flow(cur: tuple, prev: tuple, photo_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The exact motion of the camera path from frame `cur` back to frame `prev` (both entries of
    camera_path, of the same photo): where each pixel of the current frame was in the previous
    one, as remap maps, and the mask of pixels that both frames show from inside the photo (not
    from render's reflected border) and that lie inside the previous frame."""
    w, h = SIZE
    (_, cx, cy, s), (_, pcx, pcy, ps) = cur, prev
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    px, py = (gx - w / 2) / s + cx, (gy - h / 2) / s + cy  # the photo's pixel that render put there
    mx, my = (px - pcx) * ps + w / 2, (py - pcy) * ps + h / 2  # ... and where it was one frame earlier
    ok = (px >= 0) & (px <= photo_shape[1] - 1) & (py >= 0) & (py <= photo_shape[0] - 1)
    ok &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return np.stack([mx, my], -1).astype(np.float32), ok


def measure(outputs: dict[str, Path], n: int) -> dict:
    """Warping error and PSNR of each output (and of the truth), over the n frames. The warping
    error twice: along the flow estimated from the true frames (Farneback, as a measurement on a
    real video must), and along the camera path's exact motion (known here: no flow error)."""
    cut = cut_index(n)
    path, shapes = camera_path(n), [p.shape[:2] for p in photos()]
    readers = {name: decoded_frames(p) for name, p in outputs.items()}
    prev = {}
    sums = {name: [0.0, 0] for name in list(outputs) + ["true"]}  # true: the rendered frames themselves
    exact = {name: [0.0, 0] for name in sums}
    psnr = {name: [] for name in list(outputs) + ["gray input"]}
    prev_gray = None
    for t, truth in enumerate(true_frames(n)):
        true_lab = lab(truth)
        gray = np.clip(true_lab[..., 0] * 2.55, 0, 255).astype(np.uint8)
        frames = {name: next(r) for name, r in readers.items()}
        for name, rgb in list(frames.items()) + [("gray input", gray_of(truth))]:
            mse = np.mean((rgb.astype(np.float64) - truth) ** 2)
            psnr[name].append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
        abs_now = {name: lab(rgb)[..., 1:] for name, rgb in frames.items()}
        abs_now["true"] = true_lab[..., 1:]
        if prev_gray is not None and t != cut:
            maps, ok = reliable_flow(gray, prev_gray)
            for name, ab in abs_now.items():
                warped = cv2.remap(prev[name], maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
                sums[name][0] += float(np.abs(ab - warped).mean(-1)[ok].sum())
                sums[name][1] += int(ok.sum())
            maps, ok = camera_flow(path[t], path[t - 1], shapes[path[t][0]])
            for name, ab in abs_now.items():
                warped = cv2.remap(prev[name], maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
                exact[name][0] += float(np.abs(ab - warped).mean(-1)[ok].sum())
                exact[name][1] += int(ok.sum())
        prev, prev_gray = abs_now, gray
    return {"warping_error": {k: s / max(c, 1) for k, (s, c) in sums.items()},
            "warping_error_exact_motion": {k: s / max(c, 1) for k, (s, c) in exact.items()},
            "reliable_pixels": sums["true"][1] / max(1, (n - 2) * SIZE[0] * SIZE[1]),
            "exact_motion_pixels": exact["true"][1] / max(1, (n - 2) * SIZE[0] * SIZE[1]),
            "psnr": {k: float(np.mean(v)) for k, v in psnr.items()}}


# ---- memory, in a fresh process -----------------------------------------------------------------

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from colorray.video import colorize_video
sys.path.insert(0, sys.argv[5])
from video import load
G, size = load(sys.argv[1])
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 2**20
loaded = status("VmRSS")
t0 = time.perf_counter()
r = colorize_video(G, size, sys.argv[2], sys.argv[3], temporal=True, progress=False)
print(json.dumps({"frames": r.frames, "seconds": time.perf_counter() - t0, "rss_after_load_gib": loaded,
                  "peak_rss_gib": status("VmHWM")}))
"""


def memory(model: str, clip: Path, out: Path, threads: int) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, model, str(clip), str(out), str(threads),
                        str(Path(__file__).parent)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- the model ----------------------------------------------------------------------------------

def load(model: str):
    """(generator in the precision `auto` picks, its training size); model '' -> random demo-shaped."""
    import torch

    from colorray.colorize import load_model
    from colorray.config import parse_params
    from colorray.models import build_generator
    from colorray.precision import for_inference

    if model:
        G, size = load_model(model)
    else:
        params = parse_params({"preset": "demo"})
        torch.manual_seed(0)
        G, size = build_generator(params).eval(), params.data.image_size
    return for_inference(G, size, 8, "cpu", log=lambda m: None), size


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:base", help="the model colorize uses by default: the shipped "
                    "base model; or a generator .pt, a checkpoint, models:/...")
    ap.add_argument("--out", default="bench-video")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--long-frames", type=int, default=1200, help="the longer clip of the memory check (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from colorray.precision import cpu_description
    from colorray.video import colorize_video

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model and not model.startswith(("models:/", "runs:/", "builtin:")) and not Path(model).is_file():
        print(f"video benchmark: {model} is absent (models/generator.pt is DVC-tracked: dvc pull or dvc repro); "
              "using a RANDOMLY INITIALIZED demo-shaped generator: its PSNR means nothing", file=sys.stderr)
        model = ""
    G, size = load(model)
    n = args.frames
    gray_clip, true_clip = out / f"gray_{n}.mp4", out / f"true_{n}.mp4"
    write_clip(gray_clip, n, gray=True)
    write_clip(true_clip, n, gray=False)
    report = {"cpu": cpu_description(), "model": model or "random demo-shaped generator", "precision": G.precision.label,
              "frames": n, "size": f"{SIZE[0]}x{SIZE[1]}", "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/video.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    outputs, speed = {}, {}
    for temporal in (False, True):
        name = "temporal" if temporal else "per-frame"
        # The colorizer's own frames, losslessly (FFV1): what the method does (also the warm-up) ...
        colorize_video(G, size, gray_clip, out / f"{name}_{n}.mkv", temporal=temporal, progress=False, encoder="ffv1")
        # ... and the file a user gets (H.264), timed.
        t0 = time.perf_counter()
        r = colorize_video(G, size, gray_clip, out / f"{name}_{n}.mp4", temporal=temporal, progress=False)
        speed[name] = {"frames_per_s": r.frames / (time.perf_counter() - t0), "cuts": r.cuts}
        outputs[f"{name} (lossless)"] = out / f"{name}_{n}.mkv"
        outputs[f"{name} (H.264)"] = out / f"{name}_{n}.mp4"
    outputs["true (H.264)"] = true_clip
    report["speed"] = speed
    report["streams"] = {"input": streams(gray_clip), **{k: streams(out / f"{k}_{n}.mp4") for k in speed}}
    report.update(measure(outputs, n))
    if args.long_frames:
        long_clip = out / f"gray_{args.long_frames}.mp4"
        write_clip(long_clip, args.long_frames, gray=True)
        report["memory"] = {str(k): memory(model, clip, out / f"mem_{k}.mp4", args.threads)
                            for k, clip in ((n, gray_clip), (args.long_frames, long_clip))}
    (out / "video.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

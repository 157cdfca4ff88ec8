"""colorray.video: videos colorized frame by frame, streamed, with the input's frames, size, rate
and audio kept; the temporal filter steadies colors along the motion; hostile files are refused
by name with nothing left under the output name."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from skimage import data

from colorray import video
from colorray.colorize import RenderTooLarge
from colorray.config import parse_params
from colorray.models import build_generator
from colorray.models.files import save_generator

SMALL = {"model": {"g_channels": 8, "g_channels_max": 16}}


@pytest.fixture(autouse=True, scope="module")
def one_thread(one_torch_thread):
    """Tiny tensors: one intra-op thread (conftest)."""
    yield


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return build_generator(parse_params(SMALL)).eval()


def make_clip(path: Path, frames: int = 20, size: tuple[int, int] = (32, 24), audio: bool = True, step: int = 1,
              codec: str = "libx264", rate: int = 25) -> list[np.ndarray]:
    """A pan over a real photo (skimage's astronaut, downscaled): `step` pixels to the left per
    frame; with a 440 Hz AAC tone. Returns the frames written."""
    w, h = size
    photo = data.astronaut()[::4, ::4][:h, : w + step * frames]
    shown = [np.ascontiguousarray(photo[:, t * step: t * step + w]) for t in range(frames)]
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=rate)
        v.width, v.height = w, h
        v.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        if codec == "libx264":
            v.options = {"preset": "ultrafast", "crf": "10"}
        a = None
        if audio:
            a = out.add_stream("aac", rate=48_000)
            a.layout = "mono"
        for i, rgb in enumerate(shown):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
            if a is not None:  # 1920 samples a frame at 25 frames/s
                t = (i * 1920 + np.arange(1920)) / 48_000
                af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                format="fltp", layout="mono")
                af.sample_rate, af.pts = 48_000, i * 1920
                for p in a.encode(af):
                    out.mux(p)
        for s in [v] + ([a] if a is not None else []):
            for p in s.encode():
                out.mux(p)
    return shown


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.dts is not None]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("size, audio, suffix", [((32, 24), True, ".mp4"), ((33, 25), False, ".mkv")])
def test_frames_size_rate_audio_and_lightness_are_kept(G, tmp_path, size, audio, suffix):
    src = tmp_path / f"clip{suffix}"
    make_clip(src, frames=20, size=size, audio=audio)
    dst = tmp_path / "out" / f"clip_color{suffix}"
    r = video.colorize_video(G, 64, src, dst, progress=False)
    assert r.frames == 20 and r.audio == audio
    i, o = video.probe(src), video.probe(dst)
    assert (o.width, o.height, o.rate, o.audio) == (i.width, i.height, i.rate, i.audio) == (*size, Fraction(25), i.audio)
    frames_in, frames_out = decode(src), decode(dst)
    assert len(frames_out) == len(frames_in) == 20
    assert audio_packets(dst) == audio_packets(src)  # copied, not re-encoded
    with av.open(str(src)) as a, av.open(str(dst)) as b:  # the same timestamps
        assert [f.time for f in a.decode(video=0)] == pytest.approx([f.time for f in b.decode(video=0)], abs=1e-3)
    # The luminance is the input's, at full resolution (within the codec's rounding).
    y = lambda rgb: rgb.astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    assert np.mean([np.abs(y(a) - y(b)).mean() for a, b in zip(frames_in, frames_out)]) < 3.0
    assert leftovers(dst.parent) == [dst.name]  # no temporary file left


def ab_of(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb)[..., 1:]


def test_temporal_mode_reduces_the_warping_error_of_a_pan(G, tmp_path):
    """A pan of 2 px a frame: frame t at x shows what frame t-1 showed at x + 2. The warping
    error (Lai et al. 2018) is then exact: mean |ab_t(x) - ab_{t-1}(x + 2)|. The colorizer's
    frames are kept losslessly (FFV1), so the codec adds nothing."""
    src = tmp_path / "pan.mkv"
    make_clip(src, frames=16, size=(96, 64), audio=False, step=2)
    errors = {}
    for temporal in (False, True):
        dst = tmp_path / f"out_{temporal}.mkv"
        video.colorize_video(G, 64, src, dst, temporal=temporal, progress=False, encoder="ffv1")
        ab = [ab_of(f) for f in decode(dst)]
        errors[temporal] = np.mean([np.abs(ab[t][:, 4:-6] - ab[t - 1][:, 6:-4]).mean() for t in range(1, len(ab))])
    assert errors[True] < 0.6 * errors[False], errors


def test_a_scene_cut_resets_the_filter():
    f = video.TemporalFilter()
    # A photo, not random noise: optical flow on i.i.d. noise is ill-posed (DIS follows a 1-px
    # shift of it at one size and not at another, with either preset).
    scene = cv2.resize(data.camera(), (64, 48), interpolation=cv2.INTER_AREA)
    ab = np.zeros((48, 64, 2), np.float32)
    f.step(scene, ab)
    f.step(np.roll(scene, 1, axis=1), ab + 0.1)  # the same scene, moved: followed
    assert f.cuts == 0 and f.mean_confidence[-1] > 0.3
    other = (255 - scene[::-1]).copy()
    out = f.step(other, ab + 0.5)  # another scene: the new prediction alone
    assert f.cuts == 1 and np.allclose(out, 0.5)


def test_frames_are_streamed_in_bounded_batches(G, tmp_path, monkeypatch):
    """Memory does not grow with the clip: frames go to the generator in batches of at most
    batch_size, each encoded before the next is decoded (a 100,000-frame clip holds no more)."""
    src = tmp_path / "long.mp4"
    make_clip(src, frames=60, size=(16, 16), audio=True, step=0)
    seen = []
    real = video._colorize_frames

    def spy(G, rgbs, *args):
        seen.append(len(rgbs))
        return real(G, rgbs, *args)

    monkeypatch.setattr(video, "_colorize_frames", spy)
    r = video.colorize_video(G, 64, src, tmp_path / "o.mp4", batch_size=8, progress=False)
    assert r.frames == 60 and sum(seen) == 60 and max(seen) <= 8 and len(seen) >= 8


def test_the_render_shape_is_bounded_and_respected(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=4, size=(32, 24), audio=False)
    shapes = []

    class Spy(torch.nn.Module):
        stride = 64

        def forward(self, L):
            shapes.append(tuple(L.shape[-2:]))
            return torch.zeros(L.shape[0], 2, *L.shape[-2:])

    video.colorize_video(Spy(), 64, src, tmp_path / "a.mp4", progress=False)
    video.colorize_video(Spy(), 64, src, tmp_path / "b.mp4", render_size=128, progress=False)
    assert shapes == [(64, 64), (128, 192)]  # the training square; short side 128, aspect kept
    with pytest.raises(RenderTooLarge, match="megapixels"):  # 5461x4096: over MAX_RENDER_PIXELS
        video.colorize_video(Spy(), 64, src, tmp_path / "c.mp4", render_size=4096, progress=False)
    assert leftovers(tmp_path) == ["a.mp4", "b.mp4", "clip.mp4"]


def _hostile(tmp_path: Path) -> dict[str, str]:
    """Bad files, each named like a video -> a piece of the reason it must be refused with."""
    d = tmp_path / "hostile"
    d.mkdir()
    (d / "text.mp4").write_text("this is not a video\n" * 100)
    (d / "empty.mkv").write_bytes(b"")
    good = tmp_path / "good.mp4"
    make_clip(good, frames=20, size=(32, 24))
    (d / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # its index (moov) is at the end
    mkv = tmp_path / "good.mkv"
    make_clip(mkv, frames=20, size=(32, 24))
    (d / "cut.mkv").write_bytes(mkv.read_bytes()[: mkv.stat().st_size * 6 // 10])
    with av.open(str(d / "sound.mp4"), "w") as out:  # audio only
        a = out.add_stream("aac", rate=48_000)
        a.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 48_000, 0
        for p in list(a.encode(af)) + list(a.encode()):
            out.mux(p)
    with av.open(str(d / "eight_k.mkv"), "w") as out:  # one black 7680x4320 frame
        v = out.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 7680, 4320, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((4320, 7680, 3), np.uint8), format="rgb24")
        for p in list(v.encode(frame)) + list(v.encode()):
            out.mux(p)
    return {"text.mp4": "not a readable video", "empty.mkv": "not a readable video",
            "cut.mp4": "not a readable video", "cut.mkv": "truncated", "sound.mp4": "no video stream",
            "eight_k.mkv": "7680x4320"}


def test_hostile_videos_are_refused_by_name_and_nothing_is_left(G, tmp_path, capsys):
    from colorray.cli import main

    expected = _hostile(tmp_path)
    out = tmp_path / "out"
    r = video.colorize_videos(G, 64, video.find_videos([str(tmp_path / "hostile")]), out, progress=False)
    assert r["written"] == [] and sorted(Path(k).name for k in r["failed"]) == sorted(expected)
    for name, why in r["failed"].items():
        assert expected[Path(name).name] in why, (name, why)
    assert leftovers(out) == []  # neither an output nor a temporary file
    # The command names the file and exits 1.
    model = tmp_path / "g.pt"
    params = parse_params(SMALL)
    save_generator(build_generator(params), params, 0, model)
    with pytest.raises(SystemExit) as e:
        main(["colorize", str(tmp_path / "hostile" / "cut.mkv"), "-o", str(tmp_path / "one.mp4"),
              "--model", str(model), "--quiet"])
    assert e.value.code == 1
    assert "cut.mkv" in capsys.readouterr().err and not (tmp_path / "one.mp4").exists()
    assert not list(tmp_path.glob(".one*"))


def test_an_interrupted_video_leaves_no_file(tmp_path):
    src = tmp_path / "clip.mp4"
    make_clip(src, frames=20, size=(32, 24))
    calls = []

    class Interrupted(torch.nn.Module):
        stride = 64

        def forward(self, L):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return torch.zeros(L.shape[0], 2, *L.shape[-2:])

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        video.colorize_video(Interrupted(), 64, src, out / "clip.mp4", batch_size=4, progress=False)
    assert leftovers(out) == []


def test_the_command_colorizes_a_folder_of_videos_and_photos(tmp_path, capsys):
    from PIL import Image

    from colorray.cli import main

    model = tmp_path / "g.pt"
    params = parse_params(SMALL)
    torch.manual_seed(0)
    save_generator(build_generator(params), params, 0, model)
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    make_clip(inputs / "a.mp4", frames=6)
    make_clip(inputs / "sub" / "b.mkv", frames=5, audio=False)
    Image.fromarray(data.camera()[:40, :60]).save(inputs / "photo.png")
    main(["colorize", str(inputs), "-o", str(tmp_path / "out"), "--model", str(model), "--quiet",
          "--temporal", "off"])
    assert leftovers(tmp_path / "out") == ["a.mp4", "photo.png", "sub"]
    assert len(decode(tmp_path / "out" / "a.mp4")) == 6 and len(decode(tmp_path / "out" / "sub" / "b.mkv")) == 5
    assert "2 videos written" in capsys.readouterr().out
    # One video to one named file; an existing output is not replaced without --overwrite.
    main(["colorize", str(inputs / "a.mp4"), "--out", str(tmp_path / "clip_color.mp4"), "--model", str(model),
          "--quiet"])
    assert len(decode(tmp_path / "clip_color.mp4")) == 6
    with pytest.raises(SystemExit) as e:
        main(["colorize", str(inputs / "a.mp4"), "--out", str(tmp_path / "clip_color.mp4"), "--model", str(model),
              "--quiet"])
    assert e.value.code == 1 and "exists" in capsys.readouterr().err


def test_the_benchmark_s_exact_motion_moves_one_frame_onto_the_next():
    """benchmarks/video.py measures flicker along the camera path's own motion: warping frame
    t-1 along camera_flow gives frame t (up to resampling), during the pan and the zoom, and the
    mask leaves out what the earlier frame did not show."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("video_benchmark", ROOT / "benchmarks" / "video.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    n = 40
    path, photos = bench.camera_path(n), bench.photos()
    for t in (5, 20):  # in the pan, in the zoom
        cur, prev = (bench.lab(bench.render(photos[0], *path[i][1:]))[..., 1:] for i in (t, t - 1))
        maps, ok = bench.camera_flow(path[t], path[t - 1], photos[0].shape[:2])
        warped = cv2.remap(prev, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved = np.abs(cur - warped).mean(-1)[ok].mean()
        still = np.abs(cur - prev).mean(-1)[ok].mean()  # as if nothing had moved
        assert 0.9 < ok.mean() < 1 and moved < 0.15 * still, (t, moved, still)

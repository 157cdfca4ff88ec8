"""No request can take the machine: the shape the generator renders at is bounded by pixels
whatever the render size and the aspect ratio, for the REST/pyfunc model and for `colorray
colorize`; the request decoder refuses what it cannot take with a reason, never with a crash."""
import base64
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from colorray.colorize import MAX_RENDER_PIXELS, MAX_RENDER_SIZE, RenderTooLarge, render_shape
from colorray.config import parse_params
from colorray.models.files import save_generator
from colorray.models import build_generator
from colorray.pyfunc import MAX_PIXELS, RequestError, decode_rows
from conftest import ROOT


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    params = parse_params({"model": {"g_channels": 8, "g_channels_max": 16}})
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("g") / "generator.pt"
    save_generator(build_generator(params), params, 0, path, run_id="r1")
    return path


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w), 128, np.uint8)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# What a REST request does, under an 8 GiB address-space cap: the 239-byte PNG of 16 x 8000 at
# render_size 4096 is refused as a bad request (MLflow's INVALID_PARAMETER_VALUE, HTTP 400).
HOSTILE_REQUEST = textwrap.dedent("""
    import base64, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from colorray.pyfunc import ColorizerModel

    model = ColorizerModel()
    model.load_context(type("Context", (), {"artifacts": {"generator": sys.argv[1]}})())
    data = open(sys.argv[2], "rb").read()
    start = time.perf_counter()
    try:
        model.predict(None, pd.DataFrame({"image": [base64.b64encode(data).decode()]}), params={"render_size": 4096})
        print("ANSWERED")
    except MlflowException as e:
        print("REFUSED", e.get_http_status_code(), round(time.perf_counter() - start, 2), e.message)
""")


def test_a_tiny_png_cannot_ask_the_rest_model_for_gigabytes(generator, tmp_path):
    strip = tmp_path / "strip.png"
    strip.write_bytes(_png(16, 8000))
    assert strip.stat().st_size < 1000
    r = subprocess.run([sys.executable, "-c", HOSTILE_REQUEST, str(generator), str(strip)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    verdict, status, seconds, message = r.stdout.strip().splitlines()[-1].split(" ", 3)
    assert verdict == "REFUSED" and status == "400" and float(seconds) < 5
    assert "over the limit of 16.8 megapixels" in message and "16x8000" in message


def test_colorize_refuses_the_same_render_with_the_file_named_and_goes_on(generator, tmp_path, capsys):
    from colorray.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "strip.png").write_bytes(_png(16, 8000))
    Image.fromarray(np.full((40, 60), 90, np.uint8)).save(tmp_path / "in" / "ok.png")
    with pytest.raises(SystemExit):  # one failed file: the command says so and exits non-zero
        main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(generator),
              "--render-size", "512", "--quiet"])
    err = capsys.readouterr()
    assert "strip.png" in err.out + err.err and "over the limit of 16.8 megapixels" in err.out + err.err
    assert Image.open(tmp_path / "out" / "ok.png").size == (60, 40)
    assert not (tmp_path / "out" / "strip.png").exists()


@settings(max_examples=400, deadline=None)
@given(h=st.integers(1, 200_000), w=st.integers(1, 200_000), image_size=st.sampled_from([32, 64, 128, 256]),
       render=st.one_of(st.none(), st.integers(8, MAX_RENDER_SIZE)), stride=st.sampled_from([1, 8, 64, 256]))
def test_the_render_shape_is_bounded_by_pixels_whatever_the_aspect_ratio(h, w, image_size, render, stride):
    try:
        rh, rw = render_shape(h, w, image_size, render, stride)
    except RenderTooLarge as e:
        assert render is not None and "over the limit" in str(e)
        return
    assert rh * rw <= MAX_RENDER_PIXELS
    if render is None:
        assert (rh, rw) == (image_size, image_size)
    else:
        assert rh % stride == 0 and rw % stride == 0 and rh >= stride and rw >= stride


@settings(max_examples=200, deadline=None)
@given(cells=st.lists(st.one_of(st.binary(max_size=64), st.text(max_size=64), st.integers(), st.none(),
                                st.sampled_from(["not base64!", base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()])),
                      min_size=1, max_size=4))
def test_the_request_decoder_answers_any_cells_with_images_or_a_reason(cells):
    try:
        images = decode_rows(cells)
    except RequestError as e:
        assert "problem(s) in a request of" in str(e) and "row " in str(e)
        return
    assert len(images) == len(cells) and all(im.size <= MAX_PIXELS * 3 for im in images)

"""The evaluate stage end to end on the embedded shards, with small models: metrics.json, the
grids, the report (rendered in headless Chromium), the MLflow evaluation run and the registry."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from colorray.config import parse_params
from colorray.baseline import train_baseline
from colorray.evaluate import evaluate, select
from colorray.real_classifier import train_real_classifier
from colorray.train.loop import train_local
from colorray.models.files import save_generator

# One test process for the whole module (make test: --dist loadgroup), so that its module fixture
# (a trained GAN, its baseline and classifier, and an evaluation: ~20 s) is built once.
pytestmark = pytest.mark.xdist_group("evaluate")

TINY = {"model": {"g_channels": 8, "g_channels_max": 32, "d_channels": 8},
        "train": {"iters": 60, "batch_size": 16, "checkpoint_every": 1000},
        "loader": {"num_workers": 0}, "classifier": {"epochs": 1, "max_train_images": 128},
        "evaluate": {"max_images": 96, "select_by": "delta_cf"}}


@pytest.fixture(scope="module")
def evaluated(skimage_shards, tmp_path_factory):
    """A short GAN run, its baseline and classifier, and one evaluation of them."""
    import mlflow

    root = tmp_path_factory.mktemp("eval")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the stage's own store, root/mlflow.db
    params = parse_params(TINY)
    trainer = train_local(params, skimage_shards, root / "gan-run", log=lambda m: None)
    save_generator(trainer.G, params, trainer.iter, root / "generator.pt", run_id=None)
    train_baseline(params, skimage_shards, root / "baseline.pt", log=lambda m: None)
    clf = train_real_classifier(params, skimage_shards, root / "classifier.pt")
    summary = evaluate(params, skimage_shards, root / "generator.pt", root / "baseline.pt", root / "classifier.pt",
                       root / "eval", root, log=lambda m: None)
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return root, summary, clf


def test_metrics_json_has_every_model_and_metric(evaluated):
    root, summary, clf = evaluated
    saved = json.loads((root / "eval" / "metrics.json").read_text())
    for name in ("gray", "reconstruction", "gan"):
        m = saved[name]
        for key in ("l1", "psnr", "psnr_ab", "ssim", "uiqi", "colorfulness", "delta_cf", "omega"):
            assert np.isfinite(m[key]), (name, key)
        assert m["images"] == 96
        # The embedded photos are split by photo: the test photo's class is not a training class.
        assert "accuracy" not in m and "cim" not in m
    # gray is exactly the ground truth's L with ab = 0
    assert saved["gray"]["colorfulness"] < 0.05 and saved["gray"]["delta_cf"] == pytest.approx(
        saved["gray"]["colorfulness_true"], abs=0.05)
    assert clf["test_accuracy"] is None and saved["reference"]["classifier_test_images"] == 0
    assert any("accuracy and CIM unavailable" in n for n in saved["notes"])
    assert "fid" not in saved["gan"] or saved["gan"]["fid_images"] == 96
    assert any("FID unavailable" in n for n in saved["notes"]) == ("fid" not in saved["gan"])


def test_the_gan_beats_gray_on_colorfulness_and_is_registered_as_champion(evaluated):
    import mlflow
    from mlflow import MlflowClient

    root, summary, _ = evaluated
    sel = summary["selection"]
    assert sel["metric"] == "delta_cf" and sel["promoted"], sel
    mv = MlflowClient().get_model_version_by_alias("colorray", "champion")
    assert sel["chosen"] in mv.description and "manifest sha256" in mv.description
    model = mlflow.pyfunc.load_model("models:/colorray@champion")
    assert "python_model.pkl" not in str(model.metadata.to_dict())  # models from code: nothing pickled
    assert model.metadata.get_input_schema().input_names() == ["image"]
    import base64
    import io

    import pandas as pd
    from PIL import Image
    from skimage import data

    gray = data.camera()[:200, :300]  # another size than the model's 64 px
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="JPEG")
    reply = model.predict(pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]}))
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["image"][0]))))
    assert out.shape == (200, 300, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - out.mean(2, keepdims=True)).mean() > 1  # not gray
    array = model.unwrap_python_model().predict(None, gray)  # arrays, without the table
    assert array.shape == (200, 300, 3)


def test_the_colorize_command_uses_the_champion_by_default(evaluated, tmp_path):
    from PIL import Image
    from skimage import data

    from colorray.cli import main

    root, _, _ = evaluated
    Image.fromarray(data.camera()[:90, :120]).save(tmp_path / "old.png")
    main(["colorize", str(tmp_path / "old.png"), "-o", str(tmp_path / "out"), "--quiet",
          "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"])  # --model models:/colorray@champion
    out = np.asarray(Image.open(tmp_path / "out" / "old.png"))
    assert out.shape == (90, 120, 3) and np.abs(out.astype(int) - out.mean(2, keepdims=True)).mean() > 1


def test_the_evaluation_run_is_linked_and_holds_the_outputs(evaluated):
    from mlflow import MlflowClient

    root, summary, _ = evaluated
    client = MlflowClient()
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.data.tags["colorray.stage"] == "evaluate"
    assert run.data.metrics["gan/ssim"] == pytest.approx(summary["models"]["gan"]["ssim"])
    files = {f.path for f in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/report.html", "eval/samples.png", "eval/diversity.png"} <= files


def test_every_candidate_is_a_logged_model_ranked_by_its_test_metrics_and_a_registered_version(evaluated):
    """MLflow 3: each candidate's test metrics are linked to its LoggedModel (the Logged Models
    view sorts by them), each is a version of `colorray`, the run has its data as input."""
    import mlflow
    from mlflow import MlflowClient

    root, summary, _ = evaluated
    client = MlflowClient()
    exp = client.get_experiment_by_name("colorray").experiment_id
    ranked = [m for m in mlflow.search_logged_models(
        experiment_ids=[exp], order_by=[{"field_name": "metrics.test/delta_cf", "ascending": True}],
        output_format="list") if "colorray.candidate" in m.tags]
    by_delta = sorted(("gan", "reconstruction"), key=lambda n: summary["models"][n]["delta_cf"])
    assert [m.tags["colorray.candidate"] for m in ranked] == by_delta
    for m in ranked:
        metrics = {x.key: x.value for x in m.metrics}
        assert metrics["test/delta_cf"] == pytest.approx(summary["models"][m.tags["colorray.candidate"]]["delta_cf"])
        assert metrics["test/ssim"] == pytest.approx(summary["models"][m.tags["colorray.candidate"]]["ssim"])
    versions = {v.tags["colorray.candidate"]: v for v in client.search_model_versions("name='colorray'")}
    assert set(versions) == {"gan", "reconstruction"}
    chosen = summary["selection"]["chosen"]
    assert "the selected model" in versions[chosen].description
    assert "not selected" in versions[({"gan", "reconstruction"} - {chosen}).pop()].description
    assert summary["mlflow"]["version"] == int(versions[chosen].version)
    run = client.get_run(summary["mlflow"]["run_id"])
    (test_input,) = run.inputs.dataset_inputs
    assert test_input.dataset.digest == summary["data"]["manifest_sha256"][:16]
    assert {t.key: t.value for t in test_input.tags}["mlflow.data.context"] == "test"


def test_moving_the_champion_alias_changes_what_colorize_loads(evaluated):
    """What a person does in the MLflow UI (set @champion on another version) is what colorize
    and `mlflow models serve models:/colorray@champion` then use."""
    import mlflow
    import torch
    from mlflow import MlflowClient

    from colorray.colorize import load_model

    root, _, _ = evaluated
    client, uri = MlflowClient(), mlflow.get_tracking_uri()
    current = client.get_model_version_by_alias("colorray", "champion").version
    other = next(v.version for v in client.search_model_versions("name='colorray'") if v.version != current)
    before, _ = load_model("models:/colorray@champion", tracking_uri=uri)
    client.set_registered_model_alias("colorray", "champion", other)  # the UI's "add alias"
    try:
        after, _ = load_model("models:/colorray@champion", tracking_uri=uri)
        expected, _ = load_model(f"models:/colorray/{other}", tracking_uri=uri)
    finally:
        client.set_registered_model_alias("colorray", "champion", current)
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(after, expected) and not same(after, before)


def test_sample_grids_have_the_announced_layout(evaluated):
    from PIL import Image

    root, summary, _ = evaluated
    samples = np.asarray(Image.open(root / "eval" / "samples.png"))
    assert samples.shape == (8 * 66 + 2, 4 * 66 + 2, 3)  # 8 rows x (gray | reconstruction | gan | truth)
    first_gray = samples[2:66, 2:66].astype(int)
    assert np.abs(first_gray - first_gray.mean(2, keepdims=True)).max() <= 2  # column 1 is gray
    diversity = np.asarray(Image.open(root / "eval" / "diversity.png"))
    assert diversity.shape == (4 * 66 + 2, 6 * 66 + 2, 3)  # gray | 4 samples | truth
    assert summary["models"]["gan"]["diversity_ab_std"] > 0  # dropout changes the colorization


def test_a_model_that_does_not_beat_gray_is_not_promoted():
    results = {"gray": {"delta_cf": 30.0, "ssim": 0.95}, "gan": {"delta_cf": 35.0, "ssim": 0.90},
               "reconstruction": {"delta_cf": 31.0, "ssim": 0.93}}
    sel = select(results, "delta_cf")
    assert sel["chosen"] == "reconstruction" and not sel["promoted"] and "not promoted" in sel["reason"]
    sel = select(results, "ssim")  # higher is better
    assert sel["chosen"] == "reconstruction" and not sel["promoted"]
    results["gan"]["delta_cf"] = 2.0
    sel = select(results, "delta_cf")
    assert sel["chosen"] == "gan" and sel["promoted"]


def test_promotion_needs_fidelity_within_the_margins_of_gray():
    results = {"gray": {"delta_cf": 30.0, "psnr": 25.0, "ssim": 0.90},
               "gan": {"delta_cf": 10.0, "psnr": 23.8, "ssim": 0.89},  # wins delta_cf, loses 1.2 dB
               "reconstruction": {"delta_cf": 31.0, "psnr": 26.0, "ssim": 0.91}}
    sel = select(results, "delta_cf", max_psnr_loss_db=1.0, max_ssim_loss=0.05)
    assert sel["chosen"] == "gan" and not sel["promoted"]
    assert sel["reason"].startswith("not promoted, because no model passes every test")
    assert "psnr within 1 dB of gray failed (23.8 vs gray 25: loses 1.2 dB)" in sel["reason"]
    assert "reconstruction: beats gray on delta_cf failed (31 vs gray 30)" in sel["reason"]
    results["gan"]["psnr"] = 24.2  # loses 0.8 dB: within the margin
    sel = select(results, "delta_cf", 1.0, 0.05)
    assert sel["chosen"] == "gan" and sel["promoted"] and "loses 0.8 dB" in sel["reason"]
    results["gan"]["ssim"] = 0.84  # loses 0.06 SSIM
    sel = select(results, "delta_cf", 1.0, 0.05)
    assert not sel["promoted"] and "ssim within 0.05 of gray failed (0.84 vs gray 0.9: loses 0.06)" in sel["reason"]
    results["reconstruction"]["delta_cf"] = 20.0  # a faithful runner-up is promoted over the leader
    sel = select(results, "delta_cf", 1.0, 0.05)
    assert sel["chosen"] == "reconstruction" and sel["promoted"]
    assert select(results, "delta_cf", None, None)["chosen"] == "gan"  # no margins: the metric alone
    del results["reconstruction"]["psnr"]  # fidelity that was not measured cannot be vouched for
    sel = select(results, "delta_cf", 1.0, 0.05)
    assert not sel["promoted"] and "reconstruction: psnr within 1 dB of gray failed (psnr was not measured)" in sel["reason"]


def _opposite_colours(G, gain: float = 4.0):
    """The generator's last layer times -gain: every colour turned to its opposite (tanh is odd)
    and more saturated. More colourful than the barely trained generator (so it wins ΔCF
    against gray), and wrong."""
    import torch

    last = [m for m in G.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last.weight.mul_(-gain)
        last.bias.mul_(-gain)


def test_a_model_that_wins_delta_cf_but_costs_psnr_is_not_promoted_and_the_champion_stays(evaluated, skimage_shards,
                                                                                           tmp_path):
    import html

    from mlflow import MlflowClient

    from colorray.models.files import load_generator

    root, _, _ = evaluated
    client = MlflowClient()
    champion = client.get_model_version_by_alias("colorray", "champion").version
    G, gen_params, _ = load_generator(root / "generator.pt")
    _opposite_colours(G)
    save_generator(G, gen_params, 60, tmp_path / "opposite.pt", run_id=None)
    params = parse_params({**TINY, "evaluate": {**TINY["evaluate"], "max_psnr_loss_db": 1.0, "max_ssim_loss": None}})
    summary = evaluate(params, skimage_shards, tmp_path / "opposite.pt", tmp_path / "opposite.pt",
                       root / "classifier.pt", tmp_path / "eval", root, log=lambda m: None)
    sel = summary["selection"]
    tests = {t["test"]: t for t in sel["tests"]["gan"]}
    assert tests["beats gray on delta_cf"]["passed"], sel  # it wins the selection metric...
    assert not tests["psnr within 1 dB of gray"]["passed"] and tests["psnr within 1 dB of gray"]["loss"] > 1, sel["reason"]
    assert not sel["promoted"] and sel["reason"].startswith("not promoted, because")
    assert client.get_model_version_by_alias("colorray", "champion").version == champion  # the previous one stays
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["selection"]
    assert saved["promoted"] is False and saved["reason"] == sel["reason"] and saved["max_psnr_loss_db"] == 1.0
    assert saved["tests"]["gan"]["psnr within 1 dB of gray"] == {"passed": False,
                                                                 "loss": tests["psnr within 1 dB of gray"]["loss"]}
    report = (tmp_path / "eval" / "report.html").read_text()
    assert html.escape(sel["reason"]) in report and "<td class=fail>failed</td>" in report


def test_the_starting_model_stays_the_champion_when_fine_tuning_made_it_worse(evaluated, skimage_shards, tmp_path):
    """train.init_from names a model (here the shipped base, as `make run` does): it is the
    candidate "start", unchanged; when the fine-tuned models fail the promotion tests (here they
    wrong every colour), the champion is the starting model, registered as a version of its own."""
    from mlflow import MlflowClient

    from colorray.colorize import load_model
    from colorray.models.files import load_generator
    from colorray.train import init_from

    root, _, _ = evaluated
    previous = MlflowClient().get_model_version_by_alias("colorray", "champion").version
    init_from.resolve("builtin:base", tmp_path / "models")
    G, gen_params, _ = load_generator(root / "generator.pt")
    _opposite_colours(G)
    save_generator(G, gen_params, 60, tmp_path / "opposite.pt", run_id=None)
    summary = evaluate(parse_params(TINY), skimage_shards, tmp_path / "opposite.pt", tmp_path / "opposite.pt",
                       root / "classifier.pt", tmp_path / "eval", root, log=lambda m: None,
                       init=tmp_path / "models" / "init.pt")
    sel = summary["selection"]
    assert {"gan", "reconstruction", "start"} <= sel["tests"].keys()
    assert not all(t["passed"] for t in sel["tests"]["gan"])
    assert sel["chosen"] == "start" and sel["promoted"], sel["reason"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["selection"]["chosen"] == "start" and saved["start"]["images"] == TINY["evaluate"]["max_images"]
    version = summary["mlflow"]["models"]["start"]["version"]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("colorray", "champion").version) == str(version)
    assert "builtin:base" in client.get_model_version("colorray", str(version)).description
    G, size = load_model("models:/colorray@champion")  # what colorize and serve load now: the base, as shipped
    assert size == 64 and G.chroma_gain == 0.65
    client.set_registered_model_alias("colorray", "champion", previous)  # the module's other tests expect it


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_renders_in_headless_chromium(evaluated, tmp_path):
    from PIL import Image

    root, summary, _ = evaluated
    page = (root / "eval" / "report.html").resolve().as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    table = re.search(r'<table id="metrics">(.*?)</table>', dom, re.S).group(1)
    assert all(f"<td>{name}</td>" in table for name in ("gray", "reconstruction", "gan"))
    assert f"{summary['models']['gan']['ssim']:.4g}" in table
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2400", "--hide-scrollbars", page],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    chroma = np.abs(pixels - pixels.mean(2, keepdims=True)).max(2)
    # The embedded grids put many colorful pixels on the page; text, table and broken-image
    # icons alone give a few hundred at most.
    assert (chroma > 30).sum() > 20_000, (chroma > 30).sum()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height, and nothing else: a decoder that trusts
    the header would allocate width * height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_mlflow_models_serve_refuses_bad_requests_with_4xx_and_keeps_serving(evaluated, tmp_path):
    """`mlflow models serve` of the champion on a free loopback port: malformed, oversized and
    hostile requests get a 4xx with a one-line reason naming the row; then a good request is
    colorized by the same server."""
    import base64
    import io
    import socket
    import sys
    import time
    import urllib.request

    from PIL import Image
    from skimage import data

    root, _, _ = evaluated
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # the server runs the venv's uvicorn
    mlflow_cli = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/colorray@champion",
                  "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(mlflow_cli, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        def post(body: bytes) -> tuple[int, dict]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        def table(*cells) -> bytes:
            return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[c] for c in cells]}}).encode()

        buf = io.BytesIO()
        Image.fromarray(data.camera()[:100, :150]).save(buf, format="PNG")
        good = base64.b64encode(buf.getvalue()).decode()
        # Refused with a 4xx and a one-line reason naming the row; the server stays up.
        bomb = base64.b64encode(_png_header_only(8000, 6000)).decode()  # 57 bytes claiming 48 MP
        for body, reason in [(b"{not json", None), (table(good, "%%% not base64 %%%"), "row 1: not base64"),
                             (table(bomb), "row 0: 8000x6000 is 48 megapixels, over the limit of 40"),
                             (table(*[good] * 3, base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n").decode()),
                              "row 3: PostScript/EPS file, not an accepted image format"),
                             (json.dumps({"dataframe_split": {"columns": ["image"], "data": [[3_000_000_000]]}}).encode(),
                              None)]:
            status, reply = post(body)
            assert 400 <= status < 500, (status, reply)
            assert "Traceback" not in json.dumps(reply) and "stack_trace" not in reply
            if reason is not None:
                assert reason in reply["message"], reply["message"]
        status, reply = post(table(good))
        assert status == 200
        out = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["predictions"][0]["image"]))))
        assert out.shape == (100, 150, 3)
        assert np.abs(out.astype(int) - out.mean(2, keepdims=True)).mean() > 1  # not gray
        # The render size over REST: the signature's inference parameter (default 0: the training size).
        with_params = lambda p: json.dumps({"dataframe_split": {"columns": ["image"], "data": [[good]]},  # noqa: E731
                                            "params": p}).encode()
        status, rendered = post(with_params({"render_size": 128}))
        assert status == 200
        big = np.asarray(Image.open(io.BytesIO(base64.b64decode(rendered["predictions"][0]["image"]))))
        assert big.shape == (100, 150, 3) and not np.array_equal(big, out)
        status, reply = post(with_params({"render_size": 3}))
        assert status == 400 and "params.render_size 3" in reply["message"], reply
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_unlabeled_photos_get_every_metric_but_the_classifier_ones(tmp_path):
    """A flat folder of your own photos has no labels: the classifier stage says so instead of
    failing the DAG, and the evaluation reports the classifier metrics as unavailable."""
    from PIL import Image
    from skimage import data

    from colorray.config import DataParams
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source
    from colorray.models import build_generator

    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = data.astronaut()
    for i in range(60):
        Image.fromarray(rgb[(i % 6) * 70:(i % 6) * 70 + 96, (i // 6) * 40:(i // 6) * 40 + 96]).save(photos / f"{i}.png")
    cfg = DataParams(source="folder", path=str(photos), image_size=32, val_fraction=0.2, test_fraction=0.2)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    write_shards(cfg, tmp_path / "raw", tmp_path / "shards", progress=False)
    params = parse_params({"data": {"image_size": 32}, "model": {"g_channels": 8, "g_channels_max": 16},
                           "evaluate": {"grid_images": 2, "diversity_images": 2, "register_model": False}})
    s = train_real_classifier(params, tmp_path / "shards", tmp_path / "classifier.pt")
    assert "unavailable" in s and "label" in s["unavailable"]
    for name in ("generator.pt", "baseline.pt"):
        save_generator(build_generator(params), params, 0, tmp_path / name)
    summary = evaluate(params, tmp_path / "shards", tmp_path / "generator.pt", tmp_path / "baseline.pt",
                       tmp_path / "classifier.pt", tmp_path / "eval", tmp_path, log=lambda m: None)
    for m in summary["models"].values():
        assert "ssim" in m and not {"accuracy", "cim", "omega"} & m.keys()
    assert any(n.startswith("accuracy, CIM and omega unavailable") for n in summary["notes"])
    assert (tmp_path / "eval" / "report.html").stat().st_size > 1000

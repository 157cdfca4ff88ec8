"""colorray.colorize: any size in, the same size out, the input's own lightness kept."""
import numpy as np
import pytest
import torch
from skimage import color, data

from colorray.colorize import as_rgb_uint8, colorize
from colorray.models.files import load_generator, save_generator
from colorray.config import parse_params
from colorray.models import build_generator

SMALL = {"model": {"g_channels": 8, "g_channels_max": 16}}


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    params = parse_params(SMALL)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("g") / "generator.pt"
    save_generator(build_generator(params), params, 0, path, run_id="r1")
    return path


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_the_output_keeps_the_inputs_resolution_and_lightness(generator, name):
    G, params, meta = load_generator(generator)
    assert meta["run_id"] == "r1" and params.data.image_size == 64
    image = getattr(data, name)()  # camera: a real grayscale photo; astronaut: color, made gray here
    gray = image if image.ndim == 2 else (color.rgb2gray(image) * 255).round().astype(np.uint8)
    gray = gray[:301, :457]  # odd sizes, another aspect than the model's square
    out = colorize(G, gray, params.data.image_size)
    assert out.shape == (301, 457, 3) and out.dtype == np.uint8
    L_in = color.rgb2lab(as_rgb_uint8(gray))[..., 0]
    L_out = color.rgb2lab(out)[..., 0]
    # Equal within the rounding of 8-bit RGB (an L step of 100/255 at most, far less on average)
    assert np.abs(L_out - L_in).max() < 1.0 and np.abs(L_out - L_in).mean() < 0.3


def test_input_kinds_are_normalised_and_bad_ones_refused(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb_uint8(g).shape == (3, 4, 3)
    assert as_rgb_uint8(g[..., None]).shape == (3, 4, 3)
    assert (as_rgb_uint8(np.full((2, 2, 4), 65535, np.uint16)) == 255).all()  # 16-bit RGBA
    assert (as_rgb_uint8(np.full((2, 2), 0.5)) == 128).all()
    with pytest.raises(ValueError, match="shape"):
        as_rgb_uint8(np.zeros((2, 2, 2), np.uint8))
    bad = tmp_path / "g.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="not a colorray generator"):
        load_generator(bad)
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing.pt")


def test_the_command_writes_good_files_names_bad_ones_and_never_overwrites(generator, tmp_path, capsys):
    from PIL import Image

    from colorray.cli import main

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(data.camera()[:120, :90]).save(photos / "camera.png")
    Image.fromarray(data.astronaut()[:50, :70]).convert("P").save(photos / "sub" / "palette.gif")
    Image.fromarray((data.camera()[:40, :40].astype(np.uint16) * 257)).save(photos / "sixteen.png")
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    (photos / "notes.txt").write_text("not an image")  # not an image extension: not an input
    (photos / "fake.png").write_text("text with an image's name")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["colorize", str(photos), "-o", str(out), "--model", str(generator), "--quiet"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "corrupt.jpg" in err and "fake.png" in err and "camera.png" not in err
    assert Image.open(out / "camera.png").size == (90, 120)
    assert Image.open(out / "sub" / "palette.png").size == (70, 50)
    assert Image.open(out / "sixteen.png").size == (40, 40)
    before = (out / "camera.png").read_bytes()
    (out / "camera.png").write_bytes(b"mine")
    with pytest.raises(SystemExit):  # outputs exist: skipped, not replaced
        main(["colorize", str(photos / "camera.png"), "-o", str(out), "--model", str(generator), "--quiet"])
    assert (out / "camera.png").read_bytes() == b"mine"
    main(["colorize", str(photos / "camera.png"), "-o", str(out), "--model", str(generator), "--quiet",
          "--overwrite"])
    assert (out / "camera.png").read_bytes() == before
    with pytest.raises(SystemExit):  # writing next to the inputs would replace camera.png itself
        main(["colorize", str(photos / "camera.png"), "-o", str(photos), "--model", str(generator), "--quiet"])
    assert Image.open(photos / "camera.png").mode == "L"


def test_batching_changes_nothing_and_a_big_photo_goes_alone(generator, tmp_path, monkeypatch):
    from PIL import Image

    import colorray.colorize as cz

    G, params, _ = load_generator(generator)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 60), (64, 64), (300, 200), (33, 47)]):
        Image.fromarray(data.astronaut()[:h, i * 10:i * 10 + w]).save(folder / f"{i}.png")
    files = cz.find_inputs([str(folder)])
    calls = []
    real = cz.colorize_batch
    monkeypatch.setattr(cz, "colorize_batch", lambda G, ims, *a, **k: calls.append(len(ims)) or real(G, ims, *a, **k))
    monkeypatch.setattr(cz, "BATCH_PIXELS", 300 * 200)  # the 300x200 photo fills a batch by itself
    cz.colorize_files(G, 64, files, tmp_path / "b8", batch_size=8, progress=False)
    assert calls == [2, 1, 1]
    cz.colorize_files(G, 64, files, tmp_path / "b1", batch_size=1, progress=False)
    for i in range(4):
        a = np.asarray(Image.open(tmp_path / "b8" / f"{i}.png"))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b1" / f"{i}.png")))


def test_samples_and_side_by_side(generator, tmp_path):
    from PIL import Image

    from colorray.cli import main

    src = tmp_path / "photo.jpg"
    Image.fromarray(data.camera()[:80, :100]).save(src)
    main(["colorize", str(src), "-o", str(tmp_path / "o"), "--model", str(generator), "--quiet",
          "--samples", "2", "--side-by-side", "--format", "jpg"])
    for k in (1, 2):
        im = np.asarray(Image.open(tmp_path / "o" / f"photo_sample{k}.jpg"))
        assert im.shape == (80, 200, 3)  # gray input | colorization
    with pytest.raises(SystemExit):
        main(["colorize", str(src), "--model", str(generator), "--batch-size", "0"])
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(SystemExit) as e:  # a clear error, no traceback
        main(["colorize", str(src), "--model", str(tmp_path / "junk.pt")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["colorize", str(src), "--model", "models:/colorray@champion",
              "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert e.value.code == 2


# ---- issue 15: hostile registries, clashing names, inputs as outputs, the side-by-side bound ----

class _Payload:
    """Unpickling this runs code: it touches `marker` (what a tampered model would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_a_tampered_registry_alias_does_not_run_its_pickle_in_colorize(generator, tmp_path, capsys):
    """models:/colorray@champion moved to a pyfunc whose pickle runs code: `colorray colorize`
    downloads files and reads tensors only, so it refuses the model and the code never runs."""
    import mlflow

    from colorray.cli import main
    from colorray.model_uri import mlflow_tracking

    class Tampered(mlflow.pyfunc.PythonModel):
        def __init__(self, marker):
            self.payload = _Payload(marker)

        def predict(self, context, model_input, params=None):
            return model_input

    marker, uri = tmp_path / "code-ran", f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Requirements given, so MLflow does not load the model in a subprocess to infer them.
    requirements = ["mlflow"]
    with mlflow_tracking(uri):
        mlflow.set_experiment("colorray")
        with mlflow.start_run():  # version 1: the pickle, plus a real generator file
            mlflow.pyfunc.log_model(name="colorizer", python_model=Tampered(marker),
                                    artifacts={"generator": str(generator)}, registered_model_name="colorray",
                                    pip_requirements=requirements)
        with mlflow.start_run():  # version 2: the pickle alone
            mlflow.pyfunc.log_model(name="colorizer", python_model=Tampered(marker), registered_model_name="colorray",
                                    pip_requirements=requirements)
    marker.unlink(missing_ok=True)  # in case MLflow loaded the model while logging it
    from skimage import data
    from PIL import Image

    Image.fromarray(data.camera()[:40, :40]).save(tmp_path / "old.png")
    args = ["colorize", str(tmp_path / "old.png"), "--quiet", "--tracking-uri", uri, "--model", "models:/colorray@champion"]
    for version in (1, 2):
        mlflow.MlflowClient(uri).set_registered_model_alias("colorray", "champion", version)
        out = tmp_path / f"out{version}"
        if version == 1:  # the generator's tensors are used; the pickle is never opened
            main(args + ["-o", str(out)])
            assert (out / "old.png").exists()
        else:
            with pytest.raises(SystemExit) as e:
                main(args + ["-o", str(out)])
            assert e.value.code == 2 and "colorray loads weights only, never a pickled model" in capsys.readouterr().err
            assert not out.exists()
        assert not marker.exists()
    # The payload is real: MLflow's own loader runs it.
    with mlflow_tracking(uri):
        mlflow.pyfunc.load_model("models:/colorray@champion")
    assert marker.exists()


def test_colorize_loads_a_registered_colorizer_from_its_weights(generator, tmp_path):
    import mlflow

    from colorray.colorize import load_model
    from colorray.model_uri import mlflow_tracking
    from colorray.pyfunc import log_colorizer

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_tracking(uri):
        mlflow.set_experiment("colorray")
        with mlflow.start_run():
            info = log_colorizer(generator)
    G, size = load_model(info.model_uri, tracking_uri=uri)
    G0, _, _ = load_generator(generator)
    assert size == 64 and all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G0.state_dict().values()))


def _photo(path, h=40, w=60):
    from PIL import Image

    Image.fromarray(data.astronaut()[:h, :w]).save(path)


def test_inputs_that_share_a_name_get_outputs_of_their_own(generator, tmp_path):
    """x.jpg and x.png in one folder, and x.png in another folder given as a file: three
    inputs, three outputs, none overwritten, the renaming reported."""
    from colorray.colorize import colorize_files, find_inputs

    G, params, _ = load_generator(generator)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _photo(tmp_path / "a" / "x.jpg")
    _photo(tmp_path / "a" / "x.png", 30)
    _photo(tmp_path / "b" / "x.png", 20)
    files = find_inputs([str(tmp_path / "a" / "x.jpg"), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")])
    r = colorize_files(G, 64, files, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "x_png-2.png", "x_png.png"]
    assert len(r["written"]) == 3 and len(set(r["written"])) == 3 and len(r["renamed"]) == 2
    from PIL import Image

    heights = sorted(Image.open(p).size[1] for p in (tmp_path / "out").iterdir())
    assert heights == [20, 30, 40]  # each input's own output


def test_overwrite_never_replaces_an_input_without_replace_inputs(generator, tmp_path, capsys):
    from colorray.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "x.png")
    original = (photos / "x.png").read_bytes()
    args = ["colorize", str(photos), "-o", str(photos), "--model", str(generator), "--quiet", "--overwrite"]
    with pytest.raises(SystemExit):
        main(args)
    assert (photos / "x.png").read_bytes() == original
    assert "--overwrite --replace-inputs replaces it" in capsys.readouterr().err
    main(args + ["--replace-inputs"])
    assert (photos / "x.png").read_bytes() != original


def test_side_by_side_converts_in_strips(generator, tmp_path, monkeypatch):
    """The gray half of --side-by-side is converted STRIP_ROWS rows at a time, like the colorization."""
    import colorray.colorize as cz

    rows = []
    original = cz.rgb_uint8_to_lab

    def spy(rgb, *a, **k):
        rows.append(rgb.shape[1])
        return original(rgb, *a, **k)

    monkeypatch.setattr(cz, "rgb_uint8_to_lab", spy)
    G, _, _ = load_generator(generator)
    _photo(tmp_path / "tall.png", h=3 * cz.STRIP_ROWS + 7, w=50)
    r = cz.colorize_files(G, 64, [(tmp_path / "tall.png", __import__("pathlib").Path("tall.png"))], tmp_path / "out",
                          side_by_side=True, progress=False)
    assert r["written"] and max(rows) <= cz.STRIP_ROWS


class _Spy(torch.nn.Module):
    """Wraps a generator and records the shape of every input it sees."""

    def __init__(self, G):
        super().__init__()
        self.G, self.seen = G, []

    def forward(self, L):
        self.seen.append(tuple(L.shape))
        return self.G(L)


def test_render_size_sets_what_the_generator_sees_and_nothing_else_changes(generator):
    """--render-size N: short side N, aspect kept, sides rounded to the network's stride; the
    output keeps the photo's size and lightness. Default: the training square."""
    from colorray.colorize import render_shape, stride_of

    G, params, _ = load_generator(generator)
    spy = _Spy(G)
    assert stride_of(spy) == 2 ** params.generator_depth() == 64  # the U-Net down to 1x1 at 64 px
    gray = data.camera()[:300, :457]
    L_in = color.rgb2lab(as_rgb_uint8(gray))[..., 0]
    for render, seen in ((None, (64, 64)), (128, (128, 192)), (256, (256, 384))):
        out = colorize(spy, gray, params.data.image_size, render_size=render)
        assert spy.seen[-1] == (1, 1, *seen), render  # 457 * 128 / 300 = 195 -> 192, a multiple of 64
        assert out.shape == (300, 457, 3) and np.abs(color.rgb2lab(out)[..., 0] - L_in).max() < 1.0
    assert render_shape(3000, 4000, 64, 110, 8) == (112, 144)  # 110 -> 112; 146.7 -> 144
    assert render_shape(40, 30, 64, 8, 64) == (64, 64)  # never below one stride


def test_the_command_and_the_pyfunc_take_a_render_size(generator, tmp_path, capsys):
    from mlflow.exceptions import MlflowException

    from colorray.cli import main
    from colorray.pyfunc import ColorizerModel

    photo = tmp_path / "in" / "p.png"
    photo.parent.mkdir()
    from PIL import Image

    Image.fromarray(data.camera()[:120, :200]).save(photo)
    main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--model", str(generator), "--render-size", "128",
          "--quiet"])
    assert Image.open(tmp_path / "out" / "p.png").size == (200, 120)
    with pytest.raises(SystemExit):
        main(["colorize", str(photo), "-o", str(tmp_path / "out2"), "--model", str(generator), "--render-size", "3"])
    assert "--render-size 3: the generator's input short side must be 8 to" in capsys.readouterr().err

    model = ColorizerModel()
    model.load_context(type("Context", (), {"artifacts": {"generator": str(generator)}})())
    gray = data.camera()[:120, :200]
    assert not np.array_equal(model.predict(None, gray, params={"render_size": 128}), model.predict(None, gray))
    with pytest.raises(MlflowException, match="params.render_size 5: 0 .the training size. or a short side"):
        model.predict(None, gray, params={"render_size": 5})


def test_right_after_install_colorize_uses_the_shipped_base_model(tmp_path, monkeypatch):
    """No training run, no MLflow store: `colorray colorize <folder>` without --model colorizes
    with the base model that ships inside the package, every output the size of its input and
    in color."""
    from PIL import Image

    from colorray.cli import main
    from colorray.model_uri import BASE_WEIGHTS

    assert BASE_WEIGHTS.is_file(), f"{BASE_WEIGHTS}: the shipped base model is missing"
    monkeypatch.chdir(tmp_path)  # an empty folder: no mlflow.db, no models/
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {}
    for name in ("astronaut", "coffee", "chelsea"):
        gray = (color.rgb2gray(getattr(data, name)()) * 255).round().astype(np.uint8)
        Image.fromarray(gray).save(photos / f"{name}.jpg", quality=90)
        sizes[name] = gray.shape
    main(["colorize", str(photos), "-o", "out", "--quiet"])
    assert not (tmp_path / "mlflow.db").exists()
    for name, (h, w) in sizes.items():
        out = np.asarray(Image.open(tmp_path / "out" / f"{name}.png").convert("RGB")).astype(int)
        assert out.shape == (h, w, 3)
        spread = (out.max(-1) - out.min(-1)).mean()  # 0 for a gray image
        assert spread > 8, f"{name}: the colorization is nearly gray (mean channel spread {spread:.1f})"


def test_the_shipped_base_model_logs_as_an_mlflow_colorizer(tmp_path):
    """The pyfunc/REST model can be built from the shipped weights: logged, loaded back by
    MLflow, it colorizes a gray photo at its own size, as `colorray colorize` does."""
    import mlflow

    from colorray.colorize import load_model
    from colorray.model_uri import BASE_WEIGHTS, mlflow_tracking
    from colorray.pyfunc import log_colorizer

    with mlflow_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        mlflow.set_experiment("colorray-base")
        with mlflow.start_run():
            info = log_colorizer(BASE_WEIGHTS, registered_model_name="colorray-base")
        model = mlflow.pyfunc.load_model("models:/colorray-base/1")
    gray = (color.rgb2gray(data.coffee()) * 255).round().astype(np.uint8)
    out = model.unwrap_python_model().predict(None, gray)
    assert out.shape == (*gray.shape, 3) and (out.max(-1).astype(int) - out.min(-1)).mean() > 8
    G, size = load_model("builtin:base")  # the same weights; the pyfunc runs them in the precision `auto` picks
    assert info.model_id and np.abs(out.astype(int) - colorize(G, gray, size).astype(int)).mean() < 3

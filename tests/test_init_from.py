"""train.init_from: starting weights from a generator file, a training checkpoint or an MLflow
model (by id, version or alias); architecture checks; D loaded when it fits; the record the
init stage writes. (A whole training run from a registered model: test_distributed.py.)"""
import json
from pathlib import Path

import pytest
import torch

from colorray.config import parse_params
from colorray.models.files import save_generator
from colorray.train import init_from
from colorray.train.step import GANTrainer

TINY = {"g_channels": 4, "g_channels_max": 16, "d_channels": 4, "g_depth": 3}


def _trainer(seed=0, **model):
    p = parse_params({"data": {"image_size": 32}, "model": {**TINY, **model},
                      "train": {"amp": "none", "channels_last": False, "seed": seed, "batch_size": 4}})
    return GANTrainer(p, "cpu")


def _same(net, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


@pytest.fixture
def source(tmp_path):
    """A trained-looking GAN (seed 1), saved as a generator file with D and as a checkpoint."""
    t = _trainer(seed=1)
    gen, ckpt = tmp_path / "generator.pt", tmp_path / "checkpoint.pt"
    save_generator(t.G, t.params, 7, gen, D=t.D.state_dict(), run_id="r")
    t.iter = 7
    t.save(ckpt)
    return t, gen, ckpt


def _start(ref, tmp_path, run=None, tracking_uri=None):
    """init stage + a fresh trainer (seed 0: other random weights) loading its output."""
    record = init_from.resolve(ref, tmp_path / "models", tracking_uri)
    run = run or _trainer(seed=0)
    lines = []
    d_loaded = init_from.apply(run, init_from.load(tmp_path / "models" / "init.pt"), log=lines.append)
    return run, record, d_loaded, lines


@pytest.mark.parametrize("kind", ["generator", "checkpoint"])
def test_init_from_a_file_loads_g_and_d_and_starts_the_count_afresh(source, tmp_path, kind):
    src, gen, ckpt = source
    fresh = _trainer(seed=0)
    assert not _same(fresh.G, src.G.state_dict())  # another seed: other weights before loading
    run, record, d_loaded, lines = _start(str(gen if kind == "generator" else ckpt), tmp_path, fresh)
    assert _same(run.G, src.G.state_dict()) and _same(run.D, src.D.state_dict()) and d_loaded
    assert run.iter == 0 and not run.opt_g.state  # optimizers and iteration count start fresh
    assert record["kind"] == kind and record["trained_iters"] == 7 and record["discriminator"] is True
    assert json.loads((tmp_path / "models" / "init.json").read_text()) == record
    assert "G and D from the starting model" in lines[0]


def test_init_from_an_mlflow_model_by_id_version_and_alias(source, tmp_path):
    """What the UI's alias does: moving @champion changes what the init stage resolves, and
    so the weights' hash DVC sees."""
    import mlflow
    from mlflow import MlflowClient

    from colorray.model_uri import mlflow_tracking
    from colorray.pyfunc import log_colorizer

    src, gen, _ = source
    other = _trainer(seed=2)
    gen2 = tmp_path / "generator2.pt"
    save_generator(other.G, other.params, 3, gen2, D=other.D.state_dict())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_tracking(uri):
        exp = MlflowClient(uri).create_experiment("init-test")  # not the process's active experiment
        with mlflow.start_run(experiment_id=exp):
            first = log_colorizer(gen, registered_model_name="colorray")
            second = log_colorizer(gen2, registered_model_name="colorray")
    client = MlflowClient(uri)
    client.set_registered_model_alias("colorray", "champion", "1")

    for ref in (f"models:/{first.model_id}", "models:/colorray/1", "models:/colorray@champion"):
        run, record, d_loaded, _ = _start(ref, tmp_path, tracking_uri=uri)
        assert _same(run.G, src.G.state_dict()) and d_loaded, ref
        assert record["model_id"] == first.model_id and record["init_from"] == ref
    assert record["version"] == 1 and record["alias"] == "champion" and record["registered_name"] == "colorray"
    tags = init_from.lineage_tags(record)
    assert tags["colorray.parent.model_id"] == first.model_id and tags["colorray.parent.version"] == "1"
    assert tags["colorray.parent.init_from"] == "models:/colorray@champion"

    client.set_registered_model_alias("colorray", "champion", "2")  # what a person does in the UI
    run, moved, _, _ = _start("models:/colorray@champion", tmp_path, tracking_uri=uri)
    assert moved["version"] == 2 and moved["model_id"] == second.model_id and moved["sha256"] != record["sha256"]
    assert _same(run.G, other.G.state_dict())


def test_an_architecture_mismatch_names_the_differing_model_keys(source, tmp_path):
    _, gen, _ = source
    with pytest.raises(ValueError, match=r"model\.g_channels 4 -> 8.*model\.g_channels_max 16 -> 32"):
        _start(str(gen), tmp_path, _trainer(g_channels=8, g_channels_max=32))


def test_d_starts_from_random_weights_when_the_source_has_none_or_another_one(source, tmp_path):
    src, _, _ = source
    no_d = tmp_path / "baseline.pt"
    save_generator(src.G, src.params, 7, no_d)  # a reconstruction baseline's file: G only
    run, _, d_loaded, lines = _start(str(no_d), tmp_path)
    assert _same(run.G, src.G.state_dict()) and not d_loaded and "the source has none" in lines[0]

    _, gen, _ = source
    fresh = _trainer(seed=0, d_channels=8)
    d_before = {k: v.clone() for k, v in fresh.D.state_dict().items()}
    run, _, d_loaded, lines = _start(str(gen), tmp_path, fresh)
    assert not d_loaded and _same(run.D, d_before) and "model.d_channels 4 -> 8" in lines[0]


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.init_from nowhere.pt: no such file"):
        init_from.resolve("nowhere.pt", tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a readable colorray model file"):
        init_from.resolve(str(junk), tmp_path)
    with pytest.raises(ValueError, match="models:/colorray@nope: not found in MLflow"):
        init_from.resolve("models:/colorray@nope", tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    from colorray.config import ConfigError

    with pytest.raises(ConfigError, match="runs:/ URIs are deprecated in MLflow 3"):
        parse_params({"train": {"init_from": "runs:/abc/colorizer"}})


def test_a_stale_init_file_is_refused_and_null_writes_a_file_that_says_so(source, tmp_path):
    _, gen, _ = source
    init_from.resolve(None, tmp_path)
    assert init_from.load(tmp_path / "init.pt") is None
    assert init_from.prepare(None, tmp_path / "init.pt", tmp_path, None) == (None, init_from.read_record(tmp_path))
    with pytest.raises(ValueError, match="resolved for train.init_from=None, but the parameters say"):
        init_from.prepare(str(gen), tmp_path / "init.pt", tmp_path, None)
    init_from.resolve(str(gen), tmp_path)  # the init stage's relative path: absolute for the Ray workers
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        path, _ = init_from.prepare(str(gen), Path("init.pt"), tmp_path, None)
    finally:
        os.chdir(cwd)
    assert path == tmp_path / "init.pt" and path.is_absolute()


def test_train_local_starts_from_the_model_too(source, tmp_path, skimage_shards):
    from colorray.train.loop import train_local

    _, gen, _ = source
    params = parse_params({"data": {"image_size": 32}, "model": TINY, "loader": {"num_workers": 0},
                           "train": {"amp": "none", "channels_last": False, "batch_size": 4, "iters": 1,
                                     "init_from": str(gen)}})
    lines = []
    trainer = train_local(params, skimage_shards, tmp_path / "run", log=lines.append)
    assert trainer.iter == 1 and any("G and D from the starting model" in m for m in lines)
    assert json.loads((tmp_path / "run" / "init.json").read_text())["init_from"] == str(gen)


def test_the_builtin_base_model_is_a_starting_model_and_a_colorizer(source, tmp_path, monkeypatch):
    """builtin:base names the fp16 generator file that ships in colorray/weights/: the init stage
    and colorize both read it (fp16 tensors into the fp32 generator); without the file, the
    error says what is missing and what to pass instead."""
    import colorray.model_uri as model_uri
    from colorray.colorize import load_model
    from colorray.models.files import read_model_file

    src, gen, _ = source
    shipped = tmp_path / "weights" / "base.pt"
    shipped.parent.mkdir()
    model = read_model_file(gen)
    save_generator(src.G.half(), model.params, 7, shipped, kind="base")
    src.G.float()
    monkeypatch.setattr(model_uri, "BASE_WEIGHTS", shipped)
    run, record, _, _ = _start("builtin:base", tmp_path)
    assert record["init_from"] == "builtin:base" and record["uri"] == "builtin:base"
    assert all(torch.allclose(v, src.G.state_dict()[k].half().float()) for k, v in run.G.state_dict().items()
               if v.is_floating_point())
    G, size = load_model("builtin:base")
    assert size == 32 and next(G.parameters()).dtype == torch.float32
    monkeypatch.setattr(model_uri, "BASE_WEIGHTS", tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="has no .*absent.pt.*reinstall colorray, or pass another model"):
        load_model("builtin:base")
    with pytest.raises(ValueError, match="unknown built-in model"):
        load_model("builtin:other")


def test_a_fine_tuning_keeps_its_starting_model_s_chroma_gain_unless_it_sets_one(source, tmp_path, skimage_shards):
    """A starting model calibrated to paler colours (the shipped base: model.chroma_gain 0.65)
    starts the fine-tuning from exactly its colours, and the fine-tuned generator file records
    the gain; a run that sets model.chroma_gain keeps its own."""
    from colorray.baseline import train_baseline
    from colorray.models.files import load_generator, read_model_file
    from colorray.train.loop import train_local

    src, gen, _ = source
    pale = tmp_path / "pale.pt"
    raw = read_model_file(gen).params.model_dump(mode="json")
    raw["model"]["chroma_gain"] = 0.65
    save_generator(src.G, parse_params(raw), 7, pale)

    def fine_tune(out, **model):
        params = parse_params({"data": {"image_size": 32}, "model": {**TINY, **model}, "loader": {"num_workers": 0},
                               "train": {"amp": "none", "channels_last": False, "batch_size": 4, "iters": 1,
                                         "init_from": str(pale)}})
        assert params.model.chroma_gain == model.get("chroma_gain")  # null unless set: 1, or the source's
        trainer = train_local(params, skimage_shards, out, log=lambda m: None)
        save_generator(trainer.G, trainer.params, trainer.iter, out / "generator.pt")
        return trainer, load_generator(out / "generator.pt")

    trainer, (G, saved, _) = fine_tune(tmp_path / "inherits")
    assert trainer.G.chroma_gain == 0.65 and G.chroma_gain == 0.65 and saved.model.chroma_gain == 0.65
    trainer, (G, saved, _) = fine_tune(tmp_path / "own", chroma_gain=1.0)
    assert trainer.G.chroma_gain == 1.0 and G.chroma_gain == 1.0
    # The baseline stage's reconstruction-only model (from the same start) records it too, and
    # a run continued from its checkpoint keeps it.
    params = parse_params({"data": {"image_size": 32}, "model": TINY, "loader": {"num_workers": 0},
                           "train": {"amp": "none", "channels_last": False, "batch_size": 4, "iters": 1,
                                     "init_from": str(pale)}})
    train_baseline(params, skimage_shards, tmp_path / "baseline.pt", log=lambda m: None, work=tmp_path / "b")
    assert load_generator(tmp_path / "baseline.pt")[0].chroma_gain == 0.65
    longer = parse_params({**params.model_dump(mode="json"), "train": {**params.train.model_dump(mode="json"),
                                                                        "iters": 2}})
    train_baseline(longer, skimage_shards, tmp_path / "baseline.pt", log=lambda m: None, work=tmp_path / "b")
    G, saved, _ = load_generator(tmp_path / "baseline.pt")
    assert G.chroma_gain == 0.65 and saved.train.iters == 2
    # From random weights, null means 1.
    assert init_from.inherit(parse_params({}), None).generator_gain() == 1.0

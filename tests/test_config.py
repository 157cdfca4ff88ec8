from typing import get_args

import pytest
import yaml

from colorray.config import DEFAULTS, SOURCE_NAMES, ConfigError, GanParams, Params, load_params, parse_params
from colorray.data.sources import SOURCES

from conftest import ROOT


def test_project_params_file_is_valid_and_matches_the_defaults():
    params = load_params(ROOT / "params.yaml")
    # params.yaml documents exactly the defaults, with the embedded demo preset selected
    # (the pix2pix nets at half width, so `make run` fits on small CPUs), which fine-tunes the
    # base model that ships with colorray (of the demo preset's shape)
    assert params.preset == "demo" and params.train.init_from == "builtin:base"
    assert params == parse_params({"preset": "demo", "train": {"init_from": "builtin:base"}})


def test_every_source_name_in_the_config_has_a_registry_entry():
    assert set(SOURCE_NAMES) == set(SOURCES)


@pytest.mark.parametrize(
    "raw, needles",
    [
        ({"data": {"image_sise": 64}}, ["data.image_sise", "unknown key", "image_size"]),
        ({"dta": {}}, ["dta", "unknown key", "data"]),
        ({"data": {"image_size": 100}}, ["data.image_size", "32, 64, 128, 256", "100"]),
        ({"data": {"image_size": "big"}}, ["data.image_size", "integer", "big"]),
        ({"data": {"source": "imagenet"}}, ["data.source", "'skimage'", "'tiny-imagenet'", "imagenet"]),
        ({"data": {"val_fraction": 0.9}}, ["data.val_fraction", "0.5"]),
        ({"data": {"sha256": "abc"}}, ["data.sha256", "64 hexadecimal"]),
        ({"data": {"source": "folder"}}, ["data", "data.path"]),
        ({"loader": {"num_workers": -1}}, ["loader.num_workers", "greater than or equal to 0"]),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(raw, needles):
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    for needle in needles:
        assert needle in str(e.value)


def test_params_are_frozen():
    params = Params()
    with pytest.raises(Exception):
        params.data.image_size = 128


def test_load_params_reports_bad_yaml_with_the_file_name(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(p)
    p.write_text(yaml.safe_dump({"data": {"image_size": 128}}))
    assert load_params(p).data.image_size == 128
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_defaults_yaml_gives_every_key_a_default_and_every_objective_its_defaults():
    """colorray/defaults.yaml is where the defaults live: one value for every key of every
    section (no more, no fewer), and the optimizer/critic/penalty defaults of every objective."""
    for name, field in Params.model_fields.items():
        if name == "preset":
            continue
        section = field.annotation
        assert section.section == name
        assert set(DEFAULTS[name]) == set(section.model_fields), name
    objectives = get_args(GanParams.model_fields["objective"].annotation)
    assert set(DEFAULTS["objectives"]) == set(objectives)
    wgan = parse_params({"gan": {"objective": "wgan"}})
    assert (wgan.train.optimizer, wgan.train.lr_g, wgan.gan.n_critic) == ("rmsprop", 5e-5, 5)
    gp = parse_params({"gan": {"objective": "wgan-gp"}})
    assert (gp.gan.gp_weight, gp.model.d_norm, gp.train.betas_d) == (10.0, "instance", (0.0, 0.9))


def test_a_section_given_in_part_takes_the_rest_from_defaults_yaml():
    params = parse_params({"train": {"iters": 7}, "classifier": {"epochs": 5}})
    assert params.train.iters == 7 and params.train.batch_size == DEFAULTS["train"]["batch_size"]
    assert params.classifier.epochs == 5 and params.classifier.lr == DEFAULTS["classifier"]["lr"]
    assert Params().tune.space == DEFAULTS["tune"]["space"]

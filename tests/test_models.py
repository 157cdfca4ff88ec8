"""Shapes, receptive fields and the architecture variants."""
import pytest
import torch

from colorray.config import ConfigError, parse_params
from colorray.models import build_discriminator, build_generator
from colorray.models.discriminators import PatchDiscriminator, receptive_field
from colorray.models.generators import PixelTCL, UNetGenerator
from colorray.presets import PIX2PIX_LAYERS, STUDY000_LAYERS


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_unet_depth_follows_the_image_size(size):
    p = parse_params({"data": {"image_size": size}, "model": {"g_channels": 8}})
    G = build_generator(p)
    L = torch.rand(2, 1, size, size) * 2 - 1
    ab = G(L)
    assert ab.shape == (2, 2, size, size) and ab.abs().max() <= 1
    assert len(G.enc) == {32: 5, 64: 6, 128: 7, 256: 8}[size]  # down to 1x1


@pytest.mark.parametrize("variant", [
    {"g_up": "bilinear", "g_down": "maxpool", "g_norm": "instance", "g_skip_norm": True},
    {"g_up": "pixeltcl"}, {"g_in_channels": 3}, {"g_norm": "none", "g_depth": 3},
    {"generator": "zhang"},
])
def test_generator_variants_keep_the_shape(variant):
    p = parse_params({"model": {"g_channels": 8, **variant}})
    G = build_generator(p)
    assert G(torch.zeros(2, 1, 64, 64)).shape == (2, 2, 64, 64)


def test_skip_norm_adds_learned_affine_instance_norms():
    G = UNetGenerator(4, ngf=8, skip_norm=True)
    norms = [m for m in G.skip_norms if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3 and all(m.affine for m in norms)


def test_pixeltcl_doubles_and_fills_all_four_phases():
    up = PixelTCL(4, 5)
    y = up(torch.randn(1, 4, 6, 6))
    assert y.shape == (1, 5, 12, 12)
    for dy in (0, 1):
        for dx in (0, 1):
            assert y[:, :, dy::2, dx::2].abs().sum() > 0


def test_study000_patchgan_is_46x46_with_a_9x9_output_at_64px():
    D = PatchDiscriminator(3, STUDY000_LAYERS)
    assert D.receptive_field == 46 and "receptive_field=46x46" in repr(D)
    assert D(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 9, 9)


def test_pix2pix_patchgan_is_70x70_with_a_30x30_output_at_256px():
    assert receptive_field(PIX2PIX_LAYERS) == 70
    D = build_discriminator(parse_params({"data": {"image_size": 256}}))
    assert D.receptive_field == 70 and D(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("kind, shape", [("dcgan", (2, 1)), ("resnet18", (2, 1)), ("autoencoder", (2,))])
def test_other_discriminators_score_each_image(kind, shape):
    gan = {"objective": "ebgan"} if kind == "autoencoder" else {}
    D = build_discriminator(parse_params({"model": {"discriminator": kind, "d_channels": 8}, "gan": gan}))
    assert D(torch.randn(2, 3, 64, 64)).shape == shape


def test_batchnorm_is_refused_with_a_gradient_penalty():
    with pytest.raises(ConfigError, match="model.d_norm=batch cannot be used with a gradient penalty"):
        parse_params({"gan": {"objective": "wgan-gp"}, "model": {"d_norm": "batch"}})
    assert parse_params({"gan": {"objective": "wgan-gp"}}).model.d_norm == "instance"  # its default
    with pytest.raises(ConfigError, match="d_norm=batch"):
        parse_params({"gan": {"objective": "softplus", "gp_weight": 1.0}})
    parse_params({"gan": {"objective": "wgan-gp"}, "model": {"d_norm": "instance"}})


def test_too_deep_a_unet_for_the_image_is_refused():
    with pytest.raises(ConfigError, match="model.g_depth=7 halves 64-px images"):
        parse_params({"model": {"g_depth": 7}})


@pytest.mark.parametrize("generator", ["unet", "zhang"])
def test_chroma_gain_scales_the_colors_without_a_weight_of_its_own(generator):
    raw = {"data": {"image_size": 32}, "model": {"generator": generator, "g_channels": 4, "g_channels_max": 8}}
    torch.manual_seed(0)
    G = build_generator(parse_params(raw)).eval()
    pale = build_generator(parse_params({**raw, "model": {**raw["model"], "chroma_gain": 0.6}})).eval()
    pale.load_state_dict(G.state_dict())  # the same weights: the gain is no tensor of the file
    L = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(pale(L), 0.6 * G(L))
    assert pale.state_dict().keys() == G.state_dict().keys()

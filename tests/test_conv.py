"""The ``conv`` network: DCGAN-style encoder and decoder sized from the image, with particles' leading dimensions,
a label condition entering after the trunk, grey and RGB images; shapes it cannot reach are one line."""

import pytest
import torch
from helpers import tiny_config

from pyro_lvm.data.tensors import from_tensors
from pyro_lvm.errors import PyroLVMError
from pyro_lvm.infer.elbos import loss_and_backward
from pyro_lvm.nn.conv import conv_network
from pyro_lvm.training.experiment import Experiment

CONV = {"net": "conv", "conv_channels": [8, 16], "hidden": [32]}


def _step(exp):
    batch = exp.data.train.x[:16]
    target, c = exp.condition(batch, exp.data.train.y[:16])
    idx = torch.arange(16)
    exp.optim.zero_grad()
    loss = loss_and_backward(exp.elbo, exp.model, exp.guide, target, c, idx=idx, num_data=len(exp.data.train))
    exp.optim.step()
    assert torch.isfinite(torch.as_tensor(float(loss)))


def test_encoder_and_decoder_shapes_keep_leading_dimensions():
    enc = conv_network(3 * 8 * 8 + 10, 6, [16], image_shape=(3, 8, 8), role="encoder", conv_channels=[4, 8])
    dec = conv_network(5 + 10, 3 * 8 * 8, [16], image_shape=(3, 8, 8), role="decoder", conv_channels=[4, 8])
    assert enc(torch.rand(7, 2, 3 * 8 * 8 + 10)).shape == (7, 2, 6)
    assert dec(torch.rand(7, 2, 15)).shape == (7, 2, 192)
    assert any(isinstance(m, torch.nn.Conv2d) for m in enc.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules())


@pytest.mark.parametrize("elbo", ["trace", "renyi"])
@pytest.mark.parametrize("model", [{}, {"name": "cvae", "condition": "label"}])
def test_conv_vae_and_label_cvae_train(elbo, model):
    prior = {"name": "conditional"} if model else {}
    cfg = tiny_config(model={**CONV, **model}, guide={"name": "amortized", **CONV}, prior=prior,
                      elbo={"name": elbo, "num_particles": 2})  # fmt: skip
    _step(Experiment.from_config(cfg))


def test_quadrant_cvae_encodes_the_whole_image_and_decodes_the_hidden_pixels():
    """The encoder sees [hidden, observed] put back in place: permuting the inputs the way the mask does gives the
    same output as the image itself; the decoder returns exactly the hidden pixels."""
    cfg = tiny_config(model={**CONV, "name": "cvae", "condition": "quadrants"}, guide={"name": "amortized", **CONV},
                      prior={"name": "conditional"}, data={"binarize": "static"})  # fmt: skip
    exp = Experiment.from_config(cfg)
    _step(exp)
    x = exp.data.train.x[:4]
    target, c = exp.condition(x, exp.data.train.y[:4])
    enc = exp.guide.encoder.net
    assert torch.equal(enc.mask, exp.condition.mask)
    image = enc.trunk(x.reshape(-1, 1, 8, 8))  # the full image through the trunk, by hand
    expected = enc.head(image)
    assert torch.allclose(enc(torch.cat([target, c], -1)), expected, atol=1e-6)
    z = torch.randn(3, 4, exp.model.latent_dim)
    out = exp.model.decoder(torch.cat([z, c.expand(3, 4, -1)], -1))
    assert out.shape == (3, 4, target.shape[-1])


def test_rgb_images_and_the_flow_guide():
    x = torch.rand(60, 3, 8, 8)
    data = from_tensors(x.reshape(60, -1), torch.randint(0, 2, (60,)), image_shape=(3, 8, 8))
    cfg = tiny_config(model=CONV, guide={"name": "amortized_flow", **CONV}, likelihood={"name": "continuous_bernoulli"},
                      data={"binarize": "none"})  # fmt: skip
    _step(Experiment.from_config(cfg, data))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": {**CONV, "conv_channels": [4, 8, 16, 32]}}, "divisible by 16; the images are 8x8"),
        ({"prior": {"name": "conditional", "net": "conv"}, "model": {"name": "cvae", "condition": "label"}},
         "a prior's network does not take one"),
    ],
)  # fmt: skip
def test_shapes_a_conv_cannot_reach_are_one_line(overrides, message):
    with pytest.raises(PyroLVMError, match=message) as err:
        Experiment.from_config(tiny_config(**overrides))
    assert "\n" not in str(err.value)

"""Networks by name: shapes for 8x8 / 28x28 / 32x32, conditioning that matters, null labels, bad shapes."""
import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.networks import build_network

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", SHAPES)
def test_unet_keeps_image_shape_and_uses_time_and_labels(shape):
    torch.manual_seed(0)
    mult = (1, 2) if shape[1] == 8 else (1, 2, 2)
    net = build_network({"name": "unet", "channels": 8, "mult": mult}, in_shape=shape, num_classes=10).eval()
    x = torch.randn(3, *shape, generator=gen())
    t = torch.tensor([0.1, 1.0, 10.0])
    out = net(x, t, torch.tensor([0, 1, 2]))
    assert out.shape == (3, *shape)
    assert not torch.allclose(out, net(x, t * 2, torch.tensor([0, 1, 2])))
    assert not torch.allclose(out, net(x, t, torch.tensor([3, 4, 5])))
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 10)))  # y=None is the null label
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    net = build_network({"name": "unet", "channels": 8, "mult": (1, 2), "dropout": 0.5}, in_shape=(1, 8, 8))
    x, t = torch.randn(2, 1, 8, 8, generator=gen()), torch.ones(2)
    assert not torch.equal(net.train()(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


def test_unet_rejects_shapes_it_cannot_halve():
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_network({"name": "unet", "mult": (1, 2, 2)}, in_shape=(1, 6, 6))
    with pytest.raises(ConfigError, match="in_shape"):
        build_network("unet", in_shape=(64,))


@pytest.mark.parametrize("shape", SHAPES)
def test_dcgan_generator_maps_latent_to_image_in_range(shape):
    torch.manual_seed(0)
    net = build_network({"name": "dcgan-generator", "width": 8}, in_shape=(16,), out_shape=shape,
                        time_conditioned=False)
    out = net(torch.randn(4, 16, generator=gen()))
    assert out.shape == (4, *shape)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("shape", SHAPES)
def test_dcgan_discriminator_gives_one_logit_and_uses_time(shape):
    torch.manual_seed(0)
    net = build_network({"name": "dcgan-discriminator", "width": 8}, in_shape=shape, out_shape=(),
                        time_conditioned=True, num_classes=10)
    x = torch.randn(5, *shape, generator=gen())
    logits = net(x, torch.rand(5, generator=gen()))
    assert logits.shape == (5,)
    assert not torch.allclose(logits, net(x, torch.rand(5, generator=gen(1))))
    assert net(x, 0.5, torch.arange(5)).shape == (5,)


def test_discriminator_refuses_an_image_shaped_output():
    with pytest.raises(ConfigError, match="logits"):
        build_network("dcgan-discriminator", in_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="out_shape"):
        build_network("dcgan-generator", in_shape=(16,), out_shape=(1, 6, 5))

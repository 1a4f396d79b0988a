"""Networks for 32x32 and 64x64 images: the DDPM++ U-Net (``songunet``) at EDM's size, DCGAN bodies at GPM's
sizes, and ``diffflow list networks`` with parameter counts and forward FLOPs."""
import json
from functools import partial

import pytest
import torch

from diffflow_core.cli import main
from diffflow_core.errors import ConfigError
from diffflow_core.networks import build_network, profile
from diffflow_core.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from diffflow_core.networks.embeddings import make_embedding
from diffflow_core.networks.songunet import SelfAttention, SongUNet

#: EDM's ``SongUNet`` for CIFAR-10 with ``--arch=ddpmpp`` (model_channels 128, channel_mult [2, 2, 2], 4 blocks,
#: attention at 16, positional embedding, unconditional, no augmentation input), counted from NVlabs/edm's
#: ``training/networks.py``: the same layout, so the same count to the parameter.
EDM_DDPMPP_CIFAR10 = 55_732_739

SMALL = {"name": "songunet", "channels": 16, "mult": (1, 2), "blocks": 1, "dropout": 0.0}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def scrambled(net):
    """The network with weights of order 0.1 everywhere: at EDM's initialisation every residual branch starts
    near zero, which would hide what the inputs change."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen(7)))
    return net.eval()


@pytest.mark.parametrize("shape, attention", [((1, 28, 28), (14,)), ((3, 32, 32), (16,)), ((3, 64, 64), (32,))])
def test_songunet_keeps_the_shape_and_uses_time_and_labels(shape, attention):
    net = scrambled(build_network({**SMALL, "attention": attention}, in_shape=shape, num_classes=10))
    x, t = torch.randn(2, *shape, generator=gen()), torch.tensor([-1.0, 0.5])
    out = net(x, t, torch.tensor([0, 1]))
    assert out.shape == (2, *shape)
    assert not torch.allclose(out, net(x, t, torch.tensor([2, 3])), atol=1e-4)
    assert not torch.allclose(out, net(x, t + 1, torch.tensor([0, 1])), atol=1e-4)
    assert torch.equal(net(x, t), net(x, t, torch.full((2,), 10)))  # y=None is the null label
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_songunet_starts_near_the_identity_of_each_block_and_drops_out_in_training_only():
    net = build_network({**SMALL, "dropout": 0.5}, in_shape=(1, 32, 32))
    x, t = torch.randn(2, 1, 32, 32, generator=gen()), torch.zeros(2)
    assert net.eval()(x, t).abs().max() < 1e-3  # EDM's initialisation: the output layer starts at 1e-5 scale
    scrambled(net)
    assert torch.equal(net(x, t), net(x, t)) and not torch.equal(net.train()(x, t), net.eval()(x, t))


def test_songunet_attention_and_levels_are_checked_with_the_field_named():
    with pytest.raises(ConfigError, match=r"^attention: 12 is not a resolution of this U-Net; its levels are 32, 16"
                                          r" \(32x32 images") as error:
        SongUNet(in_shape=(3, 32, 32), channels=16, mult=(1, 2), attention=(12,))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="^attention: 16 is not a resolution.* levels are 28, 14, 7"):
        SongUNet(in_shape=(1, 28, 28), channels=16)  # the default attention at 16 has no 28x28 level: say so
    with pytest.raises(ConfigError, match="^heads: 3 heads do not divide the attending width 32"):
        SongUNet(channels=16, mult=(1, 2), heads=3)
    with pytest.raises(ConfigError, match="^mult: 3 levels need H and W divisible by 4"):
        SongUNet(in_shape=(1, 30, 30), channels=16)
    with pytest.raises(ConfigError, match="^dropout: "):
        SongUNet(channels=16, dropout=1.0)


def test_songunet_at_edm_defaults_has_the_ddpmpp_cifar10_parameter_count():
    with torch.device("meta"):  # layout only: no weights allocated
        net = SongUNet(in_shape=(3, 32, 32))
    assert sum(p.numel() for p in net.parameters()) == EDM_DDPMPP_CIFAR10
    # attention: the bottleneck, the 4 encoder blocks at 16x16 and the last decoder block there (as EDM)
    assert sum(1 for m in net.modules() if isinstance(m, SelfAttention)) == 1 + 4 + 1


def test_positional_embedding_spans_edm_frequencies():
    emb = make_embedding("positional", 8, 0.0)
    torch.testing.assert_close(emb.freqs, torch.tensor([1.0, 10_000 ** (-1 / 3), 10_000 ** (-2 / 3), 1e-4]))
    torch.testing.assert_close(emb(torch.tensor([0.5])), torch.cat([(0.5 * emb.freqs).cos(),
                                                                    (0.5 * emb.freqs).sin()])[None])


@pytest.mark.parametrize("size", [28, 32, 64])
def test_dcgan_bodies_map_shapes_at_28_32_and_64(size):
    g = build_network({"name": "dcgan-generator", "width": 8}, in_shape=(16,), out_shape=(3, size, size),
                      time_conditioned=False)
    d = build_network({"name": "dcgan-discriminator", "width": 8}, in_shape=(3, size, size), out_shape=(),
                      time_conditioned=True, num_classes=10)
    images = g(torch.randn(4, 16, generator=gen()))
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1
    assert d(images, torch.rand(4, generator=gen()), torch.arange(4)).shape == (4,)


def test_dcgan_widths_are_gpm_at_32_and_64():
    """GPM's DCGAN (``gpm/networks/conv/dcgan.py``, width 64): the generator goes 512 channels at 4x4 -> 256 ->
    128 -> 64 -> image; the discriminator 64 (first layer) -> 128 -> 256 -> 512 at 4x4 -> logit, at 32x32 and
    64x64 alike (at 64 the outermost layers resample)."""
    for size in (32, 64):
        with torch.device("meta"):
            g, d = DCGANGenerator(out_shape=(1, size, size)), DCGANDiscriminator(in_shape=(1, size, size))
        widths = [m.out_channels for m in g.body if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))]
        assert g.start == (512, 4) and widths == [256, 128, 64, 1]
        assert [c.out_channels for c in d.convs] == [64, 128, 256, 512] and d.readout.in_features == 512 * 16
    with torch.device("meta"):
        g = DCGANGenerator(out_shape=(1, 32, 32))
    # GPM's MNIST generator has 3,803,584 parameters; this one adds the biases that its batch norms make
    # redundant: 8,192 on the latent projection, 64 + 128 + 256 on the transposed convolutions, 1 on the output
    assert sum(p.numel() for p in g.parameters()) == 3_803_584 + 8_192 + 448 + 1


def test_list_networks_json_reports_parameters_and_forward_flops(capsys):
    assert main(["list", "networks", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {"mlp", "unet", "songunet", "dcgan-generator", "dcgan-discriminator", "conv-critic"} <= set(rows)
    assert rows["songunet"]["input"] == [3, 32, 32] and rows["songunet"]["parameters"] == EDM_DDPMPP_CIFAR10
    assert rows["unet"]["input"] == [1, 32, 32]
    assert all(row["parameters"] > 0 and row["forward_flops"] > 0 for row in rows.values())
    # 2 FLOPs per multiply-add: the DCGAN discriminator at 1x32x32 is four convolutions and a read-out
    convs = [(1, 64, 3, 32), (64, 128, 4, 16), (128, 256, 4, 8), (256, 512, 4, 4)]  # cin, cout, kernel, output size
    expected = sum(2 * cin * cout * k * k * size * size for cin, cout, k, size in convs) + 2 * 512 * 16
    assert rows["dcgan-discriminator"]["forward_flops"] == expected


def needs_a_shape(in_shape, width=4):
    """A network whose constructor has no usable default input: listed with its error."""
    return torch.nn.Linear(in_shape[0], width)


def test_list_networks_table_and_a_network_that_cannot_be_measured(fresh_plugins, capsys):
    fresh_plugins.register("networks", "needs-a-shape", needs_a_shape, "test network")
    assert main(["list", "networks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "plugin", "input", "params", "GFLOPs", "summary"]
    assert next(line for line in lines if line.startswith("songunet")).split()[2:5] == ["3x32x32", "55,732,739",
                                                                                      "42.4"]
    assert "ConfigError: in_shape: no example input" in next(line for line in lines if line.startswith("needs-a-shape"))


def test_forward_flops_count_attention():
    """Two more attending blocks (16x16, 32 channels: 256 pixels) add their 1x1 convolutions (q, k, v and the
    projection) and the two attention products ``q k^T`` and ``softmax(.) v``."""
    def flops(attention):
        return profile(partial(SongUNet, channels=16, mult=(1, 2), blocks=1, attention=attention))["forward_flops"]

    pixels, width = 256, 32
    per_layer = 2 * pixels * width * 4 * width + 2 * 2 * pixels * pixels * width
    assert flops((16,)) - flops(()) == 2 * per_layer


@pytest.mark.parametrize("name, shapes", [("dcgan-generator", {"in_shape": (128,), "out_shape": (1, 32, 32)}),
                                          ("dcgan-discriminator", {"in_shape": (1, 32, 32), "out_shape": ()})])
def test_dcgan_init_std_is_gpm_s_normal_initialisation(name, shapes):
    net = build_network({"name": name, "width": 8, "init_std": 0.02}, **shapes)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    weights = torch.cat([m.weight.flatten() for m in layers])
    assert abs(float(weights.std()) - 0.02) < 0.002 and abs(float(weights.mean())) < 0.002
    assert all(m.bias is None or not m.bias.any() for m in layers)
    with pytest.raises(ConfigError, match="init_std"):
        build_network({"name": name, "width": 8, "init_std": -1.0}, **shapes)

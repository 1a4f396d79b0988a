"""The `conv-critic` network: one logit per image, conditioning that matters, per-sample independence (needed by
the gradient penalty), exact input gradients (float64 gradcheck), learning a pixel-noise test, clear errors."""
import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.networks import build_network


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def critic(shape=(1, 8, 8), out_shape=(), **params):
    torch.manual_seed(0)
    return build_network({"name": "conv-critic", "channels": 4, **params}, in_shape=shape, out_shape=out_shape)


@pytest.mark.parametrize("shape, mult", [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2)), ((3, 32, 32), (1, 2, 2, 2))])
@pytest.mark.parametrize("out_shape", [(), (1,)])
def test_one_logit_per_image_and_time_changes_it(shape, mult, out_shape):
    net = critic(shape, out_shape, mult=mult)
    x = torch.randn(3, *shape, generator=gen())
    t = torch.tensor([0.1, 0.5, 0.9])
    out = net(x, t)
    assert out.shape == (3, *out_shape)
    assert (out - net(x, t + 0.05)).abs().min() > 1e-6  # every sample sees its own time


def test_labels_change_the_logit_and_none_is_the_null_label():
    torch.manual_seed(0)
    net = build_network({"name": "conv-critic", "channels": 4}, in_shape=(1, 8, 8), out_shape=(), num_classes=10)
    x, t = torch.randn(3, 1, 8, 8, generator=gen()), torch.full((3,), 0.3)
    out = net(x, t, torch.tensor([0, 1, 2]))
    assert (out - net(x, t, torch.tensor([3, 4, 5]))).abs().min() > 1e-6
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 10)))


def test_samples_do_not_interact_and_every_parameter_learns():
    """d f(x_0) / d x_j = 0 for j != 0 (no batch coupling: the per-sample gradient penalty stays per sample),
    a non-zero input gradient for sample 0, and a gradient on every weight."""
    net = critic(blocks=2)
    x = torch.randn(4, 1, 8, 8, generator=gen(), requires_grad=True)
    out = net(x, torch.rand(4, generator=gen(1)))
    (grad,) = torch.autograd.grad(out[0], x, retain_graph=True)
    assert grad[0].abs().sum() > 0 and torch.equal(grad[1:], torch.zeros_like(grad[1:]))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_input_gradient_and_its_weight_gradient_are_exact_in_float64():
    """gradcheck of f and of grad_x f (the particles' drift, eq 16, and the double backward of the penalty)."""
    net = critic((1, 4, 4), channels=2).double()
    x = torch.randn(2, 1, 4, 4, generator=gen(), dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: net(z, t), (x,))
    assert torch.autograd.gradgradcheck(lambda z: net(z, t), (x,))


def test_learns_to_tell_clean_images_from_pixel_noise():
    """Logistic training for 100 steps separates smooth blobs from the same blobs plus N(0, 0.3^2) pixel noise on
    held-out images (the background noise a Discriminator Flow's particles must lose); an untrained critic is at
    chance."""
    grid = torch.linspace(-1, 1, 8)

    def batch(seed, n=32):
        g = gen(seed)
        centres = 0.4 * torch.randn(n, 2, 1, 1, generator=g)
        clean = torch.exp(-((grid[None, :, None] - centres[:, :1]) ** 2 + (grid[None, None, :] - centres[:, 1:]) ** 2)
                          / 0.3) * 2 - 1
        noisy = clean + 0.3 * torch.randn(clean.shape, generator=g)
        return torch.cat([clean, noisy]), torch.cat([torch.ones(n), torch.zeros(n)])

    net = critic(time_conditioned=False)
    x_test, y_test = batch(1000)

    def accuracy():
        with torch.no_grad():
            return float(((net(x_test) > 0).float() == y_test).float().mean())

    before = accuracy()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(100):
        x, y = batch(step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.75 and accuracy() > 0.95


@pytest.mark.parametrize("params, field", [
    ({"out_shape": (1, 8, 8)}, "out_shape"),
    ({"mult": (1, 2, 2, 2, 2)}, "mult"),
    ({"mult": (1, 0)}, "mult"),
    ({"channels": 0}, "channels"),
    ({"blocks": 1.5}, "blocks"),
    ({"slope": 1.5}, "slope"),
    ({"in_shape": (64,)}, "in_shape"),
])
def test_bad_settings_name_the_field_and_value(params, field):
    spec = {"name": "conv-critic", **{k: v for k, v in params.items() if k not in ("in_shape", "out_shape")}}
    with pytest.raises(ConfigError, match=field) as err:
        build_network(spec, in_shape=params.get("in_shape", (1, 8, 8)), out_shape=params.get("out_shape", ()))
    value = next(iter(v for k, v in params.items()))
    assert str(value) in str(err.value) or repr(value) in str(err.value)

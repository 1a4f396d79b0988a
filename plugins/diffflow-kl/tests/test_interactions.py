"""The fused pair reductions against naive dense sums over explicit differences (float64), their blocks (memory
bounded by the chunk), autograd through them, and queries far from every centre."""
import math

import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_kl import interactions
from diffflow_kl.interactions import chunk_size, kernel_sums, pair_blocks, softmax_pull
from diffflow_kl.kde import kde_log_density, kde_score
from diffflow_kl.kernels import make_kernel

F64 = torch.float64


def naive_kappa_psi(name, params, d2):
    """``kappa`` and ``psi = 2 kappa'`` written out, independently of the kernels' term expansions."""
    d = d2.sqrt()
    if name == "gaussian":
        hs = params["bandwidth"] if isinstance(params["bandwidth"], list) else [params["bandwidth"]]
        return (sum(torch.exp(-d2 / (2 * h * h)) for h in hs),
                sum(-torch.exp(-d2 / (2 * h * h)) / (h * h) for h in hs))
    safe = torch.where(d > 0, d, torch.ones_like(d))
    if name == "imq":
        c2 = params["scale"] ** 2
        return (c2 + d2) ** -0.5, -(c2 + d2) ** -1.5
    if name == "laplace":
        h = params["bandwidth"]
        return torch.exp(-d / h), torch.where(d > 0, -torch.exp(-d / h) / (h * safe), 0.0)
    return -d, torch.where(d > 0, -1.0 / safe, 0.0)  # energy


KERNELS = [("gaussian", {"bandwidth": 0.3}), ("gaussian", {"bandwidth": 2.5}),
           ("gaussian", {"bandwidth": [0.25, 0.5, 1.0, 2.0, 4.0]}), ("gaussian", {"bandwidth": [0.07, 3.0]}),
           ("imq", {"scale": 0.7}), ("laplace", {"bandwidth": 0.4}), ("laplace", {"bandwidth": 1.3}),
           ("energy", {})]


@pytest.fixture
def cloud():
    """Queries ``[37, 3]`` offset from the origin; centres ``[29, 3]`` including five of the queries (coincident
    pairs, where the cone kernels' gradient is 0) and one far point (kernels far below float64's range)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, generator=g, dtype=F64) + 4.0
    y = torch.cat([torch.randn(23, 3, generator=g, dtype=F64) * 1.5 + 4.0, x[:5], torch.full((1, 3), 90.0, dtype=F64)])
    return x, y


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("chunk", [None, 5, 36])
def test_kernel_sums_equal_the_naive_dense_sums(cloud, name, params, chunk):
    x, y = cloud
    values = torch.randn(y.shape[0], 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    weights = torch.randn(y.shape[0], generator=torch.Generator().manual_seed(2), dtype=F64)
    diff = x[:, None, :] - y[None, :, :]
    kappa, psi = naive_kappa_psi(name, params, (diff * diff).sum(-1))
    smooth = torch.einsum("ij,jab->iab", kappa, values)
    grad = ((psi * weights)[..., None] * diff).sum(1)
    kernel = make_kernel(name, **params)
    got_smooth, got_grad = kernel_sums(kernel, x, y, values, weights, chunk=chunk)
    torch.testing.assert_close(got_smooth, smooth, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_grad, grad, rtol=0, atol=1e-10)
    assert kernel_sums(kernel, x, y, values=values, chunk=chunk)[1] is None
    assert kernel_sums(kernel, x, y, weights=weights, chunk=chunk)[0] is None
    torch.testing.assert_close(kernel_sums(kernel, x, y, weights=0.5, chunk=chunk)[1],
                               0.5 * (psi[..., None] * diff).sum(1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("h", [0.05, 0.4, 3.0])
@pytest.mark.parametrize("chunk", [None, 4])
def test_kde_equals_the_naive_softmax(cloud, h, chunk):
    x, y = cloud
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    logits = -d2 / (2 * h * h)
    log_density = torch.logsumexp(logits, 1) - math.log(y.shape[0]) - 1.5 * math.log(2 * math.pi * h * h)
    score = (torch.softmax(logits, 1) @ y - x) / (h * h)
    torch.testing.assert_close(kde_log_density(x, y, h, chunk), log_density, rtol=0, atol=1e-10)
    torch.testing.assert_close(kde_score(x, y, h, chunk), score, rtol=0, atol=1e-10)


def test_a_query_far_from_every_centre_is_pulled_to_the_nearest():
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64)
    far = torch.tensor([[60.0, 0.0]], dtype=F64)  # every kernel value underflows at h = 0.1
    log_sum, pull = softmax_pull(far, centres, 50.0)
    torch.testing.assert_close(pull, torch.tensor([[-59.0, 0.0]], dtype=F64))
    assert float(log_sum) == pytest.approx(-50.0 * 59.0 ** 2)
    # float32, far enough that scaling before the shift would lose the nearest centre's exact 0 exponent
    score = kde_score(torch.tensor([[2e5, 0.0]]), centres.float(), 0.37)
    torch.testing.assert_close(score, torch.tensor([[(1.0 - 2e5) / 0.37 ** 2, 0.0]]), rtol=1e-4, atol=0.0)
    _, grad = kernel_sums(make_kernel("gaussian", bandwidth=0.1), far, centres, weights=1.0)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().max()) < 1e-300  # the floor, not NaN


@pytest.mark.parametrize("chunk", [1, 7, 40, 41, None])
def test_blocks_respect_the_chunk_and_reuse_one_buffer(chunk, monkeypatch):
    """Memory is bounded by the block: at most ``chunk`` rows (or the pair budget) per block, every block a view
    of one ``[rows, M]`` buffer, and the blocks cover the query rows once, in order."""
    monkeypatch.setattr(interactions, "PAIR_BUDGET", 64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g, dtype=F64), torch.randn(11, 2, generator=g, dtype=F64)
    rows = min(chunk if chunk is not None else 64 // 11, 40)
    dense = ((x[:, None] - y[None]) ** 2).sum(-1)
    for scale, expected in ((None, dense), (-0.3, -0.3 * dense)):
        blocks = [(s, b.shape, b.data_ptr(), b.clone()) for s, b in pair_blocks(x, y, chunk, scale)]
        assert [s.start for s, *_ in blocks] == list(range(0, 40, rows)) and blocks[-1][0].stop == 40
        assert all(shape == (s.stop - s.start, 11) and s.stop - s.start <= rows for s, shape, *_ in blocks)
        assert len({ptr for _, _, ptr, _ in blocks}) == 1
        torch.testing.assert_close(torch.cat([b for *_, b in blocks]), expected, rtol=0, atol=1e-12)


def test_the_reductions_run_on_blocks_of_the_chunk(cloud, monkeypatch):
    seen = []

    def spy(*args, **kwargs):
        for rows, block in pair_blocks(*args, **kwargs):
            seen.append((rows.stop - rows.start, block.data_ptr()))
            yield rows, block

    monkeypatch.setattr(interactions, "pair_blocks", spy)
    x, y = cloud
    for reduce in (lambda: kernel_sums(make_kernel("gaussian", bandwidth=[0.5, 1.0]), x, y, y, 1.0, chunk=6),
                   lambda: softmax_pull(x, y, 0.5, chunk=6)):
        seen.clear()
        reduce()
        assert len(seen) == math.ceil(37 / 6) and max(rows for rows, _ in seen) == 6
        assert len({ptr for _, ptr in seen}) == 1  # one buffer for the whole call


def test_the_sums_stay_differentiable_while_autograd_records(cloud):
    x, y = cloud
    x = x[:6].clone().requires_grad_(True)
    h = 0.8
    assert torch.autograd.gradcheck(lambda q: kde_score(q, y, h, chunk=4), (x,))
    assert torch.autograd.gradcheck(lambda q: kde_log_density(q, q, h, chunk=4), (x,))
    kernel = make_kernel("gaussian", bandwidth=[0.5, 2.0])
    values = torch.randn(y.shape[0], 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda q: kernel_sums(kernel, q, y, values, 1.0, chunk=4), (x,))


def test_default_blocks_follow_the_device_budget():
    assert chunk_size(1000) == interactions.PAIR_BUDGET // 1000
    assert chunk_size(1000, device="cuda") == interactions.ACCELERATOR_PAIR_BUDGET // 1000
    assert chunk_size(10 ** 9) == 1 and chunk_size(1000, chunk=3) == 3


def test_bad_arguments_are_rejected(cloud):
    x, y = cloud
    kernel = make_kernel("energy")
    with pytest.raises(ConfigError, match="chunk"):
        kernel_sums(kernel, x, y, weights=1.0, chunk=0)
    with pytest.raises(ConfigError, match="values, weights or both"):
        kernel_sums(kernel, x, y)

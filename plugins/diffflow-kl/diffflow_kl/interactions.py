"""Fused pair reductions: the particle interactions of MMD (SPEC §2.1), SVGD (eqs 17-18) and KDE scores.

Every kernel sum of the particle flows has the form

``out_i = sum_k sum_j phi_k(d2_ij) R^k_j``,  ``d2_ij = ||x_i - y_j||^2``,

a few elementwise functions ``phi_k`` of the squared distances (a kernel's terms, :class:`Term`: one per
bandwidth of a Gaussian sum) weighting the rows of small right-hand matrices ``R^k``. A gradient is one of
them: ``sum_j psi_ij (x_i - y_j) = x_i sum_j psi_ij - sum_j psi_ij y_j`` takes the columns ``[y, 1]``. The sums
run ``rows`` query rows at a time (:func:`pair_blocks`), and per block:

* ``d2`` is one matrix product of augmented rows, ``[x, |x|^2, 1] . [-2y, 1, |y|^2]``, after centring both
  point sets on the centres' mean (``d2`` is translation invariant; centring keeps the expansion's
  cancellation small). Values within the expansion's round-off of zero are set to exactly zero: those pairs
  are coincident points, where the cone kernels' gradient is 0;
* each ``phi_k`` is written into a reused scratch block (the last one over ``d2`` itself) and reduced at once,
  ``out += phi_k @ R^k``, so all the bandwidths of a kernel, its value and its gradient share one ``d2`` block;
* exponentials are ``exp2`` of base-2 exponents clamped at ``log2(tiny)`` (:func:`exp2_floor`): torch's
  ``exp2`` is several times faster than its ``exp``, and both take a far slower path for results below the
  smallest normal number, where the kernel is negligible anyway (docs/benchmarks/interactions.md).

Memory is O((N + M) * D + rows * M): one ``[rows, M]`` block (two for a kernel of several terms), reused by every
block of the call, with ``rows`` from a pair budget that keeps the blocks in a core's cache. While autograd
records (an input requires grad) each block gets fresh tensors instead of the shared buffers, so the sums stay
differentiable, e.g. a KDE target score inside a likelihood's divergence.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, NamedTuple, Protocol, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError

__all__ = ["PAIR_BUDGET", "ACCELERATOR_PAIR_BUDGET", "LOG2E", "Term", "exp2_floor", "chunk_size", "pair_blocks",
           "kernel_sums", "softmax_pull"]

#: Pairs per block by default on the CPU: a ``[rows, M]`` float32 block of 1 MiB, which stays in a core's L2
#: cache through the few passes a block takes.
PAIR_BUDGET = 2 ** 18
#: Pairs per block by default on an accelerator (256 MiB in float32): large blocks amortise kernel launches.
ACCELERATOR_PAIR_BUDGET = 2 ** 26


class Term(NamedTuple):
    """One function ``phi(d2)`` of a radial kernel's expansion ``kappa = sum value * phi``, ``psi = sum grad * phi``.

    ``phi(d2, out)`` writes ``phi(d2)`` into ``out`` and returns it, or returns a new tensor when ``out`` is None.
    ``out`` is a block shaped like ``d2`` or ``d2`` itself (for the last term evaluated on a block): ``phi``
    changes nothing but ``out``, and reads each element of ``d2`` before writing it.
    """

    phi: Callable[[Tensor, Tensor | None], Tensor]
    value: float
    grad: float


class Expansion(Protocol):
    """A radial kernel as its terms (:class:`~diffflow_kl.kernels.RadialKernel` is one)."""

    def terms(self) -> Sequence[Term]: ...


#: ``log2(e)``: exponentials are taken as ``exp2(x log2(e))``, the faster of torch's two vectorised kernels
LOG2E = 1.0 / math.log(2.0)


def exp2_floor(dtype: torch.dtype) -> float:
    """``log2`` of the smallest normal number of ``dtype`` (-126 in float32): the clamp applied to base-2
    exponents, below which ``exp2`` would return a subnormal (or 0) by a slower path."""
    return math.log2(torch.finfo(dtype).tiny)


def chunk_size(num_centres: int, chunk: int | None = None, device: torch.device | str = "cpu") -> int:
    """Query rows per block: ``chunk`` if given, else as many as keep ``rows * num_centres`` within the pair
    budget of ``device``'s type."""
    if chunk is not None:
        return check.positive_int("chunk", chunk)
    budget = PAIR_BUDGET if torch.device(device).type == "cpu" else ACCELERATOR_PAIR_BUDGET
    return max(1, budget // max(1, num_centres))


def _recording(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def pair_blocks(x: Tensor, y: Tensor, chunk: int | None = None, scale: float | None = None,
                reuse: bool = True) -> Iterator[tuple[slice, Tensor]]:
    """``(rows, block)`` for successive blocks of query rows: ``block = d2[rows]`` ``[len, M]``, or
    ``scale * d2[rows]`` when ``scale`` is given (folded into the product, which saves a pass over the block).

    ``x`` ``[N, D]`` and ``y`` ``[M, D]`` are flat and centred (``_flat``). In ``d2`` the pairs within the
    expansion's round-off of zero are exactly 0 (coincident points); a scaled block is left as computed. With
    ``reuse`` every block is a view of one ``[rows, M]`` buffer, so a caller reads a block before the next.
    """
    n, m = x.shape[0], y.shape[0]
    rows = max(1, min(chunk_size(m, chunk, x.device), n))
    x_sq, y_sq = (x * x).sum(1, keepdim=True), (y * y).sum(1, keepdim=True)
    xa = torch.cat([x, x_sq, torch.ones_like(x_sq)], 1)
    ya_t = torch.cat([-2.0 * y, torch.ones_like(y_sq), y_sq], 1).T.contiguous()
    tol = 0.0
    if scale is not None:
        ya_t = ya_t * scale
    elif n and m:
        # the expansion's round-off bound: a dot product of D + 2 terms, each at most max|x|^2 + max|y|^2
        tol = 2.0 * (x.shape[1] + 2) * torch.finfo(x.dtype).eps * float(x_sq.detach().max() + y_sq.detach().max())
    buffer = x.new_empty(rows, m) if reuse else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        block = torch.mm(xa[start:stop], ya_t, out=None if buffer is None else buffer[:stop - start])
        if scale is None:
            F.threshold_(block, tol, 0.0)
        yield slice(start, stop), block


def _flat(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Both point sets flattened and centred on the mean of ``y``."""
    flat_x, flat_y = x.flatten(1), y.flatten(1)
    centre = flat_y.mean(0) if flat_y.shape[0] else flat_y.new_zeros(flat_y.shape[1])
    return flat_x - centre, flat_y - centre


def kernel_sums(kernel: Expansion, x: Tensor, y: Tensor, values: Tensor | None = None,
                weights: Tensor | float | None = None, chunk: int | None = None) -> tuple[Tensor | None, Tensor | None]:
    """``(S, G)``: the kernel smoothing ``S_i = sum_j k(x_i, y_j) values_j`` and the gradient sum
    ``G_i = sum_j w_j grad_1 k(x_i, y_j) = sum_j w_j psi(d2_ij) (x_i - y_j)``, in one pass over the pairs.

    ``kernel`` offers ``terms()`` (a :class:`~diffflow_kl.kernels.RadialKernel`); ``x`` ``[N, *shape]`` are the
    queries, ``y`` ``[M, *shape]`` the centres, ``values`` ``[M, ...]`` (None: no ``S``) and ``weights`` ``[M]``
    or one number (None: no ``G``). ``S`` is ``[N, *values.shape[1:]]``, ``G`` ``[N, *shape]``. Only the terms
    with a nonzero coefficient in a requested sum are evaluated.
    """
    if values is None and weights is None:
        raise ConfigError("kernel_sums: expected values, weights or both, got neither")
    flat_x, flat_y = _flat(x, y)
    m, d = flat_y.shape
    p = values[0].numel() if values is not None else 0
    # the right-hand columns: [values | w y | w], each term scaling the value part and the gradient part
    parts = []
    if values is not None:
        parts.append(values.reshape(m, p).to(flat_y))
    if weights is not None:
        w = torch.as_tensor(weights, dtype=flat_y.dtype, device=flat_y.device).expand(m)[:, None]
        parts += [w * flat_y, w]
    rhs = torch.cat(parts, 1)
    plans = []
    for term in kernel.terms():
        a, b = (term.value if values is not None else 0.0), (term.grad if weights is not None else 0.0)
        if a == 0.0 and b == 0.0:
            continue
        cols = slice(0 if a else p, p if not b else rhs.shape[1])
        scaled = torch.cat([rhs[:, :p] * a, rhs[:, p:] * b], 1)[:, cols]
        # column-major right-hand side: the layout BLAS reduces a [rows, M] block against fastest
        plans.append((term.phi, cols, scaled.T.contiguous().T))
    record = _recording(x, y, values, weights if isinstance(weights, Tensor) else None)
    out = flat_x.new_zeros(flat_x.shape[0], rhs.shape[1])
    last, scratch = len(plans) - 1, None
    for rows, d2 in pair_blocks(flat_x, flat_y, chunk, reuse=not record):
        if scratch is None and last and not record:
            scratch = torch.empty_like(d2)  # the first block is the largest
        for k, (phi, cols, r) in enumerate(plans):
            # the last term overwrites d2, read for the last time; the others write into the scratch block
            into = None if record else d2 if k == last else scratch[:d2.shape[0]]
            out[rows, cols].addmm_(phi(d2, into), r)
    smooth = out[:, :p].reshape(flat_x.shape[0], *values.shape[1:]) if values is not None else None
    grad = None
    if weights is not None:
        grad = (out[:, p + d:] * flat_x - out[:, p:p + d]).reshape(x.shape)
    return smooth, grad


def softmax_pull(x: Tensor, y: Tensor, scale: float, chunk: int | None = None,
                 pull: bool = True) -> tuple[Tensor, Tensor | None]:
    """``(L, P)``: ``L_i = log sum_j exp(-scale d2_ij)`` ``[N]`` and the softmax-weighted pull
    ``P_i = sum_j w_ij (y_j - x_i)`` ``[N, *shape]`` with ``w_i = softmax_j(-scale d2_ij)`` (None unless ``pull``).

    Each row is shifted by its largest exponent before ``exp`` (log-sum-exp), so a query far from every
    centre stays finite: its nearest centre weighs 1.
    """
    flat_x, flat_y = _flat(x, y)
    floor = exp2_floor(flat_x.dtype)
    ones = torch.ones_like(flat_y[:, :1])
    rhs = (torch.cat([ones, flat_y], 1) if pull else ones).T.contiguous().T
    sums = flat_x.new_zeros(flat_x.shape[0], rhs.shape[1])
    shift = flat_x.new_empty(flat_x.shape[0])
    # base-2 exponents straight from the product; subtracting each row's largest leaves the nearest centre's
    # exponent exactly 0 however far the query is
    for rows, e in pair_blocks(flat_x, flat_y, chunk, scale=-scale * LOG2E, reuse=not _recording(x, y)):
        top = e.detach().amax(1, keepdim=True)  # a constant shift: the log-sum-exp's gradient is the softmax
        sums[rows].addmm_(e.sub_(top).clamp_min_(floor).exp2_(), rhs)
        shift[rows] = top[:, 0] / LOG2E
    log_sum = torch.log(sums[:, 0]) + shift
    if not pull:
        return log_sum, None
    return log_sum, (sums[:, 1:] / sums[:, :1] - flat_x).reshape(x.shape)

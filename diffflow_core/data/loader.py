"""A batch stream fed by a ``torch.utils.data.DataLoader``: image batches assembled in worker processes.

:class:`LoaderStream` has the trainer's batch-stream interface (``next(stream) -> Batch``, ``state_dict``,
``load_state_dict``, as ``diffflow_core.training.trainer.BatchStream``) and draws the same kind of stream:
shuffled epochs of whole batches (the last partial batch of an epoch is dropped). What differs is where rows are
read and converted: in ``workers`` DataLoader processes (kept alive across epochs, batches pinned for a CUDA
copy), so that decoding and conversion overlap training.

Reproducible whatever the worker count: the stream is a function of ``(seed, epoch, index)`` alone. Epoch ``e``
visits the rows in a permutation drawn from a generator seeded with ``key(seed, e)``; a random horizontal flip
of row ``r`` in epoch ``e`` is the top bit of ``key(seed, e, r)``, where ``key`` is a stateless hash (SplitMix64's
finaliser folded over the words). No worker keeps random state, so which worker reads a batch never matters,
and the position after the last delivered batch, ``(epoch, index)``, with the seed, is the stream's whole state:
a resumed stream continues with the very batches an uninterrupted one would have drawn.

Sources: rows indexable like :attr:`Dataset.train_rows <diffflow_core.data.base.Dataset.train_rows>` (a float
tensor, or :class:`~diffflow_core.data.images.PixelRows`, whose indexing is the one uint8 -> model-space
conversion) with optional labels, or any map-style ``torch.utils.data.Dataset`` of images or (image, label)
pairs, read item by item in the workers (uint8, or floats in [0, 1], as
:func:`~diffflow_core.data.images.from_torch_dataset` accepts) and converted as ``PixelRows`` converts.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data.image_files import as_nchw, split_item
from diffflow_core.data.images import PixelRows
from diffflow_core.errors import CheckpointError, ConfigError
from diffflow_core.interfaces import Batch

__all__ = ["LoaderStream", "key"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _finalise(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function: a bijection of uint64 whose output bits look independent of its input's."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def key(*words: int | np.ndarray) -> np.ndarray:
    """64 random-looking bits per combination of non-negative integer ``words`` (the last may be an array of
    them): a pure function, so any process computes the same bits for the same ``(seed, epoch, row)``."""
    h = np.zeros(1, dtype=np.uint64)
    for word in words:
        h = _finalise(h ^ (np.asarray(word, dtype=np.uint64) + _GOLDEN))
    return h


def _epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The row order of ``epoch``: a permutation of ``n`` rows from a generator seeded with ``key(seed, epoch)``."""
    generator = torch.Generator().manual_seed(int(key(seed, epoch)[0] >> np.uint64(1)))
    return torch.randperm(n, generator=generator)


class _Batches(torch.utils.data.Dataset):
    """What a worker does with a key ``(seed, epoch, rows)``: read and convert those rows, flip them (keyed), and
    return ``(x, y)`` (``y`` None without labels). The seed travels in the key: persistent workers hold copies of
    this object made when they started, which a resumed stream's seed must not depend on.

    ``y`` is a NumPy array, which a worker sends by value: every tensor a worker returns travels as shared memory
    whose file descriptor the training process fetches from the worker, one round trip per tensor (its cost is
    in docs/benchmarks/images.md), which labels are too small to need."""

    def __init__(self, source: Any, labels: Tensor | None, flip: bool) -> None:
        self.source, self.labels, self.flip = source, labels, flip

    def __getitem__(self, item: tuple[int, int, Tensor]) -> tuple[Tensor, np.ndarray | None]:
        seed, epoch, rows = item
        if isinstance(self.source, torch.utils.data.Dataset):
            x, y = self._read_items(rows)
        else:
            x, y = self.source[rows], None if self.labels is None else self.labels[rows].numpy()
        if self.flip:
            mirrored = torch.from_numpy((key(seed, epoch, rows.numpy()) >> np.uint64(63)).astype(bool))
            x = torch.where(mirrored[:, None, None, None], x.flip(-1), x)
        return x, y

    def _read_items(self, rows: Tensor) -> tuple[Tensor, np.ndarray | None]:
        """Items of a torch Dataset: images (or pairs) -> uint8 ``[B, C, H, W]`` -> model space."""
        where = f"data: {type(self.source).__name__}"
        images, labels = [], []
        for row in rows.tolist():
            image, label = split_item(self.source[row], f"{where}[{row}]")
            images.append(image)
            labels.append(label)
        pixels = torch.from_numpy(as_nchw(np.stack(images), where))
        x = PixelRows(pixels, 255.0)[...]  # the conversion train_rows use
        return x, None if labels[0] is None else np.array([int(y) for y in labels], dtype=np.int64)


def _as_is(batch: Any) -> Any:
    """The DataLoader's ``collate_fn``: a worker's ``(x, y)`` as it is (no conversion of the labels to a tensor)."""
    return batch


class _Keys(torch.utils.data.Sampler):
    """The keys ``(seed, epoch, rows)`` of the batches after the stream's current position, epoch after epoch."""

    def __init__(self, stream: "LoaderStream") -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[int, int, Tensor]]:
        stream = self.stream
        epoch, index = stream.epoch, stream.index
        order = None
        while True:
            epoch, start = stream.next_start(epoch, index)
            if order is None or start == 0:
                order = _epoch_order(stream.seed, epoch, stream.rows)
            index = start + stream.batch_size
            yield stream.seed, epoch, order[start:index]


class LoaderStream:
    """Shuffled epochs of whole batches read by a ``DataLoader`` with ``workers`` processes (module docstring).

    ``source`` is rows indexable like ``train_rows`` (with ``labels`` or None) or a map-style torch Dataset of
    images or (image, label) pairs (``labels`` must then be None). ``flip`` mirrors rows left-right with
    probability 1/2 (keyed by seed, epoch and row); a :class:`PixelRows` source with ``flip`` set flips this way
    instead of through torch's global generator. ``seed`` fixes the stream; without it one is drawn from
    ``generator``, whose state :meth:`state_dict` also carries, as ``BatchStream``'s does (the trainer shares
    that generator with its losses). ``pin_memory`` (default: when CUDA is available) pins batches for an
    asynchronous copy to the GPU.
    """

    def __init__(self, source: Any, labels: Tensor | None, batch_size: int, generator: torch.Generator | None = None,
                 *, workers: int = 0, seed: int | None = None, flip: bool = False, pin_memory: bool | None = None,
                 prefetch: int = 2) -> None:
        workers = check.non_negative_int("train.workers", workers, expected="a non-negative number of loader "
                                         "processes (0: read batches in the training process)")
        batch_size = check.positive_int("train.batch_size", batch_size)
        prefetch = check.positive_int("prefetch", prefetch, expected="a positive number of batches per worker")
        if isinstance(source, torch.utils.data.IterableDataset) or not (hasattr(source, "__getitem__") and
                                                                         hasattr(source, "__len__")):
            raise ConfigError(f"data: {type(source).__name__} cannot be indexed; expected rows [N, C, H, W] or a "
                              "map-style Dataset (with __len__ and __getitem__)")
        if isinstance(source, torch.utils.data.Dataset) and labels is not None:
            raise ConfigError("labels: a torch Dataset source brings its own labels as (image, label) items")
        if isinstance(source, PixelRows) and source.flip:
            flip, source = True, PixelRows(source.pixels, source.pixel_max)
        self.rows = len(source)
        if self.rows < 1:
            raise ConfigError(f"data: {type(source).__name__} is empty; expected at least one image")
        self.batch_size = min(batch_size, self.rows)
        self.generator = generator if generator is not None else torch.Generator()
        self.seed = int(seed) if seed is not None else \
            int(torch.randint(0, 2**62, (), generator=self.generator))
        self.epoch, self.index = 0, 0
        self.loader = torch.utils.data.DataLoader(
            _Batches(source, labels, flip), batch_size=None, sampler=_Keys(self), collate_fn=_as_is,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=workers > 0, prefetch_factor=prefetch if workers else None,
            generator=torch.Generator())  # its own seed draws leave torch's global generator alone
        self._iterator: Iterator | None = None

    def next_start(self, epoch: int, index: int) -> tuple[int, int]:
        """Where the batch after position ``(epoch, index)`` starts: there, or at the next epoch's first row
        when fewer than a batch of rows remain."""
        return (epoch + 1, 0) if index + self.batch_size > self.rows else (epoch, index)

    def __next__(self) -> Batch:
        if self._iterator is None:  # (re)started lazily: after load_state_dict the keys start at the new position
            self._iterator = iter(self.loader)
        x, y = next(self._iterator)
        self.epoch, start = self.next_start(self.epoch, self.index)
        self.index = start + self.batch_size
        return Batch(x, None if y is None else torch.from_numpy(y))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "epoch" not in state:
            raise CheckpointError("resume: the checkpoint's data position was written by the in-process batch "
                                  "stream (train.workers = 0); resume with train.workers = 0")
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
        self.generator.set_state(state["generator"])
        self._iterator = None

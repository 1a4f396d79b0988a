"""LoaderStream: DataLoader-fed batches that do not depend on the worker count, resume exactly, keep labels
with their images, flip by key, read torch Datasets as the uint8 rows convert, and refuse a foreign state."""
import pytest
import torch

from diffflow_core.data.images import ImageDataset, PixelRows
from diffflow_core.data.loader import LoaderStream
from diffflow_core.errors import CheckpointError, ConfigError

N, BATCH = 70, 16  # 4 whole batches per epoch, 6 rows dropped at each epoch's end


def images(n=N):
    """uint8 images whose first pixel is the row's label (so a batch shows which row each image came from)."""
    pixels = torch.randint(0, 256, (n, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    pixels[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    pixels[:, 0, 0, -1] = 255  # asymmetric: a flipped image differs from the original
    return pixels, torch.arange(n)


def take(stream, n):
    return [next(stream) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(a, b))


@pytest.mark.parametrize("flip", [False, True])
def test_the_stream_does_not_depend_on_the_worker_count(flip):
    pixels, labels = images()
    rows = PixelRows(pixels, 255.0, flip=flip)
    batches = [take(LoaderStream(rows, labels, BATCH, seed=5, workers=w, pin_memory=False), 11) for w in (0, 2)]
    assert same(*batches)  # 11 batches: nearly three epochs


def test_resume_mid_epoch_continues_the_identical_sequence():
    pixels, labels = images()
    rows = PixelRows(pixels, 255.0, flip=True)
    whole = take(LoaderStream(rows, labels, BATCH, torch.Generator().manual_seed(1), workers=2), 12)
    first = LoaderStream(rows, labels, BATCH, torch.Generator().manual_seed(1), workers=2)
    take(first, 6)  # epoch 1, batch 2
    state = first.state_dict()
    take(first, 2)  # prefetched and delivered batches after the state must not leak into the resumed stream
    resumed = LoaderStream(rows, labels, BATCH, torch.Generator().manual_seed(99), workers=2)
    take(resumed, 1)  # its workers already hold another stream's batches
    resumed.load_state_dict(state)
    assert same(take(resumed, 6), whole[6:])
    assert torch.equal(resumed.generator.get_state(), state["generator"])  # the trainer's losses resume too


def test_labels_follow_images_and_epochs_visit_each_row_once():
    pixels, labels = images()
    stream = LoaderStream(PixelRows(pixels, 255.0), labels, BATCH, seed=0)
    epochs = [take(stream, 4) for _ in range(2)]
    for epoch in epochs:
        rows = torch.cat([b.y for b in epoch])
        assert len(set(rows.tolist())) == 4 * BATCH  # no repeats within an epoch
        first_pixel = torch.cat([b.x[:, 0, 0, 0] for b in epoch])
        assert torch.equal(first_pixel, rows.float() / 127.5 - 1)  # each image is its label's row
    assert not torch.equal(epochs[0][0].y, epochs[1][0].y)  # a new permutation per epoch


def test_flips_mirror_half_the_rows_and_change_between_epochs():
    pixels, labels = images()
    stream = LoaderStream(PixelRows(pixels, 255.0, flip=True), labels, N, seed=3)
    plain = PixelRows(pixels, 255.0)[torch.arange(N)]
    flipped = []
    for _ in range(2):
        batch = next(stream)
        original = plain[batch.y]
        mirrored = (batch.x != original).flatten(1).any(1)
        assert torch.equal(batch.x[mirrored], original[mirrored].flip(-1))
        flipped.append(set(batch.y[mirrored].tolist()))
    assert all(20 < len(f) < 50 for f in flipped) and flipped[0] != flipped[1]


class Items(torch.utils.data.Dataset):
    """A torch Dataset of (CHW uint8 tensor, label) pairs or of images alone."""

    def __init__(self, pixels, labels=None):
        self.pixels, self.labels = pixels, labels

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        return self.pixels[i] if self.labels is None else (self.pixels[i], int(self.labels[i]))


def test_a_torch_dataset_streams_as_its_uint8_rows_convert():
    pixels, labels = images()
    from_rows = take(LoaderStream(PixelRows(pixels, 255.0, flip=True), labels, BATCH, seed=2), 6)
    from_items = take(LoaderStream(Items(pixels, labels), None, BATCH, seed=2, flip=True, workers=2), 6)
    assert same(from_rows, from_items)
    unlabelled = next(LoaderStream(Items(pixels), None, BATCH, seed=2))
    rows = next(LoaderStream(PixelRows(pixels, 255.0), None, BATCH, seed=2))
    assert unlabelled.y is None and torch.equal(unlabelled.x, rows.x)


def test_float_rows_and_an_image_dataset_stream_too():
    data = ImageDataset(*images(), name="toy", split="none")
    x = next(LoaderStream(data.train_rows, data.train_labels, BATCH, seed=0)).x
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    floats = torch.randn(N, 3)
    batch = next(LoaderStream(floats, None, BATCH, seed=0))
    assert batch.y is None and batch.x.shape == (BATCH, 3)


def test_bad_sources_and_foreign_states_are_refused():
    pixels, labels = images()
    with pytest.raises(ConfigError, match="^labels: "):
        LoaderStream(Items(pixels, labels), labels, BATCH)
    with pytest.raises(ConfigError, match="^train.workers: "):
        LoaderStream(pixels, None, BATCH, workers=-1)
    stream = LoaderStream(pixels, None, BATCH)
    with pytest.raises(CheckpointError, match="train.workers = 0"):
        stream.load_state_dict({"order": torch.arange(N), "index": 0, "generator": torch.Generator().get_state()})


def test_the_trainer_reads_through_workers_and_resumes_exactly(tmp_path):
    """``train.workers = 1``: the trainer's batches come from a LoaderStream, and a run stopped at step 2 then
    resumed ends with the parameters of an uninterrupted run."""
    from diffflow_core import build
    from diffflow_core.checkpoint import read_checkpoint

    def model(steps):
        return build(preset="edm", data="digits", flow={"network": {"name": "mlp", "hidden": 16, "depth": 2}},
                     train={"steps": steps, "workers": 1, "batch_size": 32, "progress": False})

    from diffflow_core.training import Trainer

    whole = model(4)
    Trainer(whole, out_dir=tmp_path / "a").fit(whole.data)
    part = model(2)
    Trainer(part, out_dir=tmp_path / "b", checkpoint_every=2).fit(part.data)
    state = read_checkpoint(tmp_path / "b" / "checkpoint.pt")["train_state"]["rng"][0]["stream"]
    assert set(state) == {"epoch", "index", "seed", "generator"}  # the DataLoader's position, not BatchStream's
    resumed = model(4)
    Trainer(resumed, out_dir=tmp_path / "b", resume=True).fit(resumed.data)
    for p, q in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)

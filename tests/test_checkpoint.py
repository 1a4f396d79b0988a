"""Checkpoints: round trip, another model's file, corrupt files, pickles that try to run code, CRC checks of
flipped bytes, atomic writes and their temporary files, permissions."""
import os
import pickle
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core import build  # noqa: E402
from diffflow_core.checkpoint import FORMAT, atomic_save, temp_files  # noqa: E402
from diffflow_core.errors import CheckpointError  # noqa: E402
from diffflow_core.model import Model  # noqa: E402


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


def tiny(**flow):
    torch.manual_seed(0)
    cfg = tinymodel.config(5)
    cfg["flow"].update(flow)
    return build(cfg)


def test_round_trip_gives_identical_weights_and_samples(tmp_path):
    model = tiny()
    model.save(tmp_path / "m.pt")
    loaded = Model.load(tmp_path / "m.pt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert torch.equal(model.sample(16, 3, seed=1).x, loaded.sample(16, 3, seed=1).x)


def test_checkpoint_of_another_model_is_rejected_clearly(tmp_path):
    tiny(hidden=16).save(tmp_path / "small.pt")
    payload = torch.load(tmp_path / "small.pt", weights_only=True)
    with pytest.raises(CheckpointError, match="written by another model"):
        from diffflow_core.checkpoint import load_state

        load_state(tiny(), payload["state_dict"], "small.pt")


def test_corrupt_and_foreign_files_are_rejected(tmp_path):
    model = tiny()
    model.save(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a diffflow checkpoint"):
        Model.load(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="corrupt"):
        Model.load(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=f"format '{FORMAT}' expected"):
        Model.load(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        Model.load(tmp_path / "nope.pt")


class Exploit:
    """Unpickling this calls ``Path.touch`` on a marker file: code execution if it ever runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("as_zip", [True, False])
def test_malicious_pickle_is_never_executed(tmp_path, as_zip):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "config": None, "state_dict": {}, "event_shape": [2], "hook": Exploit(marker)}
    if as_zip:
        torch.save(payload, path)  # torch's zip container with the exploit inside data.pkl
        assert zipfile.is_zipfile(path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        Model.load(path)
    assert not marker.exists()
    # the exploit is real: an unrestricted load would have run it
    if as_zip:
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


def _flip_inside_largest_tensor(path: Path, count: int = 16) -> str:
    """Flip ``count`` bytes in the middle of the largest tensor record of a torch zip; returns its name."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = info.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") \
        + int.from_bytes(data[header + 28:header + 30], "little")
    middle = start + info.file_size // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def test_flipped_bytes_in_a_weight_are_detected_and_name_the_file(tmp_path):
    tiny().save(tmp_path / "m.pt")
    record = _flip_inside_largest_tensor(tmp_path / "m.pt")
    # the damage is invisible to torch: the file still loads, with other weights
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == FORMAT
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'm.pt'} is corrupt: record '{record}' does not match"):
        Model.load(tmp_path / "m.pt")


def test_a_corrupt_checkpoint_is_a_one_line_cli_error(tmp_path):
    tiny().save(tmp_path / "m.pt")
    _flip_inside_largest_tensor(tmp_path / "m.pt")
    proc = subprocess.run([sys.executable, "-m", "diffflow_core.cli", "sample", "--checkpoint", str(tmp_path / "m.pt"),
                           "--n", "8", "--out", str(tmp_path / "s.npy")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("diffflow: error: checkpoint: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "corrupt" in proc.stderr and not (tmp_path / "s.npy").exists()


def test_a_checkpoint_saved_without_crcs_still_loads(tmp_path):
    config = pytest.importorskip("torch.utils.serialization").config
    model = tiny()
    with config.patch({"save.compute_crc32": False}):
        model.save(tmp_path / "old.pt")
    with zipfile.ZipFile(tmp_path / "old.pt") as archive:
        assert not any(info.CRC for info in archive.infolist())
    loaded = Model.load(tmp_path / "old.pt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_checkpoint_gets_the_permissions_of_other_files(tmp_path):
    old = os.umask(0o022)
    try:
        tiny().save(tmp_path / "m.pt")
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == stat.S_IMODE((tmp_path / "other.json").stat().st_mode) \
        == 0o644


def test_atomic_save_leaves_no_temp_file_and_keeps_the_old_file_on_failure(tmp_path):
    atomic_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    with pytest.raises(RuntimeError):
        atomic_save({"a": Unsaveable()}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.ones(3))


class Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_temp_files_name_their_writer(tmp_path):
    names = [f"checkpoint.pt.{os.getpid()}.0a1b2c3d.tmp", "checkpoint.ptk2j_4x9q.tmp", "notes.tmp",
             "metrics.jsonl.12.ffffffff.tmp", "checkpoint.pt"]
    for name in names:
        (tmp_path / name).write_text("")
    found = {p.name: pid for p, pid in temp_files(tmp_path)}
    assert found == {names[0]: os.getpid(), names[1]: None, names[3]: 12}

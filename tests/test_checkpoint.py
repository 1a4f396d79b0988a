"""Checkpoints: round trip, another model's file, corrupt files, and pickles that try to run code."""
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core.build import build  # noqa: E402
from diffflow_core.checkpoint import FORMAT  # noqa: E402
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

"""Data-parallel training through DDP under torchrun (2 gloo processes): the presets' players (EDM's one, a GAN's
two) end with identical parameters on both ranks, resume is exact, gradient accumulation uses DDP's no_sync, and
a player's parameter its loss leaves without a gradient is a one-line error unless find_unused_parameters."""
import sys
import textwrap
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    import tinymodel
    from diffflow_core import build
    from diffflow_core.errors import ConfigError
    from diffflow_core.training import Trainer

    tinymodel.ensure_registered()
    dist.init_process_group("gloo")  # one group for every fit below (the trainer uses it, and leaves it open)
    rank, out = dist.get_rank(), {out!r}
    results = {{}}

    def model(seed_offset=0, **kwargs):
        torch.manual_seed(100 + rank + seed_offset)  # different initial weights: the trainer must broadcast rank 0's
        return build(**kwargs)

    def state(m):
        return {{k: v.clone() for k, v in m.state_dict().items()}}

    def edm(**train):
        return model(preset="edm", train={{"steps": 8, "batch_size": 32, "progress": False, "ema": 0.9, **train}})

    full = edm()
    Trainer(full, out_dir=os.path.join(out, "full"), checkpoint_every=4).fit(full.data)
    results["edm"] = state(full)
    cut, calls = edm(), []
    loss = cut.objective.loss

    def crash(*args):  # both ranks stop in step 5's forward, after the checkpoint of step 4
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return loss(*args)
    cut.objective.loss = crash
    try:
        Trainer(cut, out_dir=os.path.join(out, "cut"), checkpoint_every=4).fit(cut.data)
    except KeyboardInterrupt:
        pass
    resumed = edm()
    Trainer(resumed, out_dir=os.path.join(out, "cut"), resume=True, checkpoint_every=4).fit(resumed.data)
    results["edm_resumed"] = state(resumed)

    gan = model(preset="gan", train={{"steps": 6, "batch_size": 32, "progress": False, "accumulate": 2}})
    gan.fit()
    results["gan"] = state(gan)

    def spare(**train):  # a flow parameter the loss never uses
        m = model(1, **tinymodel.config(4, **train))
        m.flow.spare = torch.nn.Linear(2, 2)
        return m
    try:
        spare().fit()
    except ConfigError as exc:
        results["unused_error"] = str(exc)
    found = spare(find_unused_parameters=True)
    before = state(found)
    found.fit()
    results["unused_found"] = state(found)
    results["spare_moved"] = not torch.equal(before["flow.spare.weight"], found.flow.spare.weight)
    torch.save(results, os.path.join(out, f"rank{{rank}}.pt"))
    dist.destroy_process_group()
""")


def test_two_ranks_train_edm_and_gan_to_identical_parameters_and_resume_exactly(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    proc = tinymodel.torchrun(script, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for run in ("edm", "edm_resumed", "gan", "unused_found"):
        assert a[run].keys() == b[run].keys() and all(torch.equal(a[run][k], b[run][k]) for k in a[run]), run
    assert all(torch.equal(a["edm"][k], a["edm_resumed"][k]) for k in a["edm"])
    assert "module." not in "".join(a["edm"]) and "flow.net.body.0.weight" in a["unused_found"]
    assert a["unused_error"] == b["unused_error"] == (
        "train.find_unused_parameters: player 'model' left 2 of its 8 parameters without a gradient at step 0; "
        "under torchrun expected every parameter in its loss, or set find_unused_parameters = true")
    assert a["spare_moved"] is False  # no gradient on any rank: Adam leaves it
    assert "find_unused_parameters=True was specified" not in proc.stderr  # DDP's warning: no needless search

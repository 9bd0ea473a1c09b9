"""Issue 20: 2-process Gloo DDP on the CPU equals one process with the same global batch; `train --nproc 2`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import tiny_train_config
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.config import save_config
from gdfree.models import MultitaskUNet
from gdfree.train.step import LossSpec, train_step

HEADS = ("enhancing", "lesion")
STEPS, BATCH, PATCH = 3, 4, 16


def _batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed global batches; the lesion label is missing in one sample (masked loss)."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(STEPS):
        x = torch.from_numpy(rng.normal(size=(BATCH, 3, PATCH, PATCH, PATCH)).astype(np.float32))
        y = torch.from_numpy((rng.random((BATCH, 2, PATCH, PATCH, PATCH)) > 0.9).astype(np.float32))
        present = torch.ones(BATCH, 2, dtype=torch.bool)
        present[1, 1] = False
        out.append((x, y, present))
    return out


def _net_and_optimiser() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = MultitaskUNet(3, HEADS, channels=(4, 8), strides=(2, 2), num_res_units=1, dropout=0.0, full_res_channels=4)
    # SGD: Adam would turn the float rounding noise of gradients that are zero in theory (a convolution's bias
    # before instance norm) into full-size steps of either sign
    return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def _rank(rank: int, init_file: str, folder: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    net, optimiser = _net_and_optimiser()
    model = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    losses = []
    for x, y, present in _batches():
        part = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
        loss, _, _ = train_step(model, optimiser, (x[part], y[part], present[part]), LossSpec(HEADS, (1.0, 0.3)),
                                distributed=True)  # fmt: skip
        losses.append(float(loss))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, f"{folder}/rank{rank}.safetensors",
              metadata={"losses": json.dumps(losses)})  # fmt: skip
    dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path: Path):
    import torch.multiprocessing as mp
    from safetensors import safe_open

    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    net, optimiser = _net_and_optimiser()
    losses = [float(train_step(net, optimiser, batch, LossSpec(HEADS, (1.0, 0.3)))[0]) for batch in _batches()]
    single = net.state_dict()
    ranks = []
    for r in range(2):
        with safe_open(str(tmp_path / f"rank{r}.safetensors"), "pt") as fh:
            ranks.append(({k: fh.get_tensor(k) for k in fh.keys()}, json.loads(fh.metadata()["losses"])))
    (p0, l0), (p1, l1) = ranks
    assert p0.keys() == p1.keys() == single.keys()
    for key in single:
        assert torch.equal(p0[key], p1[key]), key  # identical across ranks
        torch.testing.assert_close(p0[key], single[key], rtol=1e-4, atol=1e-6, msg=key)  # equal to one process
    assert l0 == l1 and np.allclose(l0, losses, rtol=1e-5)  # every rank saw the loss of the global batch
    assert not torch.equal(p0["head.weight"], _net_and_optimiser()[0].state_dict()["head.weight"])  # it learned


@pytest.mark.slow
def test_train_nproc_2_runs_through_torchrun(tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    cfg = tiny_train_config(tiny_cohort, max_steps=3, val_every=2, batch_size=4)
    config = save_config(cfg, tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--nproc", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo", "parameters_identical_across_ranks": True}
    assert meta["step"] == 3
    state = json.loads((tmp_path / "run" / "last_state.json").read_text())
    assert len(state["numpy_rng_ranks"]) == 2 and state["numpy_rng_ranks"][0] != state["numpy_rng_ranks"][1]
    odd = save_config(tiny_train_config(tiny_cohort, batch_size=3), tmp_path / "odd.yaml")
    refused = CliRunner().invoke(app, ["train", str(odd), "--out", str(tmp_path / "odd"), "--nproc", "2"])
    assert refused.exit_code == 2 and "split evenly" in refused.output

"""train_step's ``cpu_bf16`` (issue 30): on a CPU with bfloat16 units it trains like float32; without them it is
float32 exactly; ``amp`` alone (CUDA) leaves a CPU step in float32; ``channels_last`` trains as the default
layout does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdfree.devices import bf16_supported
from gdfree.models import MultitaskUNet
from gdfree.train.step import LossSpec, train_step

HEADS = ("enhancing", "lesion")


def _setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    net = MultitaskUNet(3, HEADS, channels=(4, 8), strides=(2, 2), num_res_units=1, dropout=0.0, full_res_channels=4)
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(2, 3, 16, 16, 16)).astype(np.float32))
    y = torch.from_numpy((rng.random((2, 2, 16, 16, 16)) > 0.9).astype(np.float32))
    return net, torch.optim.SGD(net.parameters(), lr=0.05), (x, y, torch.ones(2, 2, dtype=torch.bool))


def _losses(bf16: bool, steps: int = 4, channels_last: bool = False) -> list[float]:
    net, optimiser, batch = _setup()
    spec = LossSpec(HEADS, (1.0, 0.3))
    return [float(train_step(net, optimiser, batch, spec, cpu_bf16=bf16, channels_last=channels_last)[0])
            for _ in range(steps)]  # fmt: skip


def test_without_bf16_units_cpu_bf16_is_float32_exactly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("gdfree.train.step.bf16_supported", lambda device: False)
    assert _losses(True) == _losses(False)


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no bfloat16 units")
def test_bf16_trains_like_float32_on_this_cpu():
    fp32, bf16 = _losses(False), _losses(True)
    assert all(np.isfinite(bf16)) and bf16[-1] < bf16[0]  # it learns
    assert np.allclose(bf16, fp32, rtol=0.05), (bf16, fp32)  # the same losses to bfloat16's precision


def test_amp_alone_leaves_a_cpu_step_in_float32():
    net, optimiser, batch = _setup()
    with_amp = [float(train_step(net, optimiser, batch, LossSpec(HEADS, (1.0, 0.3)), amp=True)[0]) for _ in range(2)]
    assert with_amp == _losses(False, 2)



def test_channels_last_float32_trains_like_the_default_layout():
    default, last = _losses(False), _losses(False, channels_last=True)
    assert last[-1] < last[0]
    assert np.allclose(last, default, rtol=1e-4), (last, default)  # float32 both: only the summation order differs

"""The network and its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gdfree.models import MultitaskUNet, build_model, load_model, save_model

KWARGS = {"in_channels": 2, "heads": ["enhancing", "lesion"], "channels": [4, 8], "strides": [2, 2],
          "num_res_units": 1, "dropout": 0.2, "full_res_channels": 4}  # fmt: skip
META = {"architecture": {"class": "MultitaskUNet", "kwargs": KWARGS}, "heads": KWARGS["heads"],
        "modalities": ["T1w", "FLAIR"], "normalisation": "zscore-brain-clip5", "threshold": 0.4}  # fmt: skip


@pytest.mark.parametrize("strides", [[2], [2, 2]])
def test_output_shape_with_and_without_a_strided_stem(strides: list[int]):
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=strides, num_res_units=1)
    assert net.divisor == (2 if len(strides) == 1 else 4)
    assert net(torch.zeros(2, 2, 8, 12, 16)).shape == (2, 2, 8, 12, 16)


def test_bad_architecture_arguments():
    with pytest.raises(ValueError, match="strides"):
        MultitaskUNet(2, channels=(4, 8, 16), strides=(2,))
    with pytest.raises(ValueError, match="heads"):
        MultitaskUNet(2, heads=())
    with pytest.raises(ValueError, match="not known"):
        build_model("ResNet", {})
    with pytest.raises(ValueError, match="bad arguments"):
        build_model("MultitaskUNet", {"in_channels": 2, "colour": "red"})


def test_dropout_is_channelwise_and_only_in_the_decoder():
    net = MultitaskUNet(2, channels=(4, 8, 16), strides=(2, 2, 2), num_res_units=1, dropout=0.3)
    drops = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Dropout3d)]
    assert drops and all(name.startswith(("fuse", "stem_fuse")) for name in drops)
    assert not any(isinstance(m, torch.nn.Dropout) for m in net.modules())


def test_checkpoint_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    net = build_model("MultitaskUNet", KWARGS).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    save_model(tmp_path, net, META)
    loaded, meta = load_model(tmp_path)
    assert torch.equal(net(x), loaded(x))
    assert meta["threshold"] == 0.4 and len(meta["weights_sha256"]) == 64
    assert not loaded.training


def test_checkpoint_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        save_model(tmp_path, build_model("MultitaskUNet", KWARGS), {"heads": []})
    saved = json.loads(save_model(tmp_path, build_model("MultitaskUNet", KWARGS), META).read_text())
    (tmp_path / "model.json").write_text(json.dumps({**saved, "architecture": {"class": "MultitaskUNet",
                                                     "kwargs": {**KWARGS, "channels": [8, 16]}}}))  # fmt: skip
    with pytest.raises(ValueError, match="edited after training"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path)

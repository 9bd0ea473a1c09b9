"""The ONNX Runtime engine: logits equal torch's, whole and tiled; predict --engine onnx writes the same
masks as torch; MC dropout is refused rather than silently deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.config import save_config
from gdfree.infer.onnx import OnnxNetwork
from gdfree.io.images import read_volume
from gdfree.models.forward import predict_volume
from gdfree.models.unet import MultitaskUNet

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("strides", [(2, 2), (2, 2, 2)])
def test_onnx_logits_equal_torch_whole_and_tiled(strides: tuple[int, ...]):
    torch.manual_seed(0)
    net = MultitaskUNet(3, ("enhancing", "lesion"), channels=(4, 8, 16)[: len(strides) + (len(strides) == 2)],
                        strides=strides, full_res_channels=4).eval()  # fmt: skip
    engine = OnnxNetwork(net, 3)
    image = np.random.default_rng(0).normal(size=(3, 30, 26, 21)).astype(np.float32)  # odd shapes: padded
    ref = predict_volume(net, image, logits_only=True)
    out = predict_volume(engine, image, logits_only=True)
    assert out.shape == ref.shape == (2, 30, 26, 21) and np.abs(out - ref).max() < 1e-3
    tiled_ref = predict_volume(net, image, logits_only=True, max_whole_voxels=1000, tile=16)
    tiled = predict_volume(engine, image, logits_only=True, max_whole_voxels=1000, tile=16)
    assert np.abs(tiled - tiled_ref).max() < 1e-3
    assert not net.training  # the module is left as it was
    with pytest.raises(ValueError, match="MC dropout"):
        engine.train()


def test_predict_with_the_onnx_engine_writes_torch_s_masks(tiny_cohort: Path, tmp_path: Path):
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig

    cfg = TrainConfig(datasets=(DatasetSpec(str(tiny_cohort)),), channels=(4, 8), strides=(2, 2), num_res_units=1,
                      full_res_channels=4, patch_size=16, batch_size=2, max_steps=2, val_every=2, warmup_steps=1,
                      split=SplitConfig(val_fraction=0.5, test_fraction=0.34, seed=0))  # fmt: skip
    run = tmp_path / "run"
    trained = CliRunner().invoke(app, ["train", str(save_config(cfg, tmp_path / "t.yaml")), "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    outs = {}
    for engine in ("torch", "onnx"):
        outs[engine] = tmp_path / engine
        args = ["predict", "--model", str(run), "--input", str(tiny_cohort), "--out", str(outs[engine]),
                "--allow-training-cases", "--engine", engine]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    masks = sorted(p.relative_to(outs["torch"]) for p in outs["torch"].rglob("*_mask.nii.gz"))
    assert masks and masks == sorted(p.relative_to(outs["onnx"]) for p in outs["onnx"].rglob("*_mask.nii.gz"))
    for rel in masks:
        assert np.array_equal(read_volume(outs["torch"] / rel).data, read_volume(outs["onnx"] / rel).data), rel
    for prob in outs["torch"].rglob("*_probseg.nii.gz"):
        a, b = read_volume(prob).data, read_volume(outs["onnx"] / prob.relative_to(outs["torch"])).data
        assert np.abs(a - b).max() < 1e-4
    refused = CliRunner().invoke(app, ["predict", "--model", str(run), "--input", str(tiny_cohort), "--out",
                                       str(tmp_path / "mc"), "--allow-training-cases", "--engine", "onnx",
                                       "--mc", "3"])  # fmt: skip
    assert refused.exit_code == 2 and "--engine torch" in refused.output

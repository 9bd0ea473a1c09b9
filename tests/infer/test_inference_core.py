"""Issue 20: the inference core (brain box, field-of-view independence) and `gdfree bench`'s measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gdfree.arrays import bounding_box
from gdfree.models import MultitaskUNet, save_model
from gdfree.models.forward import OUTSIDE_LOGIT, fov_independent, predict_volume

MODALITIES = ["T1w", "T2w", "FLAIR"]


def _net(norm: str = "INSTANCE") -> MultitaskUNet:
    torch.manual_seed(0)
    return MultitaskUNet(3, ("enhancing", "lesion"), channels=(4, 8), strides=(2, 2), num_res_units=1,
                         full_res_channels=4, norm=norm).eval()  # fmt: skip


def test_bounding_box_grows_by_the_margin_and_stays_inside_the_volume():
    brain = np.zeros((20, 30, 40), bool)
    brain[5:10, 0:3, 30:40] = True
    assert bounding_box(brain, margin=2) == (slice(3, 12), slice(0, 5), slice(28, 40))
    assert bounding_box(np.zeros((4, 4, 4), bool)) is None


def test_only_networks_without_input_statistics_are_field_of_view_independent():
    assert not fov_independent(_net("INSTANCE"))
    assert fov_independent(_net("BATCH"))


def test_a_cropped_pass_is_the_pass_of_the_box_with_nothing_outside():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 24, 28, 20)).astype(np.float32)
    box = (slice(3, 19), slice(5, 21), slice(2, 18))
    net = _net("BATCH")
    full = predict_volume(net, image, crop=box, logits_only=True)
    inner = predict_volume(net, np.ascontiguousarray(image[(slice(None), *box)]), logits_only=True)
    np.testing.assert_array_equal(full[(slice(None), *box)], inner)
    outside = np.ones(image.shape[1:], bool)
    outside[box] = False
    assert (full[:, outside] == OUTSIDE_LOGIT).all()
    assert (predict_volume(net, image, crop=box)[:, outside] == 0).all()  # probabilities: 0 outside


def test_a_batch_norm_model_predicts_on_the_brain_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from gdfree.infer.model import TrainedModel

    kwargs = {"in_channels": 3, "heads": ["enhancing", "lesion"], "channels": [4, 8], "strides": [2, 2],
              "num_res_units": 1, "full_res_channels": 4, "norm": "BATCH"}  # fmt: skip
    save_model(tmp_path / "run", _net("BATCH"), {"architecture": {"class": "MultitaskUNet", "kwargs": kwargs},
                                                 "heads": ["enhancing", "lesion"], "modalities": MODALITIES,
                                                 "normalisation": "zscore-brain-clip5", "threshold": 0.5})  # fmt: skip
    model = TrainedModel.load(tmp_path / "run")
    image = np.random.default_rng(1).normal(size=(3, 32, 32, 32)).astype(np.float32)
    brain = np.zeros((32, 32, 32), bool)
    brain[10:20, 12:22, 8:16] = True
    shapes = []
    model.network.register_forward_hook(lambda _m, args, _o: shapes.append(tuple(args[0].shape[2:])))
    prob, _ = model.predict(image, brain=brain)
    # margin 6 (1.5 x the divisor 4): box x 4:26, y 6:28, z 2:22 = (22, 22, 20), padded to (24, 24, 20)
    assert shapes == [(24, 24, 20)]
    assert (prob[:, ~np.pad(np.ones((22, 22, 20), bool), ((4, 6), (6, 4), (2, 10)))] == 0).all()
    stack = model.sample(image, brain=brain, flips=True)
    assert stack.shape == (8, 2, 32, 32, 32) and shapes[-1] == (24, 24, 20)


@pytest.mark.slow
def test_bench_measures_a_path_in_its_own_process(tmp_path: Path):
    from gdfree.bench import _spawn, markdown

    kwargs = {"in_channels": 3, "heads": ["enhancing", "lesion"], "channels": [4, 8], "strides": [2, 2],
              "num_res_units": 1, "full_res_channels": 4}  # fmt: skip
    save_model(tmp_path / "run", _net(), {"architecture": {"class": "MultitaskUNet", "kwargs": kwargs},
                                          "heads": ["enhancing", "lesion"], "modalities": MODALITIES,
                                          "normalisation": "zscore-brain-clip5", "threshold": 0.5})  # fmt: skip
    brain = np.zeros((24, 24, 24), bool)
    brain[4:20, 4:20, 4:20] = True
    image = np.where(brain, np.random.default_rng(2).normal(size=(3, 24, 24, 24)), 0).astype(np.float32)
    np.savez(tmp_path / "exam.npz", image=image, brain=brain, spacing=np.array([4.0, 4.0, 4.0]))
    rows = {}
    for mode in ("monai_window96", "torch", "torch_cl"):
        rows[mode] = _spawn(["--worker", mode, str(tmp_path / "exam.npz"), str(tmp_path / "run"), "2",
                             str(tmp_path / f"{mode}.json")])  # fmt: skip
        assert len(rows[mode]["seconds_all"]) == 2 and rows[mode]["peak_rss_gb"] > 0, rows[mode]
        assert set(np.load(tmp_path / f"{mode}.npz").files) == {"enhancing", "lesion"}
    assert rows["torch"]["network_flops"] > 0 and not rows["torch"]["cropped_to_brain_box"]
    assert 0 <= rows["torch_cl"]["max_probability_difference_vs_torch"] < 1e-3  # float32 both, another layout
    failed = _spawn(["--worker", "nonsense", str(tmp_path / "exam.npz"), str(tmp_path / "run"), "1",
                     str(tmp_path / "bad.json")])  # fmt: skip
    assert "unknown mode" in failed["error"]
    report = {"model": "m", "weights_sha256": "0" * 64, "cpu_count": 2, "repeats": 2, "matmul": {"gflops": 50.0},
              "exams": {"2mm": {"shape": [3, 24, 24, 24], "modes": {**rows, "onnx": failed}}},
              "startup_s": {"gdfree --help": 0.5}}  # fmt: skip
    text = markdown(json.loads(json.dumps(report)))
    assert "| torch |" in text and "failed: " in text and "`gdfree --help` | 0.50" in text

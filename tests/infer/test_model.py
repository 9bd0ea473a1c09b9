"""The TrainedModel: verified on load, one schema, its own temperatures and thresholds per head (issue 16)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gdfree.infer.model import TrainedModel
from gdfree.models import build_model, save_model

KWARGS = {"in_channels": 2, "heads": ["enhancing", "lesion"], "channels": [4, 8], "strides": [2, 2],
          "num_res_units": 1, "dropout": 0.2, "full_res_channels": 4}  # fmt: skip
META = {"architecture": {"class": "MultitaskUNet", "kwargs": KWARGS}, "heads": KWARGS["heads"],
        "modalities": ["T1w", "FLAIR"], "normalisation": "zscore-brain-clip5", "threshold": 0.4,
        "thresholds": {"enhancing": 0.4, "lesion": 0.7}, "temperature": {"enhancing": 2.0, "lesion": 1.0},
        "validation": {"enhancing_threshold": 0.4, "lesion_threshold": 0.7}}  # fmt: skip


def _save(folder: Path, seed: int = 0, **over: object) -> Path:
    torch.manual_seed(seed)
    save_model(folder, build_model("MultitaskUNet", KWARGS), {**META, **over})
    return folder


def _edit(folder: Path, **over: object) -> None:
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, **over}))


def test_each_head_has_its_own_threshold_on_the_calibrated_scale(tmp_path: Path):
    model = TrainedModel.load(_save(tmp_path))
    assert model.thresholds["lesion"] == pytest.approx(0.7)  # not the enhancing head's 0.4 (issue 16)
    assert model.thresholds["enhancing"] == pytest.approx(1 / (1 + math.exp(-math.log(0.4 / 0.6) / 2.0)))
    # an older model that recorded its lesion threshold only in the validation summary
    _edit(tmp_path, thresholds={})
    assert TrainedModel.load(tmp_path).thresholds["lesion"] == pytest.approx(0.7)


def test_flipped_bytes_in_the_weights_are_refused(tmp_path: Path):
    _save(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"SHA-256 .* differs"):
        TrainedModel.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("heads", ["lesion", "enhancing"]), ("modalities", ["FLAIR", "T1w"])],
)
def test_reordered_heads_or_modalities_are_refused(tmp_path: Path, field: str, value: list[str]):
    _save(tmp_path)
    _edit(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=f"{field} .*edited after training"):
        TrainedModel.load(tmp_path)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"threshold": 1.5}, "threshold: expected a number in"),
        ({"thresholds": {"lesion": 0.0}}, r"thresholds\.lesion"),
        ({"temperature": {"enhancing": 0}}, r"temperature\.enhancing: expected a finite number > 0"),
        ({"temperature": {"tumour": 1.0}}, "temperature: expected head"),
        ({"min_lesion_mm3": -1}, "min_lesion_mm3"),
        ({"normalisation": "minmax"}, "normalisation"),
        ({"rule": {"name": "msseg", "connectivity": 5}}, "rule: connectivity"),
        ({"rule": {"nme": "msseg"}}, "rule:"),
        ({"training_fingerprints": "abc"}, "training_fingerprints"),
        ({"oracle": "yes"}, "oracle"),
    ],
)
def test_model_json_fields_out_of_schema_are_named(tmp_path: Path, over: dict, message: str):
    _save(tmp_path)
    _edit(tmp_path, **over)
    with pytest.raises(ValueError, match=message):
        TrainedModel.load(tmp_path)


def test_a_post_contrast_input_needs_the_oracle_flag(tmp_path: Path):
    _save(tmp_path, modalities=["T1w", "T1gd"])
    with pytest.raises(ValueError, match="label source"):
        TrainedModel.load(tmp_path)


def test_each_ensemble_member_uses_its_own_temperature(tmp_path: Path):
    a = TrainedModel.load(_save(tmp_path / "a", seed=0))
    b = TrainedModel.load(_save(tmp_path / "b", seed=1, temperature={"enhancing": 0.25, "lesion": 3.0}))
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    stack = a.sample(image, members=[b])
    assert stack.shape == (2, 2, 8, 8, 8)
    np.testing.assert_allclose(stack[0], a.probabilities(image), atol=1e-6)
    np.testing.assert_allclose(stack[1], b.probabilities(image), atol=1e-6)
    # and not member b's network under model a's temperatures (the old behaviour)
    from gdfree.models.forward import predict_volume

    wrong = predict_volume(b.network, image, temperature=a.temperatures)
    assert not np.allclose(stack[1], wrong, atol=1e-4)


def test_an_ensemble_member_with_other_inputs_is_refused(tmp_path: Path):
    a = TrainedModel.load(_save(tmp_path / "a"))
    b = TrainedModel.load(_save(tmp_path / "b", modalities=["T2w", "FLAIR"]))
    with pytest.raises(ValueError, match=r"ensemble member .*modalities"):
        a.sample(np.zeros((2, 8, 8, 8), np.float32), members=[b])


def test_masks_use_each_heads_threshold_and_the_minimum_volume(tmp_path: Path):
    model = TrainedModel.load(_save(tmp_path, min_lesion_mm3=1.5, temperature={}))
    prob = np.zeros((6, 6, 6), np.float32)
    prob[1, 1, 1] = 0.5  # one voxel of 1 mm3: above 0.4, dropped by the 1.5 mm3 minimum
    prob[3:5, 3:5, 3] = 0.5  # four voxels: kept
    masks = model.masks({"enhancing": prob, "lesion": prob}, (1.0, 1.0, 1.0))
    assert masks["enhancing"].sum() == 4 and not masks["enhancing"][1, 1, 1]
    assert not masks["lesion"].any()  # 0.5 < the lesion head's 0.7


def test_an_ensemble_thresholds_at_its_members_mean_threshold_in_any_order():
    from dataclasses import replace

    from gdfree.demo import PRETRAINED

    shipped = TrainedModel.load(PRETRAINED / "network")
    first = replace(shipped, thresholds={h: 0.9 for h in shipped.heads})
    second = replace(shipped, thresholds={h: 0.3 for h in shipped.heads})
    ab, ba = first.with_members([second]), second.with_members([first])
    assert ab.thresholds == ba.thresholds == {h: pytest.approx(0.6) for h in shipped.heads}
    assert first.with_members([]) is first and first.thresholds["lesion"] == 0.9  # the members stay as they were
    with pytest.raises(ValueError, match="normalisation"):
        first.with_members([replace(second, normalisation="wm-ratio-clip10")])

"""bfloat16 inference on the CPU's matrix units (issue 30): chosen once, falls back to float32, same masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdfree.devices import check_precision

PRETRAINED = Path(__file__).resolve().parents[2] / "src" / "gdfree" / "pretrained" / "network"


def test_auto_falls_back_to_fp32_where_the_cpu_has_no_bf16(monkeypatch: pytest.MonkeyPatch):
    import torch

    from gdfree.devices import bf16_supported

    bf16_supported.cache_clear()  # asked once per run: ask again under the patched answers
    assert check_precision("fp32") == "fp32" and check_precision("BF16") == "bf16"
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert check_precision("auto") == "fp32"
    bf16_supported.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert check_precision("auto") == "bf16"
    bf16_supported.cache_clear()
    with pytest.raises(ValueError, match="--precision: expected one of fp32, bf16, auto, got 'fp16'"):
        check_precision("fp16")


def test_bf16_and_fp32_give_the_same_masks_on_the_tiny_cohort(tiny_cohort: Path):
    from dataclasses import replace

    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover

    fp32 = TrainedModel.load(PRETRAINED)
    bf16 = replace(fp32, precision="bf16")
    for files in discover(tiny_cohort):
        case = load_array_case(files, fp32.modalities, ())
        a = fp32.probabilities(case.image, brain=case.brain, spacing_mm=case.spacing_mm)
        b = bf16.probabilities(case.image, brain=case.brain, spacing_mm=case.spacing_mm)
        assert a.dtype == b.dtype == np.float32
        masks_a, masks_b = fp32.masks(dict(zip(fp32.heads, a, strict=True)), case.spacing_mm), bf16.masks(
            dict(zip(fp32.heads, b, strict=True)), case.spacing_mm)  # fmt: skip
        for head in fp32.heads:
            x, y = masks_a[head], masks_b[head]
            agree = 1.0 if not (x.any() or y.any()) else 2 * (x & y).sum() / (x.sum() + y.sum())
            assert agree >= 0.95, (files.case_id, head, agree)  # measured: 0.989 to 1.0, probabilities within 0.031

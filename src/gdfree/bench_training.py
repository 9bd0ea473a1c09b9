"""``gdfree bench --training``'s measurement: patches per second of gdfree's data pipeline alone and with the
network step, against a plain MONAI loop on the same network and batch (run in its own process by
:mod:`gdfree.bench`)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["timed", "training_worker"]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """(seconds of each of ``repeats`` calls after one warm-up call, the last result)."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return seconds, result


def training_worker(mode: str, exam_dir: Path, steps: int, result: Path) -> None:
    """Patches per second of a training pipeline on the 2 mm exam: ``gdfree_data``, ``gdfree_step``,
    ``gdfree_step_cl`` (``channels_last: true``), ``monai_data``, ``monai_step`` (batches of 4 patches of 48^3, the
    default MultitaskUNet)."""
    import torch

    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover
    from gdfree.models import MultitaskUNet
    from gdfree.train.config import TrainConfig

    cfg = TrainConfig()
    case = load_array_case(discover(exam_dir)[0], cfg.modalities, cfg.heads)
    torch.manual_seed(0)
    net = MultitaskUNet(len(cfg.modalities), cfg.heads, cfg.channels, cfg.strides, cfg.num_res_units, cfg.dropout,
                        cfg.full_res_channels)  # fmt: skip
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    if mode.startswith("gdfree"):
        from gdfree.data.loader import batch_stream
        from gdfree.data.sampling import PatchSampler
        from gdfree.train.step import LossSpec, train_step

        sampler = PatchSampler([case], cfg.heads, cfg.patch_size, cfg.sampling)
        stream = batch_stream(sampler, strength=cfg.augment, batch_size=cfg.batch_size,
                              rng=np.random.default_rng(0), augmentation=cfg.augmentation)  # fmt: skip
        spec = LossSpec(cfg.heads, cfg.head_weights)

        def step() -> None:
            batch = next(stream)
            if mode in ("gdfree_step", "gdfree_step_cl"):
                train_step(net, optimiser, batch, spec, channels_last=mode == "gdfree_step_cl")

    else:
        import monai.transforms as mt
        from monai.losses import DiceCELoss

        labels = np.stack([np.asarray(case.labels[h]) for h in cfg.heads]).astype(np.float32)
        item = {"image": case.image, "label": labels, "fg": np.any(labels > 0, axis=0, keepdims=True)}
        transform = mt.Compose([
            mt.RandCropByPosNegLabeld(("image", "label"), "fg", (cfg.patch_size,) * 3, pos=1, neg=1, num_samples=1),
            mt.RandFlipd(("image", "label"), prob=0.5, spatial_axis=0),
            mt.RandFlipd(("image", "label"), prob=0.5, spatial_axis=1),
            mt.RandFlipd(("image", "label"), prob=0.5, spatial_axis=2),
            mt.RandAffined(("image", "label"), prob=0.5, rotate_range=(0.26,) * 3, scale_range=(0.1,) * 3,
                           mode=("bilinear", "nearest"), padding_mode="zeros"),
            mt.RandGaussianNoised("image", prob=0.3, std=0.1),
            mt.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            mt.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ])  # fmt: skip
        transform.set_random_state(0)
        loss_fn = DiceCELoss(sigmoid=True)

        def step() -> None:
            samples = [transform(item)[0] for _ in range(cfg.batch_size)]
            x = torch.stack([torch.as_tensor(np.asarray(s["image"])) for s in samples]).float()
            y = torch.stack([torch.as_tensor(np.asarray(s["label"])) for s in samples]).float()
            if mode == "monai_step":
                optimiser.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                optimiser.step()

    seconds, _ = timed(step, steps)
    result.write_text(json.dumps({"mode": mode, "patches_per_s": cfg.batch_size / statistics.median(seconds),
                                  "seconds_per_batch": statistics.median(seconds)}))  # fmt: skip

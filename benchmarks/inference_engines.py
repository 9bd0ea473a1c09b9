"""One exam through the shipped (or a given) network: torch vs ONNX Runtime per pass, and MC dropout with and
without the shared encoder pass, side by side in one process (the seed of issue 20's ``gdfree bench``).

    python benchmarks/inference_engines.py --prepared /tmp/real2 --case patient07 [--model RUN] [--mc 10]

``--prepared``: a ``gdfree prepare`` output holding the model's modalities for ``sub-<case>``; each image is
z-scored over its non-zero voxels. Prints seconds, ratios, the largest logit difference, the masks' Dice at
logit 0, the largest difference between shared-encoder and full MC samples, and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from gdfree.infer.model import TrainedModel
    from gdfree.infer.onnx import OnnxNetwork
    from gdfree.infer.sampling import sample_predictions
    from gdfree.io.images import read_volume
    from gdfree.models.forward import predict_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--model", type=Path, default=Path(__file__).parents[1] / "src/gdfree/pretrained/network")
    parser.add_argument("--mc", type=int, default=10)
    args = parser.parse_args()
    model = TrainedModel.load(args.model)
    channels = []
    for role in model.modalities:
        data = read_volume(args.prepared / f"sub-{args.case}" / "anat" / f"sub-{args.case}_{role}.nii.gz").data
        inside = data != 0
        channels.append(np.where(inside, (data - data[inside].mean()) / data[inside].std(), 0.0))
    image = np.stack(channels).astype(np.float32)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    t_export, engine = timed(lambda: OnnxNetwork(model.network, len(model.modalities)))
    runs = {name: timed(lambda n=net: predict_volume(n, image, logits_only=True))
            for name, net in (("torch", model.network), ("onnx", engine))}  # fmt: skip
    print(f"exam {image.shape}: torch {runs['torch'][0]:.1f} s, onnx {runs['onnx'][0]:.1f} s "
          f"({runs['torch'][0] / runs['onnx'][0]:.2f}x), export {t_export:.1f} s")  # fmt: skip
    a, b = runs["torch"][1], runs["onnx"][1]
    dice = [2 * ((x > 0) & (y > 0)).sum() / max((x > 0).sum() + (y > 0).sum(), 1) for x, y in zip(a, b, strict=True)]
    print(f"max |logit torch - onnx| {np.abs(a - b).max():.2e}; masks at logit 0, Dice per head "
          f"{', '.join(f'{d:.4f}' for d in dice)}")  # fmt: skip
    temps = [model.temperatures]
    t_fast, fast = timed(lambda: sample_predictions([model.network], image, mc=args.mc, seed=0, temperatures=temps))
    t_slow, slow = timed(lambda: sample_predictions([model.network], image, mc=args.mc, seed=0, temperatures=temps,
                                                    cheap=False))  # fmt: skip
    one = runs["torch"][0]
    print(f"{args.mc} MC samples: shared encoder {t_fast:.1f} s ({t_fast / one:.2f}x one torch pass), full passes "
          f"{t_slow:.1f} s ({t_slow / one:.2f}x); max |shared - full| {np.abs(fast - slow).max():.2e}")  # fmt: skip
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()

"""``gdfree bench``: inference and training speed on this machine, every number a ratio to a baseline run beside it.

One run measures, on a 1 mm and a 2 mm exam with the same weights: MONAI's sliding window (96^3, overlap 0.25,
Gaussian blending: the baseline), gdfree's torch path (:meth:`gdfree.infer.model.TrainedModel.predict`), the
ONNX Runtime path, 10-sample MC dropout and the 8 test-time flips: seconds (median of ``repeats`` after one
warm-up), peak resident memory of the process (each measurement runs in its own process, so the peak is its
own), the network's FLOPs (torch's FLOP counter on the shapes actually run) against the machine's measured
float32 matrix-multiply rate, and the Dice of each path's masks against the baseline's. Training throughput
(patches per second) of gdfree's data pipeline alone and with the network step, against a plain MONAI loop
(RandCropByPosNegLabeld + flips, affine, noise and intensity transforms, DiceCE loss, the same network and
batch). And the seconds a command takes to start (``gdfree --help``, ``gdfree predict --help``).

The exams are one phantom subject at 1 mm and at 2 mm (synthesised into ``OUT/exams`` once), or a case of a
prepared dataset (``--input``, ``--case``; its 2 mm copy is resampled). Results: ``OUT/bench.json`` and a
table in ``OUT/bench.md``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.bench_training import timed, training_worker

__all__ = ["MODES", "run_bench"]

MODES = ("monai_window96", "torch", "torch_cl", "torch_whole", "onnx", "mc10", "mc10_last", "flips8")
"""Inference paths measured on each exam; ``torch_cl`` is ``torch`` at ``--precision fp32-cl`` (channels-last
layout); ``torch_whole`` is the whole padded volume whatever the model; ``mc10_last`` samples only the last dropout
layer (``--mc-layers last``)."""


def _peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own memory map, which exec starts
    afresh; getrusage's ru_maxrss would report the parent's peak when that was higher (kept across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux, bytes on macOS


def _network_flops(net: Any, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of ``net`` on a zero tensor of ``shape`` (torch's FLOP counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(shape))
    return float(counter.get_total_flops())


def _padded(shape: tuple[int, ...], divisor: int) -> tuple[int, ...]:
    return tuple(int(math.ceil(s / divisor) * divisor) for s in shape)


def _worker(mode: str, exam: Path, model_dir: Path, repeats: int, result: Path) -> None:
    """One measurement in this (fresh) process; writes its JSON to ``result`` and masks beside it."""
    import dataclasses

    import torch

    from gdfree.arrays import bounding_box
    from gdfree.infer.model import TrainedModel
    from gdfree.models.forward import box_margin, fov_independent

    data = np.load(exam)
    image, brain, spacing = data["image"], data["brain"], tuple(float(s) for s in data["spacing"])
    model = TrainedModel.load(model_dir)
    net = model.network.eval()
    row: dict[str, Any] = {"mode": mode, "threads": torch.get_num_threads()}
    divisor = int(getattr(net, "divisor", 1))
    shape = (1, image.shape[0], *_padded(image.shape[1:], divisor))

    def probabilities(prob: np.ndarray) -> dict[str, np.ndarray]:
        return {h: np.where(brain, prob[i], 0.0).astype(np.float32) for i, h in enumerate(model.heads)}

    if mode == "monai_window96":
        from monai.inferers import sliding_window_inference

        from gdfree.arrays import sigmoid

        def run() -> np.ndarray:
            with torch.no_grad():
                z = sliding_window_inference(torch.from_numpy(image[None]), (96, 96, 96), 1, net, overlap=0.25,
                                             mode="gaussian")[0].numpy()  # fmt: skip
            temps = np.asarray(model.temperatures, np.float32).reshape(-1, 1, 1, 1)
            return sigmoid(z / temps)

        row["network_flops"] = _network_flops(net, (1, image.shape[0], 96, 96, 96)) * _windows(image.shape[1:])
    elif mode in ("torch", "torch_cl", "torch_whole", "onnx"):
        used = dataclasses.replace(model, precision="fp32-cl") if mode == "torch_cl" else model
        if mode == "onnx":
            from gdfree.infer.onnx import OnnxNetwork

            t0 = time.perf_counter()
            used = dataclasses.replace(model, network=OnnxNetwork(net, image.shape[0]))  # type: ignore[arg-type]
            row["export_s"] = time.perf_counter() - t0
        crop = bounding_box(brain, box_margin(net)) if fov_independent(net) and mode != "torch_whole" else None
        row["cropped_to_brain_box"] = crop is not None
        run_shape = shape if crop is None else (1, image.shape[0],
                                                *_padded(tuple(s.stop - s.start for s in crop), divisor))  # fmt: skip
        row["network_flops"] = _network_flops(net, run_shape)
        row["input_voxels"] = math.prod(run_shape[2:])

        def run() -> np.ndarray:
            if mode == "torch_whole":
                from gdfree.models.forward import predict_volume

                return predict_volume(used.network, image, temperature=used.temperatures)
            return used.predict(image, brain=brain)[0]

        if mode in ("torch", "torch_cl"):  # the network alone, for the achieved FLOP rate
            row["network_seconds"] = _network_seconds(net, run_shape, mode == "torch_cl", repeats)
    elif mode in ("mc10", "mc10_last", "flips8"):
        kwargs: dict[str, Any] = {"flips": True} if mode == "flips8" else {"mc": 10}
        if mode == "mc10_last":
            kwargs["mc_layers"] = "last"

        def run() -> np.ndarray:
            return model.sample(image, brain=brain, **kwargs).mean(axis=0)

    else:
        raise ValueError(f"bench: unknown mode {mode!r}")
    seconds, prob = timed(run, repeats)
    probs = probabilities(prob)
    masks = model.masks(probs, spacing)
    np.savez_compressed(result.with_suffix(".npz"), **masks)  # type: ignore[arg-type]  # stubs: allow_pickle
    row.update({"seconds": statistics.median(seconds), "seconds_all": seconds, "peak_rss_gb": _peak_rss_gb()})
    if mode == "torch_cl":  # after the peak is read: the largest probability difference from float32's pass
        row["max_probability_difference_vs_torch"] = float(np.abs(prob - model.predict(image, brain=brain)[0]).max())
    result.write_text(json.dumps(row))


def _network_seconds(net: Any, shape: tuple[int, ...], channels_last: bool, repeats: int) -> float:
    """Median seconds of one pass of ``net`` alone on zeros of ``shape`` (in channels-last layout, norms included:
    :func:`gdfree.models.forward.channels_last_network`)."""
    import torch

    from gdfree.models.forward import channels_last_network

    x, run_net = torch.zeros(shape), net
    if channels_last:
        x, run_net = x.contiguous(memory_format=torch.channels_last_3d), channels_last_network(net)
    with torch.no_grad():
        seconds, _ = timed(lambda: run_net(x), repeats)
    return statistics.median(seconds)


def _windows(shape: tuple[int, ...], roi: int = 96, overlap: float = 0.25) -> int:
    """How many windows MONAI's sliding window runs over ``shape``."""
    count = 1
    for s in shape:
        step = max(int(roi * (1 - overlap)), 1)
        count *= 1 if s <= roi else math.ceil((s - roi) / step) + 1
    return count


def _matmul_worker(result: Path) -> None:
    """float32 matrix-multiply rate of this machine with torch's default threads (best of 5 runs)."""
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds, _ = timed(lambda: a @ b, 5)
    result.write_text(json.dumps({"mode": "matmul", "gflops": 2 * n**3 / min(seconds) / 1e9,
                                  "threads": torch.get_num_threads()}))  # fmt: skip


def _spawn(args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m gdfree.bench <args>`` (its last argument the result file) and read its result."""
    result = Path(args[-1])
    result.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "gdfree.bench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    if done.returncode != 0 or not result.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit code {done.returncode}: {' | '.join(tail)}"}
    return json.loads(result.read_text())


def _startup_seconds(argv: list[str], repeats: int = 3) -> float:
    """Fastest wall time of ``python -m gdfree <argv>`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gdfree", *argv], capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def _exams(out: Path, dataset: Path | None, case_id: str | None, modalities: tuple[str, ...]) -> dict[str, Path]:
    """``{"1mm": npz, "2mm": npz}`` (normalised image, brain, spacing) and the 2 mm phantom folder (training)."""
    from scipy import ndimage

    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    exams = out / "exams"
    paths = {}
    for mm in (1, 2):
        folder = exams / f"phantom-{mm}mm"
        if not (folder / "sub-001").is_dir():
            write_cohort(folder, PhantomConfig(resolution_mm=mm), 1, seed=11)
        paths[f"phantom_{mm}mm"] = folder
    if dataset is not None:
        found = [c for c in discover(dataset) if case_id is None or c.case_id == case_id]
        if not found:
            raise ValueError(f"{dataset}: no case {case_id!r} to benchmark")
        one = load_array_case(found[0], modalities)
        two_image = np.stack([ndimage.zoom(c, 0.5, order=1) for c in one.image]).astype(np.float32)
        two_brain = ndimage.zoom(one.brain.astype(np.uint8), 0.5, order=0).astype(bool)
        arrays = {"1mm": (one.image, one.brain, one.spacing_mm),
                  "2mm": (two_image, two_brain, tuple(2 * s for s in one.spacing_mm))}  # fmt: skip
    else:
        arrays = {}
        for mm in (1, 2):
            case = load_array_case(discover(paths[f"phantom_{mm}mm"])[0], modalities)
            arrays[f"{mm}mm"] = (case.image, case.brain, case.spacing_mm)
    for name, (image, brain, spacing) in arrays.items():
        np.savez(exams / f"{name}.npz", image=image, brain=brain, spacing=np.asarray(spacing))
        paths[name] = exams / f"{name}.npz"
    return paths


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def run_bench(
    out: Path | str,
    *,
    model: Path | str | None = None,
    dataset: Path | str | None = None,
    case_id: str | None = None,
    repeats: int = 3,
    training: bool = True,
    modes: tuple[str, ...] = MODES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure everything the module docstring lists into ``out``; returns what ``bench.json`` holds."""
    from gdfree.demo import PRETRAINED
    from gdfree.infer.model import TrainedModel
    from gdfree.io.tables import write_json

    out = Path(out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    model_dir = Path(model) if model is not None else PRETRAINED / "network"
    loaded = TrainedModel.load(model_dir)
    say = progress or (lambda _: None)
    say("exams")
    exams = _exams(out, Path(dataset) if dataset else None, case_id, tuple(loaded.modalities))
    report: dict[str, Any] = {"model": str(model_dir.resolve()), "weights_sha256": loaded.weights_sha256,
                              "cpu_count": os.cpu_count(), "repeats": repeats, "exams": {}}  # fmt: skip
    say("matrix-multiply rate")
    report["matmul"] = _spawn(["--matmul", str(out / "work" / "matmul.json")])
    for name in ("1mm", "2mm"):
        shape = tuple(int(s) for s in np.load(exams[name])["image"].shape)
        rows = {}
        for mode in modes:
            say(f"{name} {mode}")
            rows[mode] = _spawn(["--worker", mode, str(exams[name]), str(model_dir), str(repeats),
                                 str(out / "work" / f"{name}_{mode}.json")])  # fmt: skip
        base = rows.get("monai_window96", {})
        reference = out / "work" / f"{name}_monai_window96.npz"
        for mode, row in rows.items():
            if "seconds" not in row:
                continue
            if base.get("seconds"):
                row["speedup_vs_monai"] = base["seconds"] / row["seconds"]
            if reference.is_file() and mode != "monai_window96":
                ours, theirs = np.load(out / "work" / f"{name}_{mode}.npz"), np.load(reference)
                row["mask_dice_vs_monai"] = {h: _dice(ours[h], theirs[h]) for h in theirs.files}
            if row.get("network_flops") and row.get("network_seconds"):
                row["achieved_gflops"] = row["network_flops"] / row["network_seconds"] / 1e9
                if report["matmul"].get("gflops"):
                    row["fraction_of_matmul_rate"] = row["achieved_gflops"] / report["matmul"]["gflops"]
        torch_row = rows.get("torch", {})
        if rows.get("torch_cl", {}).get("seconds") and torch_row.get("seconds"):
            rows["torch_cl"]["speedup_vs_torch"] = torch_row["seconds"] / rows["torch_cl"]["seconds"]
            ours, theirs = (np.load(out / "work" / f"{name}_{m}.npz") for m in ("torch_cl", "torch"))
            rows["torch_cl"]["mask_dice_vs_torch"] = {h: _dice(ours[h], theirs[h]) for h in theirs.files}
        for mode in ("mc10", "mc10_last", "flips8"):
            if rows.get(mode, {}).get("seconds") and torch_row.get("seconds"):
                rows[mode]["ratio_to_one_pass"] = rows[mode]["seconds"] / torch_row["seconds"]
        report["exams"][name] = {"shape": list(shape), "modes": rows}
    if training:
        for mode in ("gdfree_data", "monai_data", "gdfree_step", "gdfree_step_cl", "monai_step"):
            say(f"training {mode}")
            report.setdefault("training", {})[mode] = _spawn(["--training", mode, str(exams["phantom_2mm"]), "10",
                                                              str(out / "work" / f"train_{mode}.json")])  # fmt: skip
    say("start-up")
    report["startup_s"] = {"gdfree --help": _startup_seconds(["--help"]),
                           "gdfree predict --help": _startup_seconds(["predict", "--help"])}  # fmt: skip
    write_json(out / "bench.json", report)
    (out / "bench.md").write_text(markdown(report), encoding="utf-8")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The tables of ``bench.md``."""
    lines = [f"Model {report['model']} (sha256 {report['weights_sha256'][:12]}), {report['cpu_count']} CPUs, "
             f"median of {report['repeats']} after a warm-up. Matrix-multiply rate "
             f"{report['matmul'].get('gflops', float('nan')):.0f} GFLOP/s.", ""]  # fmt: skip
    for name, exam in report["exams"].items():
        lines += [f"### {name} exam {'x'.join(map(str, exam['shape'][1:]))}", "",
                  "| path | seconds | x MONAI | peak RSS GB | mask Dice vs MONAI (enh / lesion) | GFLOP/s | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for mode, row in exam["modes"].items():
            if "seconds" not in row:
                lines.append(f"| {mode} | failed: {row.get('error', '')} | | | | | |")
                continue
            dice = row.get("mask_dice_vs_monai", {})
            agree = " / ".join("-" if v is None else f"{v:.3f}" for v in dice.values()) if dice else ""
            gflops = f"{row['achieved_gflops']:.0f} ({100 * row['fraction_of_matmul_rate']:.0f}%)" if (
                "fraction_of_matmul_rate" in row) else ""  # fmt: skip
            note = "brain box" if row.get("cropped_to_brain_box") else ""
            if "ratio_to_one_pass" in row:
                note = f"{row['ratio_to_one_pass']:.1f}x one pass"
            if "speedup_vs_torch" in row:
                same = " / ".join("-" if v is None else f"{v:.3f}" for v in row["mask_dice_vs_torch"].values())
                note = (f"{row['speedup_vs_torch']:.2f}x torch; masks vs torch {same}; probabilities within "
                        f"{row['max_probability_difference_vs_torch']:.1e}")  # fmt: skip
            lines.append(f"| {mode} | {row['seconds']:.2f} | {row.get('speedup_vs_monai', float('nan')):.1f} | "
                         f"{row['peak_rss_gb']:.2f} | {agree} | {gflops} | {note} |")  # fmt: skip
        lines.append("")
    if "training" in report:
        lines += ["### training throughput (2 mm phantom, batches of 4 x 48^3)", "", "| pipeline | patches/s |",
                  "| --- | --- |"]  # fmt: skip
        for mode, row in report["training"].items():
            lines.append(f"| {mode} | {row.get('patches_per_s', float('nan')):.1f} |")
        lines.append("")
    lines += ["| command | start-up seconds |", "| --- | --- |"]
    lines += [f"| `{k}` | {v:.2f} |" for k, v in report["startup_s"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the measurement processes
    kind, rest = sys.argv[1], sys.argv[2:]
    if kind == "--matmul":
        _matmul_worker(Path(rest[0]))
    elif kind == "--worker":
        _worker(rest[0], Path(rest[1]), Path(rest[2]), int(rest[3]), Path(rest[4]))
    elif kind == "--training":
        training_worker(rest[0], Path(rest[1]), int(rest[2]), Path(rest[3]))
    else:
        raise SystemExit(f"gdfree.bench: unknown measurement {kind}")

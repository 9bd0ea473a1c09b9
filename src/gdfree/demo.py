"""``gdfree demo``: the main job on the embedded default, end to end.

Synthesise a 2 mm cohort (MNI anatomy from nilearn, real lesion shapes), split it by patient, train the
multitask network, predict the held-out test patients from pre-contrast images only, evaluate them
against the phantom's truth and print the headline table. Everything lands under one folder::

    OUT/cohort/        the synthetic BIDS cohort (truth in derivatives/phantom)
    OUT/run/           config, split, log, best and last checkpoints
    OUT/predictions/   BIDS derivatives of the test patients
    OUT/evaluation/    cases.tsv, lesions.tsv, froc.tsv, summary.json ...
    OUT/report/        index.html (the cohort) and the page of one test patient, with its viewer
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = [
    "PRETRAINED",
    "demo_config",
    "evaluate_run",
    "run_demo",
    "run_pretrained_demo",
    "train_and_evaluate",
    "write_demo_reports",
]

PRETRAINED = Path(__file__).parent / "pretrained"
"""The model shipped in the package (trained on phantoms only; see its MODEL_CARD.md): ``network/`` (a run
folder: model.safetensors + model.json) and ``activity/`` (the lesion-level activity classifier)."""

FRESH_FIRST = 1000
"""``--pretrained`` scores patients sub-1001 onwards: the shipped model trained on sub-001..100."""


def demo_config(cohort: Path, steps: int, seed: int) -> Any:
    """The training config of the demo (also written to OUT/run/config.yaml)."""
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig

    return TrainConfig(
        datasets=(DatasetSpec(str(cohort)),),
        max_steps=steps,
        val_every=max(steps // 6, 1),
        seed=seed,
        split=SplitConfig(val_fraction=0.2, test_fraction=0.3, seed=seed),
    )


def run_demo(
    out: Path | str, *, subjects: int = 30, seed: int = 0, jobs: int = 2, steps: int = 600, console: Any = None
) -> dict[str, Any]:
    """Run the whole demo into ``out`` (replacing an earlier demo there); returns the evaluation summary.

    Raises:
        FileExistsError: ``out`` holds something that is not an earlier demo.
    """
    from gdfree.evaluate.files import write_evaluation
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    cfg = demo_config(Path(out) / "cohort", steps, seed)  # checks the options before minutes of synthesis
    if subjects < 1 or jobs < 1:
        raise ValueError(f"--subjects and --jobs: expected 1 or more, got {subjects} and {jobs}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "cohort").is_dir() or not set(p.name for p in out.iterdir()) <= {
            "cohort", "run", "predictions", "evaluation", "report"
        }:  # fmt: skip
            raise FileExistsError(f"{out}: not empty and not an earlier gdfree demo; choose another --out")
        for name in ("run", "predictions", "evaluation", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
    start = time.perf_counter()
    timings = {}
    if console is not None:
        console.print(f"gdfree demo: synthesising {subjects} subjects at 2 mm into {out / 'cohort'} ...")
    write_cohort(out / "cohort", PhantomConfig(resolution_mm=2), subjects, seed, jobs=jobs, overwrite=True)
    timings["synthesis_s"] = time.perf_counter() - start
    summary, results, evaluation, affines, more = train_and_evaluate(cfg, out, out / "cohort", console)
    timings.update(more)
    evaluation["demo"] = {"timings_s": timings, "train": summary, "subjects": subjects, "seed": seed}
    write_evaluation(out / "evaluation", results, evaluation, affines)
    pages = write_demo_reports(out, console)
    if console is not None:
        _print_headline(console, evaluation, f"{len(results)} held-out test patients (model trained here)")
        console.print(f"{subjects} subjects at 2 mm, seed {seed}: synthesis {timings['synthesis_s']:.0f} s, "
                      f"training {summary['steps']} steps {timings['training_s']:.0f} s,\nprediction "
                      f"{timings['prediction_s']:.0f} s. Everything (full tables: evaluation/) is in\n{out}",
                      highlight=False)  # fmt: skip
        _print_pages(console, pages)
    return evaluation


def write_demo_reports(out: Path, console: Any = None) -> list[Path]:
    """The cohort report of ``out/evaluation`` and the page of its first case into ``out/report`` (with the
    viewer when NiiVue was bundled, see :func:`gdfree.report.viewer.niivue_asset`); returns both pages."""
    from gdfree.report import write_reports
    from gdfree.report.case import read_rows
    from gdfree.report.viewer import NIIVUE

    first = [r["case_id"] for r in read_rows(out / "evaluation" / "cases.tsv")][:1]
    viewer = NIIVUE.is_file()
    if not viewer and console is not None:
        console.print(f"(no viewer in the report: {NIIVUE} is missing; `make demo` installs it)", highlight=False)
    result = write_reports(out / "report", predictions=out / "predictions", dataset=out / "cohort",
                           evaluation=out / "evaluation", case_ids=first, viewer=viewer)  # fmt: skip
    return [result.index, *result.cases.values()]


def _print_pages(console: Any, pages: list[Path]) -> None:
    console.print("Reports (open in a browser):", highlight=False)
    for page in pages:
        console.print(f"  {page.resolve()}", highlight=False, soft_wrap=True)


def _lesion_framing(predictions: Path, cohort: Path, case_ids: list[str]) -> dict[str, Any]:
    """The lesion-level framing scored as a segmentation: each scored lesion's ``p_active`` painted onto its
    voxels (``desc-all_dseg``), against the reference enhancing mask, by the segmentation framing's code;
    a lesion is called active at the classifier's threshold (its ``predicted_active`` column)."""
    import csv

    import numpy as np

    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.cohort import evaluate_case, summarize
    from gdfree.io.adapters import discover
    from gdfree.io.bids import derivative_path
    from gdfree.io.images import read_mask, read_volume

    refs = {c.case_id: c for c in discover(cohort)}
    results, called, scores = [], [], []
    cases = []
    for case_id in case_ids:
        ref = refs[case_id]
        ids = np.asarray(read_volume(derivative_path(predictions, ref.subject, ref.session, "dseg", desc="all")).data)
        table = derivative_path(predictions, ref.subject, ref.session, "lesions", ".tsv", desc="all")
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        p = np.zeros(int(ids.max(initial=0)) + 1)
        for r in rows:
            p[int(r["lesion_id"])] = float(r["p_active"])
            scores.append(float(r["p_active"]))
            if r["predicted_active"] == "true":
                called.append(float(r["p_active"]))
        cases.append((ref, p[ids.astype(np.int64)].astype(np.float32)))
    threshold = min(called, default=1.0)  # the lesions called active are exactly those at or above it
    config = EvaluationConfig(threshold=threshold, patient_threshold=threshold)
    for ref, prob in cases:
        truth = read_mask(ref.masks["enhancing"])
        brain = np.asarray(read_mask(ref.masks["brain"]).data) if "brain" in ref.masks else None
        results.append(evaluate_case(np.asarray(truth.data), truth.spacing_mm, case_id=ref.case_id, prob=prob,
                                     brain=brain, config=config))  # fmt: skip
    return summarize(results, config)


def _print_headline(console: Any, evaluation: dict[str, Any], what: str, prefix: str = "gdfree demo: ") -> None:
    from gdfree.evaluate.display import compact_headline

    console.print(f"[bold]{prefix}[/]enhancing lesions, {what}" if prefix else f"Enhancing lesions, {what}:",
                  highlight=False)  # fmt: skip
    for line in compact_headline(evaluation):
        console.print("  " + line, highlight=False, soft_wrap=True)


def run_pretrained_demo(
    out: Path | str, *, subjects: int = 20, seed: int = 0, jobs: int = 2, console: Any = None,
    model: Path | str = PRETRAINED,
) -> dict[str, Any]:  # fmt: skip
    """Score the shipped model on ``subjects`` fresh synthetic patients (sub-1001 onwards of phantom ``seed``:
    never seen in its training), with lesion-level activity on their reference lesions; no training.

    Raises:
        FileExistsError: ``out`` holds something that is not an earlier pretrained demo.
        ValueError: bad options, or a fresh patient identical to a training case of the shipped model.
    """
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.files import evaluate_dataset, write_evaluation
    from gdfree.infer.model import TrainedModel
    from gdfree.phantom.cohort import PhantomConfig, write_cohort
    from gdfree.predict import predict_dataset

    if subjects < 1 or jobs < 1:
        raise ValueError(f"--subjects and --jobs: expected 1 or more, got {subjects} and {jobs}")
    out, model = Path(out), Path(model)
    network = TrainedModel.load(model / "network")
    if out.exists() and any(out.iterdir()):
        if not set(p.name for p in out.iterdir()) <= {"cohort", "predictions", "evaluation", "report"}:
            raise FileExistsError(f"{out}: not empty and not an earlier gdfree demo --pretrained; choose another --out")
        for name in ("predictions", "evaluation", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
    start = time.perf_counter()
    write_cohort(out / "cohort", PhantomConfig(resolution_mm=2), subjects, seed, jobs=jobs, overwrite=True,
                 first=FRESH_FIRST)  # fmt: skip
    synthesis_s = time.perf_counter() - start
    start = time.perf_counter()
    predict_dataset(model / "network", out / "cohort", out / "predictions", activity=model / "activity")
    prediction_s = time.perf_counter() - start
    config = EvaluationConfig(threshold=network.thresholds["enhancing"], patient_threshold=network.patient_threshold,
                              patient_score=network.patient_score, lesion_calibration=network.lesion_calibration)
    results, evaluation, affines = evaluate_dataset(out / "predictions", out / "cohort", config=config)
    assert evaluation is not None  # one process, no shard: the summary is there
    lesion_framing = _lesion_framing(out / "predictions", out / "cohort", [r.case_id for r in results])
    evaluation["lesion_framing"] = lesion_framing
    evaluation["demo"] = {"pretrained": str(model), "subjects": subjects, "seed": seed, "first": FRESH_FIRST,
                          "timings_s": {"synthesis_s": synthesis_s, "prediction_s": prediction_s}}  # fmt: skip
    write_evaluation(out / "evaluation", results, evaluation, affines)
    pages = write_demo_reports(out, console)
    if console is not None:
        console.print(f"[bold]gdfree demo --pretrained[/]: {len(results)} fresh phantom patients", highlight=False)
        shown = {**lesion_framing, "lesion_activity": evaluation.get("lesion_activity", {})}
        _print_headline(console, shown, "lesion-level framing (shipped classifier, reference lesions)", "")
        _print_headline(console, {k: v for k, v in evaluation.items() if k != "lesion_activity"},
                        "segmentation framing (shipped network)", "")  # fmt: skip
        console.print(f"The shipped model was trained on phantoms only:\n{model / 'MODEL_CARD.md'}.\n"
                      f"Synthesis {synthesis_s:.0f} s, prediction {prediction_s:.0f} s; everything is in {out}",
                      highlight=False)  # fmt: skip
        _print_pages(console, pages)
    return evaluation


def train_and_evaluate(
    cfg: Any,
    out: Path,
    cohort: Path,
    console: Any = None,
    device: str = "cpu",
    *,
    flips: bool = False,
    heldout: Path | None = None,
) -> tuple[Any, ...]:
    """Train ``cfg`` into ``out/run``, then :func:`evaluate_run`.

    Returns:
        (training summary, per-case results, evaluation summary, affines, timings in seconds).
    """
    from gdfree.train import train

    t0 = time.perf_counter()
    summary = train(cfg, out / "run", device=device, console=console)
    training_s = time.perf_counter() - t0
    results, evaluation, affines, timings = evaluate_run(out, cohort, device=device, flips=flips, heldout=heldout)
    return summary, results, evaluation, affines, {"training_s": training_s, **timings}


def evaluate_run(
    out: Path, cohort: Path, device: str = "cpu", *, flips: bool = False, heldout: Path | None = None
) -> tuple[Any, ...]:
    """Predict the test patients of the run in ``out/run`` into ``out/predictions`` (``flips``: mean of
    the 8 mirrorings, test-time augmentation) and evaluate them against ``cohort`` (enhancing lesions,
    msseg rule; patient score: the model's, called active from the threshold chosen on validation patients, or
    the voxel threshold for a model without one). ``heldout``: a dataset of further
    patients the run never saw (every case predicted, into ``out/predictions-heldout``), scored with the test
    patients as one test set. Both prediction folders are replaced on every call (they belong to this
    evaluation), so ``prediction_s`` always times a prediction.

    Returns:
        (per-case results, evaluation summary, affines, timings in seconds).
    """
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.cohort import summarize
    from gdfree.evaluate.files import evaluate_dataset
    from gdfree.predict import predict_dataset

    test_ids = [c.split(":")[-1] for c in _test_cases(out / "run")]
    from gdfree.infer.model import TrainedModel

    model = TrainedModel.load(out / "run", device)
    config = EvaluationConfig(threshold=model.thresholds["enhancing"], patient_threshold=model.patient_threshold,
                              patient_score=model.patient_score, lesion_calibration=model.lesion_calibration)
    prediction_s = 0.0
    parts: list[tuple[Path, Path, list[str] | None]] = [(cohort, out / "predictions", test_ids)]
    if heldout is not None:
        parts.append((heldout, out / "predictions-heldout", None))
    results: list[Any] = []
    affines: dict[str, Any] = {}
    for reference, predictions, ids in parts:
        t0 = time.perf_counter()
        shutil.rmtree(predictions, ignore_errors=True)  # its own folder: predicted afresh, so timed afresh
        predict_dataset(out / "run", reference, predictions, device=device, case_ids=ids, flips=flips)
        prediction_s += time.perf_counter() - t0
        part, evaluation, part_affines = evaluate_dataset(
            predictions, reference, target="enhancing", config=config, only_predicted=True
        )
        if set(affines) & set(part_affines):
            raise ValueError(f"{heldout}: holds cases named like test cases of {cohort}")
        results += part
        affines.update(part_affines)
    if heldout is not None:
        evaluation = summarize(results, config)
    return results, evaluation, affines, {"prediction_s": prediction_s}


def _test_cases(run: Path) -> list[str]:
    return list(json.loads((run / "split.json").read_text())["test_cases"])

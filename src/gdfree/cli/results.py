"""Commands over results and the machine: evaluate, report, bench, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gdfree.cli.common import FORMAT_HELP, SHARD_HELP, command, exit_on_failures, new_console, split


@command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Folder of predictions (sub-*_desc-<target>_probseg/_mask files).")],
    ref: Annotated[Path, typer.Option(help="Reference dataset (BIDS with derivative masks, or a challenge layout).")],
    out: Annotated[Path, typer.Option(help="Folder for cases.tsv, lesions.tsv, froc.tsv, summary.json...")],
    target: Annotated[str, typer.Option(help="enhancing or lesion.")] = "enhancing",
    rule: Annotated[str, typer.Option(help="Lesion detection rule: msseg, iou or any.")] = "msseg",
    connectivity: Annotated[int | None, typer.Option(help="6, 18 or 26 (default: the rule's, 6).")] = None,
    min_volume: Annotated[
        float | None, typer.Option(help="Drop lesions of this volume (mm3) or less (default: 3 for msseg, else 0).")
    ] = None,
    iou_threshold: Annotated[float, typer.Option(help="IoU needed by the iou rule.")] = 0.25,
    threshold: Annotated[float, typer.Option(help="Probability -> mask threshold when no mask is given.")] = 0.5,
    patient_score: Annotated[
        str, typer.Option(help="max_prob, max_lesion_prob, top_lesion_median, count or volume.")
    ] = "max_prob",
    patient_threshold: Annotated[
        float | None,
        typer.Option(help="Score from which an exam is active (default: --threshold; 1 for count; > 0 for volume)."),
    ] = None,
    uncertainty: Annotated[
        str | None, typer.Option(help="desc- label of voxel uncertainty maps, for retention curves.")
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the patient-level CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    only_predicted: Annotated[bool, typer.Option(help="Score only the cases that have a prediction.")] = False,
    shard: Annotated[
        str | None,
        typer.Option(help=SHARD_HELP + " Each case is recorded; the shard that completes the set writes the tables."),
    ] = None,
) -> None:
    """Score predictions against a reference: voxel, surface, lesion, FROC, patient and calibration metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.display import print_summary
    from gdfree.evaluate.files import evaluate_dataset, write_evaluation
    from gdfree.io.runs import check_output_folder, parse_shard
    from gdfree.metrics import DetectionRule

    check_output_folder(out, [pred, ref])
    overrides: dict[str, Any] = {"iou_threshold": iou_threshold}
    if connectivity is not None:
        overrides["connectivity"] = connectivity
    if min_volume is not None:
        overrides["min_volume_mm3"] = min_volume
    cfg = EvaluationConfig(
        rule=DetectionRule.preset(rule, **overrides), threshold=threshold, patient_score=patient_score,
        patient_threshold=patient_threshold, n_boot=n_boot, seed=seed,
    )  # fmt: skip
    console = new_console()
    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        task = bar.add_task("evaluate", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        results, summary, affines = evaluate_dataset(
            pred, ref, target=target, config=cfg, fmt=fmt, uncertainty_desc=uncertainty,
            only_predicted=only_predicted, progress=step, shard=parse_shard(shard), out=out,
        )  # fmt: skip
    if summary is None:
        console.print(f"Scored the cases of shard {shard} into {out}/gdfree_run; other shards still have cases "
                      "to score, and the one that completes the set writes the tables.")  # fmt: skip
        return
    written = write_evaluation(out, results, summary, affines)
    print_summary(summary, console, title=f"{target} predictions in {pred} against {ref}")
    console.print(f"Wrote {', '.join(p.name for p in written)} to {out}")
    exit_on_failures(console, summary["failures"], f"could not be scored (listed in {out}/failures.tsv); the "
                      "table above leaves them out")  # fmt: skip


@command()
def report(
    out: Annotated[Path, typer.Option(help="Report folder (index.html, one page per case, assets/).")],
    predictions: Annotated[
        Path | None, typer.Option(help="A `gdfree predict` folder (default: the one --evaluation names).")
    ] = None,
    input: Annotated[  # the option's name, as in predict
        Path | None, typer.Option(help="The dataset the predictions came from (default: --evaluation's reference).")
    ] = None,
    evaluation: Annotated[
        Path | None, typer.Option(help="A `gdfree evaluate` folder: FROC, ROC, calibration, retention, per patient.")
    ] = None,
    explain: Annotated[
        Path | None, typer.Option(help="A `gdfree explain` folder: importance and attributions.")
    ] = None,
    cases: Annotated[
        str | None, typer.Option(help="Comma-separated case ids to write pages for (default: all).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    viewer: Annotated[bool, typer.Option(help="Embed the NiiVue viewer (bundled by `make`).")] = True,
) -> None:
    """Write HTML reports that open offline: a cohort page (from --evaluation) and a page per predicted case
    (activity score, viewer, sortable lesion tables, mosaics, explain, input QC). A case whose page fails is
    listed on the cohort page and the others go on (exit code 1)."""
    from gdfree.report import write_reports

    console = new_console()
    result = write_reports(
        out, predictions=predictions, dataset=input, evaluation=evaluation, explain=explain,
        case_ids=split(cases), fmt=fmt, viewer=viewer,
        progress=lambda case_id, status: console.print(f"{case_id}: {status}", highlight=False, markup=False),
    )  # fmt: skip
    console.print(f"Cohort report: {result.index}", highlight=False, markup=False, soft_wrap=True)
    if result.cases:
        console.print(f"{len(result.cases)} case report(s), e.g. {next(iter(result.cases.values()))}",
                      highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    exit_on_failures(console, result.failures, "have no report or an incomplete one (listed on the cohort page)")


@command()
def bench(
    out: Annotated[Path, typer.Option(help="Folder for bench.json, bench.md and the exams it makes.")],
    model: Annotated[Path | None, typer.Option(help="Run folder (default: the model shipped with gdfree).")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", help="A prepared dataset to take the 1 mm exam from (default: phantom).")
    ] = None,
    case: Annotated[str | None, typer.Option(help="Case id in --input (default: its first).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed runs of each path after one warm-up (median reported).")] = 3,
    training: Annotated[bool, typer.Option(help="Also measure training throughput.")] = True,
) -> None:
    """Measure inference (MONAI sliding-window baseline, torch, ONNX, MC dropout, flips) and training speed on
    this machine, side by side; see gdfree.bench."""
    from gdfree.bench import run_bench
    from gdfree.io.runs import check_output_folder

    console = new_console()
    if repeats < 1:
        raise ValueError(f"--repeats: expected 1 or more, got {repeats}")
    check_output_folder(out, [p for p in (model, input) if p is not None])
    report = run_bench(out, model=model, dataset=input, case_id=case, repeats=repeats, training=training,
                       progress=lambda what: console.print(f"measuring {what} ...", highlight=False))  # fmt: skip
    from gdfree.bench import markdown

    console.print(markdown(report), highlight=False, markup=False)


@command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("gdfree-demo"),
    subjects: Annotated[int, typer.Option(help="Subjects in the synthetic cohort (split by patient).")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed of the cohort, split, weights and sampling.")] = 0,
    jobs: Annotated[int, typer.Option(help="Subjects synthesised in parallel.")] = 2,
    steps: Annotated[int, typer.Option(help="Training steps (about 10 minutes on 2 CPU cores at 600).")] = 600,
    pretrained: Annotated[
        bool, typer.Option(help="Score the model shipped in the package on fresh phantom patients (no training).")
    ] = False,
) -> None:
    """The main job on the embedded default: synthesise, train, predict held-out patients, evaluate (or, with
    --pretrained, score the shipped phantom-trained model on fresh synthetic patients)."""
    from gdfree.demo import run_demo, run_pretrained_demo

    if pretrained:
        run_pretrained_demo(out, subjects=subjects, seed=seed, jobs=jobs, console=new_console())
    else:
        run_demo(out, subjects=subjects, seed=seed, jobs=jobs, steps=steps, console=new_console())

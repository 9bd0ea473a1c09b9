"""The ``gdfree`` command line: each command is a thin adapter over library functions.

Heavy libraries are imported inside the commands so that ``gdfree --help`` stays instant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gdfree.devices import check_device
from gdfree.errors import GdfreeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=__doc__.splitlines()[0] if __doc__ else None)  # fmt: skip


_FORMAT_HELP = "Layout: auto, bids, open_ms_data, msseg2016, isbi2015, miccai2008 or shifts2022."
_SHARD_HELP = (
    "K/N: only the cases of part K of N (a stable split by case id); N jobs may share one --out and "
    "together write what one run would."
)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _fail(message: str) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, GdfreeError)
"""What a command reports as one line naming the file or option (exit 2): bad input or options, not a bug."""


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``app.command`` whose errors of :data:`USER_ERRORS` become one ``error:`` line and exit code 2: the one
    error-to-exit mapping of every command (an unforeseen error: :func:`main`, exit 3)."""

    def register(function: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(function)
        def run(*a: Any, **k: Any) -> None:
            try:
                function(*a, **k)
            except USER_ERRORS as exc:
                raise _fail(str(exc)) from exc

        return app.command(*args, **kwargs)(run)

    return register


def _exit_on_failures(console: Any, failures: dict[str, str], what: str) -> None:
    """Print each failed case and its reason, then exit 1; nothing when no case failed."""
    if not failures:
        return
    for case_id, reason in failures.items():
        console.print(f"failed: {case_id}: {reason}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(failures)} cases {what}.", highlight=False, markup=False)
    raise typer.Exit(code=1)


def _split(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


@_command()
def synth(
    out: Annotated[Path, typer.Option(help="Output BIDS folder.")],
    subjects: Annotated[int, typer.Option(help="Number of subjects.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    resolution: Annotated[int, typer.Option(help="Voxel size in mm: 1, 2 or 4.")] = 2,
    signature_strength: Annotated[
        float | None, typer.Option(help="Pre-contrast signature of active lesions (0 = none).")
    ] = None,
    signature_modalities: Annotated[
        str | None, typer.Option(help="Comma-separated carriers of the signature, e.g. FLAIR,T1w.")
    ] = None,
    randomise: Annotated[
        bool | None,
        typer.Option(
            "--randomise/--no-randomise",
            help="Domain randomisation: per-subject contrasts, noise, bias and resolution (SynthSeg-style).",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML phantom config; options above override it.")] = None,
    jobs: Annotated[int, typer.Option(help="Subjects synthesised in parallel.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing synthetic dataset in OUT.")] = False,
    first: Annotated[
        int, typer.Option(help="Skip this many subjects: 100 writes sub-101 onwards (a held-out batch).")
    ] = 0,
) -> None:
    """Synthesise a BIDS cohort of MS subjects with known active lesions (truth in derivatives/phantom)."""
    import dataclasses

    from gdfree.config import config_from_dict, load_config
    from gdfree.phantom.cohort import PhantomConfig

    cfg = load_config(PhantomConfig, config) if config else config_from_dict(PhantomConfig, {})
    overrides: dict[str, Any] = {"resolution_mm": resolution}
    if signature_strength is not None:
        overrides["signature_strength"] = signature_strength
    if signature_modalities is not None:
        overrides["signature_modalities"] = _split(signature_modalities)
    if randomise is not None:
        overrides["domain_randomisation"] = dataclasses.replace(cfg.domain_randomisation, enabled=randomise)
    cfg = dataclasses.replace(cfg, **overrides)
    rows = _run_synth(out, cfg, subjects, seed, jobs, overwrite, first)
    _print_cohort(rows, out)


def _run_synth(
    out: Path, cfg: Any, subjects: int, seed: int, jobs: int, overwrite: bool, first: int = 0
) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gdfree.phantom.cohort import write_cohort

    with Progress(
        TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=_console()
    ) as bar:
        task = bar.add_task("synth", total=subjects)
        return write_cohort(
            out, cfg, subjects, seed, jobs=jobs, overwrite=overwrite, first=first,
            progress=lambda done: bar.update(task, completed=done),
        )  # fmt: skip


def _print_cohort(rows: list[dict[str, Any]], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"Synthetic cohort in {out}")
    cols = ("participant_id", "n_lesions", "n_active", "lesion_volume_mm3", "enhancing_voxels")
    for col in cols:
        table.add_column(col, justify="left" if col == "participant_id" else "right")
    for r in rows:
        table.add_row(*(str(r[c]) for c in cols))
    console = _console()
    console.print(table)
    n_active_patients = sum(r["n_active"] > 0 for r in rows)
    console.print(
        f"{len(rows)} subjects, {sum(r['n_lesions'] for r in rows)} lesions, "
        f"{sum(r['n_active'] for r in rows)} active; {n_active_patients} patients with active disease, "
        f"{len(rows) - n_active_patients} without."
    )


@_command()
def info(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (BIDS or a known challenge layout).")],
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "auto",
    required: Annotated[str, typer.Option(help="Comma-separated modalities every case needs.")] = "T1w,T2w,FLAIR",
    quick: Annotated[bool, typer.Option(help="Read the headers only (no check of the voxels).")] = False,
) -> None:
    """List the cases of a dataset: modalities, labels, grids and the problems found (exit 1 if a case is
    unusable: an unreadable or invalid file, a missing modality; images on different grids are reported
    but usable, as prepare registers them)."""
    from gdfree.io.report import describe_dataset, print_report

    rows = describe_dataset(dataset, fmt, _split(required) or (), quick=quick)
    print_report(rows, dataset, _console())
    if any(r.unusable for r in rows):
        raise typer.Exit(code=1)


@_command()
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
    patient_score: Annotated[str, typer.Option(help="max_prob, max_lesion_prob, count or volume.")] = "max_prob",
    patient_threshold: Annotated[
        float | None,
        typer.Option(help="Score from which an exam is active (default: --threshold; 1 for count; > 0 for volume)."),
    ] = None,
    uncertainty: Annotated[
        str | None, typer.Option(help="desc- label of voxel uncertainty maps, for retention curves.")
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the patient-level CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "auto",
    only_predicted: Annotated[bool, typer.Option(help="Score only the cases that have a prediction.")] = False,
    shard: Annotated[
        str | None,
        typer.Option(help=_SHARD_HELP + " Each case is recorded; the shard that completes the set writes the tables."),
    ] = None,
) -> None:
    """Score predictions against a reference: voxel, surface, lesion, FROC, patient and calibration metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gdfree.evaluate import DetectionRule, EvaluationConfig
    from gdfree.evaluate.display import print_summary
    from gdfree.evaluate.files import evaluate_dataset, write_evaluation
    from gdfree.io.runs import check_output_folder, parse_shard

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
    console = _console()
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
        console.print(f"Scored {len(results)} cases of shard {shard} into {out}/gdfree_run; other shards still "
                      "have cases to score, and the one that completes the set writes the tables.")  # fmt: skip
        return
    written = write_evaluation(out, results, summary, affines)
    print_summary(summary, console, title=f"{target} predictions in {pred} against {ref}")
    console.print(f"Wrote {', '.join(p.name for p in written)} to {out}")
    _exit_on_failures(console, summary["failures"], f"could not be scored (listed in {out}/failures.tsv); the "
                      "table above leaves them out")  # fmt: skip


@_command()
def prepare(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (BIDS or a known challenge layout).")],
    out: Annotated[Path, typer.Option(help="Output BIDS folder (prepared images + derivatives/gdfree-prepare).")],
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "auto",
    jobs: Annotated[int, typer.Option(help="Cases prepared in parallel (processes).")] = 1,
    reference: Annotated[str, typer.Option(help="Modality the others are registered to.")] = "FLAIR",
    spacing: Annotated[float | None, typer.Option(help="Isotropic output spacing in mm (default: kept).")] = None,
    n4: Annotated[bool, typer.Option(help="N4 bias-field correction.")] = True,
    register: Annotated[bool, typer.Option(help="Register every modality (off: images are already aligned).")] = True,
    brain_mask: Annotated[
        str, typer.Option(help="auto (provided, else deepbet on the T1w, else atlas), provided, learned or atlas.")
    ] = "auto",
    normalise: Annotated[str, typer.Option(help="none, zscore or nawm.")] = "none",
    enhancing_k: Annotated[float, typer.Option(help="Enhancing threshold in NAWM spreads of post - pre.")] = 3.0,
    enhancing_region: Annotated[str, typer.Option(help="lesion (dilated lesion mask) or brain.")] = "lesion",
    enhancing_min_volume: Annotated[float, typer.Option(help="Smallest enhancing component kept, mm3.")] = 10.0,
    cases: Annotated[str | None, typer.Option(help="Comma-separated case ids or subjects (default: all).")] = None,
    shard: Annotated[str | None, typer.Option(help=_SHARD_HELP)] = None,
) -> None:
    """Register, bias-correct, mask, normalise and derive enhancing labels for every case; skips finished cases."""
    import dataclasses

    from gdfree.io.adapters import discover
    from gdfree.io.cohort import select
    from gdfree.io.runs import parse_shard
    from gdfree.preprocess.prepare import PrepareConfig, prepare_dataset

    base = PrepareConfig()
    cfg = PrepareConfig(
        reference=reference, spacing_mm=spacing, n4=n4, register=register, brain_mask=brain_mask,
        normalise=normalise, enhancing=dataclasses.replace(
            base.enhancing, k=enhancing_k, region=enhancing_region, min_volume_mm3=enhancing_min_volume),
    )  # fmt: skip
    found = select([c for c in discover(dataset, fmt) if c.images], _split(cases), parse_shard(shard),
                   where=str(dataset))  # fmt: skip
    console = _console()
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("preparing", total=len(found))

        def report(case_id: str, status: str) -> None:
            bar.update(task, advance=1)
            bar.console.print(f"{case_id}: {status}", highlight=False)

        result = prepare_dataset(found, out, cfg, jobs=jobs, progress=report, inputs=[dataset])
    reviewed = f", review applied to {len(result.reviewed)}" if result.reviewed else ""
    console.print(f"prepared {len(result.done)}, skipped {len(result.skipped)} (done before){reviewed}, "
                  f"failed {len(result.failed)}; output in {out}")  # fmt: skip
    if result.failed:
        console.print(f"the failures and their reasons are in {out}/failures.tsv; a rerun retries them")
        raise typer.Exit(code=1)


@_command(name="to-native")
def to_native_command(
    predictions: Annotated[Path, typer.Argument(help="A gdfree predict output folder.")],
    prepared: Annotated[Path, typer.Option(help="The gdfree prepare output the predictions were made on.")],
    out: Annotated[Path, typer.Option(help="New folder for the maps on the acquired grids.")],
    role: Annotated[str | None, typer.Option(help="Acquired image whose grid to use (default: the reference).")] = None,
) -> None:
    """Map predicted probabilities, masks and label maps back onto each exam's acquired grid (space-orig)."""
    from gdfree.preprocess.native import outputs_to_native

    rows = outputs_to_native(predictions, prepared, out, role)
    failed = [r for r in rows if r["error"]]
    _console().print(f"mapped {len(rows) - len(failed)} files onto their acquired grids into {out} (native.tsv)")
    _exit_on_failures(_console(), {r["source"]: r["error"] for r in failed}, "could not be mapped")


@_command(name="import")
def import_command(
    src: Annotated[Path, typer.Argument(help="Dataset folder in a known layout (see --format), or DICOM files.")],
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder for the BIDS dataset.")],
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP + " dicom: DICOM series via dcm2niix.")] = "auto",
    rules: Annotated[
        Path | None, typer.Option(help="DICOM series -> role rule file (YAML; default: gdfree dicom-rules).")
    ] = None,
) -> None:
    """Convert a challenge dataset (or any layout gdfree reads, or DICOM) to BIDS, with masks as derivatives."""
    from gdfree.io.dicom import import_dicom, is_dicom_folder
    from gdfree.io.importer import import_dataset

    if fmt == "dicom" or (fmt == "auto" and Path(src).is_dir() and is_dicom_folder(src)):
        rows = import_dicom(src, dest, rules)
        done = [r for r in rows if r["role"]]
        console = _console()
        for r in rows:
            console.print(f"series {r['series']} {r['description']!r}: "
                          f"{r['role'] + ' -> ' + r['destination'] if r['role'] else 'not imported'} ({r['why']})",
                          highlight=False, markup=False)  # fmt: skip
        exams = {(r["subject"], r["session"]) for r in done}
        console.print(f"imported {len(done)} of {len(rows)} series, {len(exams)} exams, into {dest} (import.tsv)")
        return
    if rules is not None:
        raise ValueError("--rules applies to DICOM input only")
    rows = import_dataset(src, dest, fmt)
    cases = {r["case"] for r in rows}
    _console().print(f"imported {len(rows)} files of {len(cases)} cases into {dest} (sources listed in import.tsv)")


@_command(name="dicom-rules")
def dicom_rules_command() -> None:
    """Print the default DICOM series -> role rules (copy, edit, pass to gdfree import --rules)."""
    from gdfree.io.dicom import DEFAULT_RULES

    typer.echo(DEFAULT_RULES.read_text(encoding="utf-8"), nl=False)


@_command(name="train")
def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); see gdfree.train.config.")],
    out: Annotated[Path, typer.Option(help="Run folder (new, or the one to --resume).")],
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from its last checkpoint.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    max_steps: Annotated[int | None, typer.Option(help="Override max_steps.")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Override time_budget_s (seconds).")] = None,
    init: Annotated[
        Path | None, typer.Option(help="Start from the weights of this trained run folder (overrides init).")
    ] = None,
    nproc: Annotated[
        int, typer.Option(help="Training processes on this machine (torchrun + DDP; Gloo on CPU, NCCL on GPUs).")
    ] = 1,
) -> None:
    """Train the multitask network (enhancing + lesion heads) on the datasets of CONFIG. Under torchrun (several
    machines) each process runs this command; the global batch_size is split over them."""
    import dataclasses
    import os

    if nproc < 1:
        raise _fail(f"--nproc: expected 1 or more processes, got {nproc}")

    from gdfree.config import load_config
    from gdfree.io.runs import check_output_folder
    from gdfree.train import TrainConfig, train

    cfg = load_config(TrainConfig, config)
    overrides: dict[str, Any] = {}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if time_budget is not None:
        overrides["time_budget_s"] = time_budget
    if init is not None:
        overrides["init"] = str(init)
    cfg = dataclasses.replace(cfg, **overrides)
    check_output_folder(out, [d.path for d in cfg.datasets] + ([cfg.init] if cfg.init else []))
    device = check_device(device)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # this process launches torchrun, which runs us again
        from gdfree.train.distributed import check_distributable, launch, train_argv

        check_distributable(cfg, nproc)

        options = {"--device": device, "--max-steps": max_steps, "--time-budget": time_budget, "--init": init}
        code = launch(nproc, train_argv(config, out, resume, options))
        if code:
            raise _fail(f"training in {nproc} processes failed (exit code {code}; their messages are above)")
        return
    summary = train(cfg, out, device=device, resume=resume, console=_console())
    if os.environ.get("RANK", "0") != "0":
        return
    val = summary["validation"]
    _console().print(
        f"Trained {summary['steps']} steps in {summary['seconds']:.0f} s; kept the {summary['kept']} checkpoint "
        f"(step {summary['kept_step']}), validation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
        + f"; threshold {summary['threshold']}. Model in {out}"
    )


@_command()
def activity(
    data: Annotated[list[Path], typer.Option(help="Dataset with lesion and enhancing masks (repeat the option).")],
    out: Annotated[Path, typer.Option(help="Folder for activity.json + activity_model.txt.")],
    model: Annotated[
        Path | None, typer.Option(help="Trained run whose probability maps add features (not trained on DATA).")
    ] = None,
    modalities: Annotated[str, typer.Option(help="Comma-separated inputs, in the model's order.")] = "T1w,T2w,FLAIR",
    val_fraction: Annotated[float, typer.Option(help="Patients that calibrate and set the threshold.")] = 0.2,
    test_fraction: Annotated[float, typer.Option(help="Patients left out (listed in activity.json).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the split and the booster.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Fit the lesion-level activity classifier (gradient boosting on each lesion's intensity, texture and shape
    features) on training patients, calibrated on validation patients; use it with predict --activity."""
    from gdfree.activity import ActivityConfig, fit_activity_dataset
    from gdfree.io.runs import check_output_folder
    from gdfree.train.config import SplitConfig

    check_output_folder(out, [*data, *([model] if model else [])])
    clf = fit_activity_dataset(data, out, modalities=_split(modalities) or (), cfg=ActivityConfig(seed=seed),
                               split=SplitConfig(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed),
                               network=model, device=check_device(device))  # fmt: skip
    val = clf.meta["validation"]
    _console().print(f"Activity classifier in {out}: validation lesion AUC {val['lesion_auc'] or float('nan'):.3f}, "
                     f"F1 {val['lesion_f1']:.3f} at p_active >= {clf.threshold:.2f} ({val['n_lesions']} lesions, "
                     f"{val['n_active']} active, {val['n_patients']} patients)")  # fmt: skip


@_command()
def predict(
    model: Annotated[Path, typer.Option(help="Training run folder (model.safetensors + model.json).")],
    input: Annotated[Path, typer.Option("--input", help="Dataset folder, or one sub-X or sub-X/ses-Y folder in it.")],
    out: Annotated[Path, typer.Option(help="Output derivative folder.")],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "auto",
    allow_training_cases: Annotated[
        bool, typer.Option(help="Predict cases whose inputs the model was trained or validated on.")
    ] = False,
    mc: Annotated[int, typer.Option(help="MC dropout passes (0: one deterministic pass).")] = 0,
    flips: Annotated[bool, typer.Option(help="Average the 8 mirrorings of each exam (test-time flips).")] = False,
    ensemble: Annotated[
        list[Path] | None, typer.Option(help="Another run folder to ensemble with MODEL (repeat the option).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the MC dropout masks.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the outputs of another model or other options found in OUT.")
    ] = False,
    activity: Annotated[
        Path | None, typer.Option(help="Activity classifier folder (gdfree activity): p_active of every lesion.")
    ] = None,
    engine: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime on the CPU; not with --mc).")] = "torch",
    shard: Annotated[str | None, typer.Option(help=_SHARD_HELP)] = None,
    mc_layers: Annotated[
        str, typer.Option(help="all dropout layers sample (as trained), or only the last (about one pass's cost).")
    ] = "all",
) -> None:
    """Predict enhancing-lesion probabilities, masks, lesion tables and activity scores from pre-contrast MRI;
    with --mc, --flips or --ensemble also voxel, lesion and patient uncertainty. A case that fails is listed
    in OUT/failures.tsv and the others go on (exit code 1); a rerun skips the finished cases."""
    from gdfree.io.runs import parse_shard
    from gdfree.predict import predict_dataset

    device = check_device(device)
    rows = predict_dataset(model, input, out, device=device, fmt=fmt, allow_training_cases=allow_training_cases,
                           ensemble=ensemble or (), mc=mc, flips=flips, seed=seed, overwrite=overwrite,
                           activity=activity, engine=engine, shard=parse_shard(shard),
                           mc_layers=mc_layers)  # fmt: skip
    failed = [r for r in rows if r.get("status") == "failed"]
    active = sum(bool(r.get("predicted_active")) for r in rows)
    console = _console()
    console.print(f"Predicted {len(rows) - len(failed)} cases into {out}: {active} with predicted enhancing "
                  "lesions.")  # fmt: skip
    _exit_on_failures(console, {r["case_id"]: r["reason"] for r in failed},
                      f"failed (listed in {out}/failures.tsv); rerun to retry them")  # fmt: skip


@_command()
def explain(
    model: Annotated[Path, typer.Option(help="Training run folder (model.safetensors + model.json).")],
    case: Annotated[Path, typer.Option(help="Dataset folder, or one sub-X or sub-X/ses-Y folder in it.")],
    out: Annotated[Path, typer.Option(help="Output folder (tables, charts, NIfTI maps, PNG overlays).")],
    lesion: Annotated[int | None, typer.Option(help="Map only this lesion id (see OUT/lesions.tsv).")] = None,
    all_lesions: Annotated[bool, typer.Option(help="Map every lesion (default: the most probable per case).")] = False,
    max_mapped: Annotated[
        int, typer.Option(help="With --all-lesions: map at most N lesions per group and case (0: all).")
    ] = 0,
    lesions: Annotated[
        str,
        typer.Option(
            help="Which lesions: 'predicted' (the model's), 'reference' (the case's enhancing label) or "
            "'lesion-mask' (every lesion of the case's all-lesion mask)."
        ),
    ] = "predicted",
    methods: Annotated[
        str, typer.Option(help="Maps, comma-separated: ig, occlusion, gradcam.")
    ] = "ig,occlusion,gradcam",
    occlusions: Annotated[
        str, typer.Option(help="Modality replacements: mean, zeros, noise, blur.")
    ] = "mean,zeros,noise,blur",
    crop: Annotated[int, typer.Option(help="Cube around each mapped lesion, in voxels.")] = 48,
    steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 32,
    layer: Annotated[
        str | None, typer.Option(help="Grad-CAM layer (dotted name; default: the last decoder block).")
    ] = None,
    permutation: Annotated[bool, typer.Option(help="Permutation importance across the cases (one grid).")] = True,
    sanity: Annotated[bool, typer.Option(help="Parameter-randomisation check of each map.")] = True,
    label_randomised: Annotated[
        Path | None, typer.Option(help="A run trained with randomise_labels: true, for the label-randomisation check.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    seed: Annotated[
        int, typer.Option(help="Seed of noise occlusion, permutations, randomised weights, bootstrap.")
    ] = 0,
    allow_training_cases: Annotated[bool, typer.Option(help="Explain cases the model was trained on.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an explanation made with another model or other options in OUT.")
    ] = False,
) -> None:
    """Why the model predicts enhancement: modality importance (occlusion, permutation, integrated gradients)
    with patient-bootstrap CIs, signed attribution maps per lesion (integrated gradients, occlusion,
    Seg-Grad-CAM), lesion-centred profiles and randomisation sanity checks."""
    from gdfree.explain import explain_dataset

    split = [m.strip() for m in methods.split(",") if m.strip()]
    modes = [m.strip() for m in occlusions.split(",") if m.strip()]
    result = explain_dataset(model, case, out, lesion=lesion, all_lesions=all_lesions, max_mapped=max_mapped,
                             source=lesions,
                             methods=split, occlusions=modes, permutation=permutation, crop=crop, steps=steps,
                             layer=layer, sanity=sanity, label_randomised=label_randomised, seed=seed,
                             device=check_device(device), allow_training_cases=allow_training_cases,
                             overwrite=overwrite)  # fmt: skip
    from rich.table import Table

    console = _console()
    for key, title in (("summary", "Modality importance"), ("separation", "Separation (active minus inactive)")):
        if not result[key]:
            continue
        table = Table(title=f"{title}, {len(result['lesions'])} {lesions} lesions")
        for name in ("group", "method", "modality", "rank", "mean", "95% CI", "lesions"):
            table.add_column(name)
        for r in result[key]:
            table.add_row(r["group"], r["method"], r["modality"], str(r["rank"]), f"{r['mean']:.3f}",
                          f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", str(r["lesions"]))  # fmt: skip
        console.print(table)
    checks = result["sanity"]
    if checks:
        passed = sum(c["passed"] for c in checks)
        console.print(f"Randomisation checks passed: {passed}/{len(checks)} (rank correlation < 0.3).")
    console.print(f"Everything is in {out} ({result['timings']['total_s']:.0f} s).")
    _exit_on_failures(console, result["failures"], f"could not be explained (listed in {out}/failures.tsv)")


@_command()
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

    console = _console()
    if repeats < 1:
        raise ValueError(f"--repeats: expected 1 or more, got {repeats}")
    check_output_folder(out, [p for p in (model, input) if p is not None])
    report = run_bench(out, model=model, dataset=input, case_id=case, repeats=repeats, training=training,
                       progress=lambda what: console.print(f"measuring {what} ...", highlight=False))  # fmt: skip
    from gdfree.bench import markdown

    console.print(markdown(report), highlight=False, markup=False)


@_command()
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
    fmt: Annotated[str, typer.Option("--format", help=_FORMAT_HELP)] = "auto",
    viewer: Annotated[bool, typer.Option(help="Embed the NiiVue viewer (bundled by `make`).")] = True,
) -> None:
    """Write HTML reports that open offline: a cohort page (from --evaluation) and a page per predicted case
    (activity score, viewer, sortable lesion tables, mosaics, explain, input QC). A case whose page fails is
    listed on the cohort page and the others go on (exit code 1)."""
    from gdfree.report import write_reports

    console = _console()
    result = write_reports(
        out, predictions=predictions, dataset=input, evaluation=evaluation, explain=explain,
        case_ids=_split(cases), fmt=fmt, viewer=viewer,
        progress=lambda case_id, status: console.print(f"{case_id}: {status}", highlight=False, markup=False),
    )  # fmt: skip
    console.print(f"Cohort report: {result.index}", highlight=False, markup=False, soft_wrap=True)
    if result.cases:
        console.print(f"{len(result.cases)} case report(s), e.g. {next(iter(result.cases.values()))}",
                      highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    _exit_on_failures(console, result.failures, "have no report (listed on the cohort page)")


@_command()
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
        run_pretrained_demo(out, subjects=subjects, seed=seed, jobs=jobs, console=_console())
    else:
        run_demo(out, subjects=subjects, seed=seed, jobs=jobs, steps=steps, console=_console())


def main() -> None:
    """Run the app; an error no command anticipated is reported in one line (exit 3), never as a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as exc:  # a full disk, a read-only folder, a vanished file
        _fail(f"{exc.filename or ''} {exc.strerror or exc}".strip())
        raise SystemExit(2) from None
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {exc}; please report it with the command that raised it")
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()

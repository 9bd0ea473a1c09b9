"""Commands over datasets and images: synth, info, import, dicom-rules, prepare, pair, to-native."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gdfree.cli.common import FORMAT_HELP, SHARD_HELP, account, command, exit_on_failures, new_console, split


@command()
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
    timepoints: Annotated[
        int, typer.Option(help="2: a prior ses-1 and a follow-up ses-2 per subject, with new/enlarging truth.")
    ] = 1,
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
        overrides["signature_modalities"] = split(signature_modalities)
    if randomise is not None:
        overrides["domain_randomisation"] = dataclasses.replace(cfg.domain_randomisation, enabled=randomise)
    cfg = dataclasses.replace(cfg, **overrides)
    rows = _run_synth(out, cfg, subjects, seed, jobs, overwrite, first, timepoints)
    _print_cohort(rows, out)


def _run_synth(
    out: Path, cfg: Any, subjects: int, seed: int, jobs: int, overwrite: bool, first: int = 0, timepoints: int = 1
) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gdfree.phantom.cohort import write_cohort

    with Progress(
        TextColumn("synthesising"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=new_console()
    ) as bar:
        task = bar.add_task("synth", total=subjects)
        return write_cohort(
            out, cfg, subjects, seed, jobs=jobs, overwrite=overwrite, first=first, timepoints=timepoints,
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
    console = new_console()
    console.print(table)
    n_active_patients = sum(r["n_active"] > 0 for r in rows)
    console.print(
        f"{len(rows)} subjects, {sum(r['n_lesions'] for r in rows)} lesions, "
        f"{sum(r['n_active'] for r in rows)} active; {n_active_patients} patients with active disease, "
        f"{len(rows) - n_active_patients} without."
    )


@command()
def info(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (BIDS or a known challenge layout).")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    required: Annotated[str, typer.Option(help="Comma-separated modalities every case needs.")] = "T1w,T2w,FLAIR",
    quick: Annotated[bool, typer.Option(help="Read the headers only (no check of the voxels).")] = False,
) -> None:
    """List the cases of a dataset: modalities, labels, grids and the problems found (exit 1 if a case is
    unusable: an unreadable or invalid file, a missing modality; images on different grids are reported
    but usable, as prepare registers them)."""
    from gdfree.io.report import describe_dataset, print_report

    rows = describe_dataset(dataset, fmt, split(required) or (), quick=quick)
    console = new_console()
    print_report(rows, dataset, console)
    if account(console, dataset, fmt, None) or any(r.unusable for r in rows):
        raise typer.Exit(code=1)


@command(name="import")
def import_command(
    src: Annotated[Path, typer.Argument(help="Dataset folder in a known layout (see --format), or DICOM files.")],
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder for the BIDS dataset.")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP + " dicom: DICOM series via dcm2niix.")] = "auto",
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
        console = new_console()
        for r in rows:
            console.print(f"series {r['series']} {r['description']!r}: "
                          f"{r['role'] + ' -> ' + r['destination'] if r['role'] else 'not imported'} ({r['why']})",
                          highlight=False, markup=False)  # fmt: skip
        exams = {(r["subject"], r["session"]) for r in done}
        unconverted = [r for r in rows if str(r["why"]).startswith("dcm2niix")]
        series = len(rows) - len(unconverted)
        console.print(f"imported {len(done)} of {series} series, {len(exams)} exams, into {dest} (import.tsv)")
        if unconverted:
            console.print(f"{len(unconverted)} problems of dcm2niix (files not converted; listed above and in "
                          f"{dest}/import.tsv)", highlight=False, markup=False)  # fmt: skip
            raise typer.Exit(code=1)
        return
    if rules is not None:
        raise ValueError("--rules applies to DICOM input only")
    rows = import_dataset(src, dest, fmt)
    cases = {r["case"] for r in rows}
    new_console().print(f"imported {len(rows)} files of {len(cases)} cases into {dest} (sources listed in import.tsv)")


@command(name="dicom-rules")
def dicom_rules_command() -> None:
    """Print the default DICOM series -> role rules (copy, edit, pass to gdfree import --rules)."""
    from gdfree.io.dicom import DEFAULT_RULES

    typer.echo(DEFAULT_RULES.read_text(encoding="utf-8"), nl=False)


@command()
def prepare(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (BIDS or a known challenge layout).")],
    out: Annotated[Path, typer.Option(help="Output BIDS folder (prepared images + derivatives/gdfree-prepare).")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
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
    shard: Annotated[str | None, typer.Option(help=SHARD_HELP)] = None,
) -> None:
    """Register, bias-correct, mask, normalise and derive enhancing labels for every case; skips finished cases."""
    import dataclasses

    from gdfree.io.adapters import discover
    from gdfree.io.cohort import select
    from gdfree.io.runs import parse_shard
    from gdfree.preprocess.brain import BrainMaskPolicy
    from gdfree.preprocess.prepare import PrepareConfig, prepare_dataset

    base = PrepareConfig()
    cfg = PrepareConfig(
        reference=reference, spacing_mm=spacing, n4=n4, register=register, brain_mask=BrainMaskPolicy.parse(brain_mask),
        normalise=normalise, enhancing=dataclasses.replace(
            base.enhancing, k=enhancing_k, region=enhancing_region, min_volume_mm3=enhancing_min_volume),
    )  # fmt: skip
    discovered = discover(dataset, fmt)
    found = select([c for c in discovered if c.images], split(cases), parse_shard(shard), where=str(dataset))
    console = new_console()
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
    dropped = account(console, dataset, fmt, out, cases=discovered) if cases is None else 0
    for case_id, n in result.unmatched_review.items():
        console.print(f"{case_id}: {n} row(s) of its review match no enhancing candidate within 3 mm (listed under "
                      "enhancing.review.unmatched in its _prepare.json): fix their positions or remove them",
                      highlight=False, markup=False)  # fmt: skip
    if result.failed:
        console.print(f"the failures and their reasons are in {out}/failures.tsv; a rerun retries them")
    if result.failed or dropped or result.unmatched_review:
        raise typer.Exit(code=1)


@command(name="to-native")
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
    new_console().print(f"mapped {len(rows) - len(failed)} files onto their acquired grids into {out} (native.tsv)")
    exit_on_failures(new_console(), {r["source"]: r["error"] for r in failed}, "could not be mapped")


@command()
def pair(
    input: Annotated[Path, typer.Option("--input", help="Dataset folder with ses-* sessions, or one sub-X folder.")],
    out: Annotated[Path, typer.Option(help="Output derivative folder (prior-exam images per follow-up).")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
) -> None:
    """Pair each ses-* of a subject with the session before it: per follow-up, the transform, the prior FLAIR
    registered and intensity-matched onto it and the FLAIR difference in noise units (the inputs of a model
    trained with prior-exam channels: a dataset's `pairs` in the training config), and OUT/pairs.tsv. A pair that
    fails is listed and the others go on (exit 1)."""
    from gdfree.io.bids import dataset_description
    from gdfree.io.runs import check_output_folder
    from gdfree.io.tables import write_json
    from gdfree.predict import dataset_root, select_cases
    from gdfree.preprocess.pair_files import write_pairs

    out = check_output_folder(out, [dataset_root(input)])
    rows = write_pairs(out, select_cases(input, fmt))
    write_json(out / "dataset_description.json", dataset_description("gdfree pair", "derivative",
               GeneratedBy=[{"Name": "gdfree pair"}]))  # fmt: skip
    console = new_console()
    bad = {f"sub-{r['subject']} ses-{r['prior']} -> ses-{r['followup']}": r["reason"] for r in rows
           if r["status"] == "failed"}  # fmt: skip
    flagged = sum(bool(r["reason"]) for r in rows if r["status"] == "ok")
    console.print(f"Paired {len(rows) - len(bad)} follow-up sessions with their prior into {out} ({flagged} flagged "
                  "by the correlation or coverage check; OUT/pairs.tsv).")  # fmt: skip
    exit_on_failures(console, bad, "could not be paired (listed in OUT/pairs.tsv)")

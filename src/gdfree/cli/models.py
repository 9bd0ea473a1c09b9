"""Commands over models: train, activity, predict, explain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gdfree.cli.common import FORMAT_HELP, SHARD_HELP, account, command, exit_on_failures, fail, new_console, split
from gdfree.devices import check_device


@command(name="train")
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
    """Train the multitask network (enhancing and lesion heads; new, t1gd optional) on the datasets of CONFIG.
    Under torchrun (several machines) each process runs this command; the global batch_size is split over them."""
    import dataclasses
    import os

    if nproc < 1:
        raise fail(f"--nproc: expected 1 or more processes, got {nproc}")

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
            raise fail(f"training in {nproc} processes failed (exit code {code}; their messages are above)")
        return
    summary = train(cfg, out, device=device, resume=resume, console=new_console())
    if os.environ.get("RANK", "0") != "0":
        return
    val = summary["validation"]
    new_console().print(
        f"Trained {summary['steps']} steps in {summary['seconds']:.0f} s; kept the {summary['kept']} checkpoint "
        f"(step {summary['kept_step']}), validation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
        + f"; threshold {summary['threshold']}. Model in {out}"
    )


@command()
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
    feature_reference: Annotated[str, typer.Option(
        help="Intensity features in the network's normalisation ('network') or as ratios to the case's white "
             "matter ('white-matter': real and phantom lesions on one scale).")] = "network",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
) -> None:  # fmt: skip
    """Fit the lesion-level activity classifier (gradient boosting on each lesion's intensity, texture and shape
    features) on training patients, calibrated on validation patients; use it with predict --activity."""
    from gdfree.activity import ActivityConfig, fit_activity_dataset
    from gdfree.io.runs import check_output_folder
    from gdfree.train.config import SplitConfig

    check_output_folder(out, [*data, *([model] if model else [])])
    try:
        cfg = ActivityConfig(seed=seed, feature_reference=feature_reference)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--feature-reference") from exc
    clf = fit_activity_dataset(data, out, modalities=split(modalities) or (), cfg=cfg,
                               split=SplitConfig(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed),
                               network=model, device=check_device(device))  # fmt: skip
    val = clf.meta["validation"]
    new_console().print(f"Activity classifier in {out}: validation lesion AUC {val['lesion_auc'] or float('nan'):.3f}, "
                     f"F1 {val['lesion_f1']:.3f} at p_active >= {clf.threshold:.2f} ({val['n_lesions']} lesions, "
                     f"{val['n_active']} active, {val['n_patients']} patients)")  # fmt: skip


@command()
def predict(
    model: Annotated[Path, typer.Option(help="Training run folder (model.safetensors + model.json).")],
    input: Annotated[Path, typer.Option("--input", help="Dataset folder, or one sub-X or sub-X/ses-Y folder in it.")],
    out: Annotated[Path, typer.Option(help="Output derivative folder.")],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
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
    shard: Annotated[str | None, typer.Option(help=SHARD_HELP)] = None,
    mc_layers: Annotated[
        str, typer.Option(help="all dropout layers sample (as trained), or only the last (about one pass's cost).")
    ] = "all",
    precision: Annotated[
        str,
        typer.Option(help="fp32; fp32-cl (float32 in channels-last layout: faster on a CPU, summed in another "
                          "order); bf16 (bfloat16 autocast: the CPU's matrix units); auto (bf16 where the device has "
                          "it, else fp32-cl on a CPU)."),
    ] = "fp32",
    prior: Annotated[
        bool, typer.Option(help="Compare each ses-* with the subject's session before it: new and enlarging lesions.")
    ] = False,
) -> None:
    """Predict enhancing-lesion probabilities, masks, lesion tables and activity scores from pre-contrast MRI;
    with --mc, --flips or --ensemble also voxel, lesion and patient uncertainty. A case that fails is listed
    in OUT/failures.tsv and the others go on (exit code 1); a rerun skips the finished cases."""
    from gdfree.io.runs import parse_shard
    from gdfree.io.tables import read_json
    from gdfree.predict import dataset_root, predict_dataset

    device = check_device(device)
    pairs = _pair_before(model, input, out, fmt, shard) if prior else []
    rows = predict_dataset(model, input, out, device=device, fmt=fmt, allow_training_cases=allow_training_cases,
                           ensemble=ensemble or (), mc=mc, flips=flips, seed=seed, overwrite=overwrite,
                           activity=activity, engine=engine, shard=parse_shard(shard), mc_layers=mc_layers,
                           precision=precision, pairs=out if prior else None)  # fmt: skip
    failed = [r for r in rows if r.get("status") == "failed"]
    active = sum(bool(r.get("predicted_active")) for r in rows)
    console = new_console()
    console.print(f"Predicted {len(rows) - len(failed)} cases into {out}: {active} called active (patient "
                  "score at or above the model's patient threshold).")  # fmt: skip
    if not prior and "priorFLAIR" in read_json(model / "model.json").get("modalities", ()):
        console.print("The model reads a prior exam; without --prior every exam was predicted as having none.")
    if prior:
        from gdfree.predict import select_cases
        from gdfree.predict.changes import write_changes

        pairs = write_changes(out, select_cases(input, fmt), pairs)
        bad = {f"sub-{p['subject']} ses-{p['prior']} -> ses-{p['followup']}": p["reason"] for p in pairs
               if p["status"] == "failed"}  # fmt: skip
        console.print(f"Compared {len(pairs) - len(bad)} session pairs with their prior (OUT/pairs.tsv): "
                      f"{sum(p.get('n_new', 0) for p in pairs)} new and {sum(p.get('n_enlarging', 0) for p in pairs)} "
                      "enlarging lesions.")  # fmt: skip
        failed += [{"case_id": k, "reason": v} for k, v in bad.items()]
    root = dataset_root(input)
    dropped = account(console, root, fmt, out, within=None if root == input else input)
    exit_on_failures(console, {r["case_id"]: r["reason"] for r in failed},
                      f"failed (listed in {out}/failures.tsv or pairs.tsv); rerun to retry them")  # fmt: skip
    if dropped:
        raise typer.Exit(code=1)


def _pair_before(model: Path, input: Path, out: Path, fmt: str, shard: str | None) -> list[dict[str, Any]]:
    """Pair every follow-up session of this shard of INPUT with its prior into OUT, before prediction (a model
    with prior-exam channels reads them; pairs.tsv gets the changes after)."""
    from gdfree.io.cohort import select
    from gdfree.io.runs import check_output_folder, parse_shard
    from gdfree.predict import dataset_root, select_cases
    from gdfree.preprocess.pair_files import write_pairs

    check_output_folder(out, [dataset_root(input), model])
    cases = select_cases(input, fmt)
    mine = {c.case_id for c in select(cases, None, parse_shard(shard), where=str(input))}
    return write_pairs(out, cases, followups=mine)


@command()
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

    console = new_console()
    for key, title in (("summary", "Modality importance"), ("separation", "Separation (active minus inactive)")):
        if not getattr(result, key):
            continue
        table = Table(title=f"{title}, {len(result.lesions)} {lesions} lesions")
        for name in ("group", "method", "modality", "rank", "mean", "95% CI", "lesions"):
            table.add_column(name)
        for r in getattr(result, key):
            table.add_row(r["group"], r["method"], r["modality"], str(r["rank"]), f"{r['mean']:.3f}",
                          f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", str(r["lesions"]))  # fmt: skip
        console.print(table)
    checks = result.sanity
    if checks:
        passed = sum(c["passed"] for c in checks)
        console.print(f"Randomisation checks passed: {passed}/{len(checks)} (rank correlation < 0.3).")
    console.print(f"Everything is in {out} ({result.timings['total_s']:.0f} s).")
    exit_on_failures(console, result.failures, f"could not be explained (listed in {out}/failures.tsv)")

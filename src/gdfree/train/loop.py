"""The training loop: gather cases, split by patient, sample patches, step, validate, checkpoint, resume.

Pure pieces (sampling, losses, validation metrics) live in their modules; this file only orchestrates.
Run folder::

    config.yaml      the resolved config            split.json     patients and cases per part
    log.tsv          loss / lr / validation rows    model.*        the kept checkpoint (``keep``: last or best)
    best.*           best validation score          last.*         last checkpoint; with last_optim.pt and
                                                                   last_state.json (optimiser, RNG, step) for --resume
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdfree.config import config_to_dict, load_config, save_config
from gdfree.data.cases import ArrayCase, file_fingerprints, load_array_case
from gdfree.data.loader import PriorDropout, batch_stream
from gdfree.data.pair_artefacts import PairArtefacts
from gdfree.data.sampling import PatchSampler, dataset_case_weights
from gdfree.data.translation import (
    TRANSLATION_HEAD,
)
from gdfree.io.bids import CaseFiles
from gdfree.io.images import atomic_path
from gdfree.io.tables import write_json, write_tsv
from gdfree.metrics.lesions import DetectionRule
from gdfree.models.checkpoint import load_model, save_model
from gdfree.models.record import ModelRecord
from gdfree.models.unet import MultitaskUNet
from gdfree.train.config import TrainConfig
from gdfree.train.distributed import agree, barrier, gather, join, on_cuda, on_main, parameter_digest, world
from gdfree.train.records import checkpoint_record, record_base
from gdfree.train.splits import derangement, split_patients
from gdfree.train.step import LossSpec, train_step
from gdfree.train.translation import Adversary
from gdfree.train.validation import calibrate, validate
from gdfree.types import exam_roles

__all__ = ["gather_cases", "randomise_labels", "train"]


def randomise_labels(cases: Sequence[ArrayCase], head: str, seed: int) -> None:
    """Give every case the ``head`` label of another case (a seeded derangement), in place.

    Raises:
        ValueError: fewer than 2 cases, a case without that label, or cases on different grids.
    """
    if len(cases) < 2 or any(c.labels.get(head) is None for c in cases):
        raise ValueError(f"randomise_labels: needs >= 2 cases that all have a {head} label")
    shapes = {c.brain.shape for c in cases}
    if len(shapes) > 1:
        raise ValueError(f"randomise_labels: the cases must share one grid, got shapes {sorted(shapes)}")
    order = derangement(len(cases), np.random.default_rng([seed, 7]))
    labels = [c.labels[head] for c in cases]
    for case, k in zip(cases, order, strict=True):
        case.labels[head] = labels[int(k)]


def gather_cases(cfg: TrainConfig) -> list[tuple[int, CaseFiles]]:
    """(dataset index, case) for every case of the configured datasets that has all input modalities (the
    prior-exam ones where the dataset's ``pairs`` folder has them)."""
    from gdfree.io.adapters import discover
    from gdfree.io.bids import attach_pairs

    found = []
    for d, spec in enumerate(cfg.datasets):
        cases = discover(spec.path, spec.format)
        for case in attach_pairs(cases, spec.pairs) if spec.pairs else cases:
            if not case.missing(exam_roles(cfg.modalities)):
                found.append((d, case))
    if not found:
        raise ValueError(f"no case with all of {', '.join(cfg.modalities)} in {[s.path for s in cfg.datasets]}")
    return found


def _synthesiser(
    cfg: TrainConfig, run_dir: Path, train_cases: list[ArrayCase], val_cases: list[ArrayCase], console: Any
) -> Any:
    """The generator of ``cfg.generative`` trained on the training cases (None when off); its losses and its
    quality on the validation patients go to ``generator_log.tsv`` and ``generator_quality.json``, its weights
    to ``generator.safetensors`` (rebuild with :func:`gdfree.data.generative.build_generator`). A resumed run
    trains it again (the same seed gives the same generator)."""
    if cfg.generative.kind == "none":
        return None
    from gdfree.data.generative import fit_synthesiser

    if console is not None:
        console.print(f"training the {cfg.generative.kind} generator ({cfg.generative.steps} steps) ...")
    synthesiser, losses, report = fit_synthesiser(cfg.generative, train_cases, val_cases, cfg.modalities, cfg.heads,
                                                  cfg.seed)  # fmt: skip
    from safetensors.torch import save_file

    write_tsv(run_dir / "generator_log.tsv", [{"step": i + 1, **row} for i, row in enumerate(losses)])
    with atomic_path(run_dir / "generator.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in synthesiser.model.state_dict().items()}, str(tmp),
                  metadata={"kind": cfg.generative.kind, "channels": str(len(cfg.modalities))})  # fmt: skip
    if report is not None:
        write_json(run_dir / "generator_quality.json", report)
    return synthesiser


def _sampler(cfg: TrainConfig, cases: list[ArrayCase]) -> PatchSampler:
    """The patch sampler over the training cases, each dataset drawn by its ``share``, with the prior-exam
    channels' dropout and artefacts when the model has those channels."""
    weights = dataset_case_weights([c.dataset for c in cases], [d.share for d in cfg.datasets])
    sampler = PatchSampler(cases, cfg.heads, cfg.patch_size, cfg.sampling, weights)
    sampler.prior_dropout = PriorDropout.for_inputs(cfg.prior_dropout, cfg.modalities, cfg.heads)
    sampler.pair_artefacts = PairArtefacts.for_inputs(cfg.pair_artefacts, cfg.modalities)
    return sampler


def _schedule(cfg: TrainConfig) -> Any:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


_RESUMABLE = ("max_steps", "time_budget_s", "workers", "amp", "cache")


_STARTED_ONLY = {"config.yaml", "split.json"}
"""What a run writes before its first checkpoint: a folder holding only these has nothing trained to lose."""


def _prepare_run(cfg: TrainConfig, run_dir: Path, resume: bool) -> bool:
    """Check or create the run folder; returns whether to resume from its last checkpoint. A run that stopped
    before its first checkpoint (killed, or a config error) holds nothing trained: it restarts from step 0,
    with or without ``--resume`` and with a corrected config."""
    started_only = run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= _STARTED_ONLY
    if resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"{run_dir}: no run to resume (no config.yaml); train into it without --resume")
        before, now = config_to_dict(load_config(TrainConfig, saved)), config_to_dict(cfg)
        changed = sorted(k for k in now if now[k] != before.get(k) and k not in _RESUMABLE)
        if changed and not started_only:
            raise ValueError(
                f"{saved}: the run was started with another config ({', '.join(changed)} differ); resume may only "
                f"change {' and '.join(_RESUMABLE)}"
            )
        save_config(cfg, saved)
        return (run_dir / "last_state.json").is_file()
    if run_dir.exists() and any(run_dir.iterdir()) and not started_only:
        raise FileExistsError(f"{run_dir}: not empty; choose a new run folder or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return False


def _load_init(
    cfg: TrainConfig, model: torch.nn.Module, kwargs: dict[str, Any], test: list[CaseFiles], device: str
) -> dict[str, str]:
    """Load the weights of ``cfg.init`` into ``model`` after checking that they fit and saw no test case."""
    source, meta = load_model(cfg.init, device)
    where = Path(cfg.init) / "model.json"
    arch = meta["architecture"]
    if arch["class"] != "MultitaskUNet" or arch["kwargs"] != kwargs:
        raise ValueError(f"{where}: init network {arch['class']}{arch['kwargs']} differs from this config's "
                         f"MultitaskUNet{kwargs}")  # fmt: skip
    for name, want in (("heads", list(cfg.heads)), ("modalities", list(cfg.modalities)), ("oracle", cfg.oracle)):
        if meta.get(name) != want:
            raise ValueError(f"{where}: init {name} {meta.get(name)!r} do not match this config's {want!r}")
    seen = set(meta.get("training_fingerprints", ()))
    for c in test:
        if any(f in seen for f in file_fingerprints(c.input_paths(cfg.modalities))):
            raise ValueError(f"test case {c.case_id}: its input files trained or validated the init model {where}; "
                             "the test set would not be held out")  # fmt: skip
    model.load_state_dict(source.state_dict())
    return {"run": str(Path(cfg.init).resolve()), "weights_sha256": meta["weights_sha256"]}


def _resume(
    run_dir: Path, model: torch.nn.Module, optimiser: Any, scheduler: Any, rng: np.random.Generator, device: str,
    rank: int = 0,
) -> tuple[int, float, list[dict[str, Any]]]:  # fmt: skip
    """Load the last checkpoint into the model, optimiser, schedule and generators (``rank``'s own numpy
    generator when the run was distributed); returns (step, best, log).

    Raises:
        ValueError: a checkpoint file is truncated or corrupt (named), with how to go on.
    """
    last, _ = load_model(run_dir, device, stem="last")
    optim_path = run_dir / "last_optim.pt"
    try:
        state = json.loads((run_dir / "last_state.json").read_text())
        extra = torch.load(optim_path, map_location=device, weights_only=True)
        model.load_state_dict(last.state_dict())
        optimiser.load_state_dict(extra["optimiser"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        ranks = state.get("numpy_rng_ranks") or [state["numpy_rng"]]
        if rank < len(ranks):  # a rank the saved run did not have starts its stream afresh
            rng.bit_generator.state = ranks[rank]
        return state["step"], state["best_score"], state["log"]
    except Exception as exc:  # json, pickle-free torch.load and state_dict errors all mean a damaged checkpoint
        raise ValueError(
            f"{run_dir}: the last checkpoint (last_state.json, {optim_path.name}) cannot be resumed "
            f"({type(exc).__name__}: {exc}); train into a new folder, or --init {run_dir} to start "
            "from its last saved model"
        ) from exc


def _adversarial(adversary: Any, cfg: TrainConfig) -> Any:
    """The adversarial term of the ``t1gd`` head as a :func:`gdfree.train.step.train_step` extra."""
    h = cfg.heads.index(TRANSLATION_HEAD)

    def extra(x: torch.Tensor, out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> Any:
        rows = mask[:, h]
        if not bool(rows.any()):
            return None
        g_adv, d_loss = adversary.step(x[rows], out[rows, h : h + 1], y[rows, h : h + 1])
        return g_adv, {"discriminator": d_loss, "t1gd_adversarial": float(g_adv.detach())}

    return extra


def _save_optimiser(run_dir: Path, optimiser: Any, scheduler: Any, adversary: Adversary | None) -> None:
    """``last_optim.pt``: what --resume needs beside the weights (written whole, then renamed)."""
    with open(run_dir / "last_optim.pt.tmp", "wb") as fh:
        torch.save({"optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    **({"discriminator": adversary.state_dict()} if adversary else {})}, fh)  # fmt: skip
    (run_dir / "last_optim.pt.tmp").replace(run_dir / "last_optim.pt")


def train(
    cfg: TrainConfig, run_dir: Path | str, *, device: str = "cpu", resume: bool = False, console: Any = None
) -> dict[str, Any]:
    """Train a model as ``cfg`` says into ``run_dir`` and return the final summary (also in ``model.json``).

    Raises:
        FileExistsError: ``run_dir`` holds something and ``resume`` is False.
        ValueError: bad config, no data, a test case sharing input files with a training case.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    place = world()
    if place.distributed:
        device = join(cfg, place, device)
        console = console if place.main else None
    run_dir = Path(run_dir)
    resume = on_main(place, lambda: _prepare_run(cfg, run_dir, resume))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, place.rank] if place.distributed else cfg.seed)
    found = gather_cases(cfg)
    key = {id(c): f"{cfg.datasets[d].path}:{c.subject}" for d, c in found}
    parts = split_patients(sorted(set(key.values())), cfg.split)
    part_of = {p: name for name, ps in parts.items() for p in ps}
    by_part: dict[str, list[tuple[int, CaseFiles]]] = {name: [] for name in parts}
    for d, c in found:
        by_part[part_of[key[id(c)]]].append((d, c))
    if place.main:
        write_json(run_dir / "split.json", {
            **{f"{k}_patients": v for k, v in parts.items()},
            **{f"{k}_cases": [f"{cfg.datasets[d].path}:{c.case_id}" for d, c in v] for k, v in by_part.items()},
        })  # fmt: skip

    def load(d: int, c: CaseFiles, heads: tuple[str, ...]) -> ArrayCase:
        if cfg.cache:  # rank 0 fills it first, so ranks never race to decompress the same case
            from gdfree.data.cache import cached_case

            return cached_case(c, cfg.modalities, heads, cache=cfg.cache, oracle=cfg.oracle, dataset=d,
                               label_sets=cfg.datasets[d].labels, normalisation=cfg.normalisation)  # fmt: skip
        return load_array_case(c, cfg.modalities, heads, oracle=cfg.oracle, dataset=d,
                               label_sets=cfg.datasets[d].labels, normalisation=cfg.normalisation)  # fmt: skip

    # a translation model's enhancing probability is calibrated on the validation cases' enhancing labels
    derived = TRANSLATION_HEAD in cfg.heads and "enhancing" not in cfg.heads
    val_heads = (*cfg.heads, "enhancing") if derived else cfg.heads

    def fill_cache() -> None:
        for part, heads in (("train", cfg.heads), ("val", val_heads)):
            for d, c in by_part[part]:
                load(d, c, heads)

    if cfg.cache and place.distributed:
        on_main(place, fill_cache)
    train_cases = [load(d, c, cfg.heads) for d, c in by_part["train"]]
    val_cases = [load(d, c, val_heads) for d, c in by_part["val"]]
    if cfg.randomise_labels:
        randomise_labels([*train_cases, *val_cases], "enhancing", cfg.seed)
    seen = {f: c.case_id for c in train_cases + val_cases for f in c.fingerprints}
    for d, c in by_part["test"]:
        shared = [seen[f] for f in file_fingerprints(c.input_paths(cfg.modalities)) if f in seen]
        if shared:
            raise ValueError(f"test case {c.case_id} of {cfg.datasets[d].path} has input files identical to "
                             f"training/validation case {shared[0]}: the test set would not be held out")  # fmt: skip

    kwargs = {"in_channels": len(cfg.modalities), "heads": list(cfg.heads), "channels": list(cfg.channels),
              "strides": list(cfg.strides), "num_res_units": cfg.num_res_units, "dropout": cfg.dropout,
              "full_res_channels": cfg.full_res_channels,
              **({"norm": cfg.norm.upper()} if cfg.norm != "instance" else {}),
              **({"dropout_site": cfg.dropout_site} if cfg.dropout_site != "decoder" else {})}  # fmt: skip
    net = MultitaskUNet(**kwargs).to(device)  # type: ignore[arg-type]
    init = _load_init(cfg, net, kwargs, [c for _, c in by_part["test"]], device) if cfg.init else None
    optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(cfg))
    rule = DetectionRule.preset("msseg")
    meta_base = record_base(cfg, kwargs, parts, sorted(seen), train_cases, init, place.size if place.distributed else 0,
                            str(device))  # fmt: skip
    step, best, log_rows = 0, -math.inf, list[dict[str, Any]]()
    if resume:
        step, best, log_rows = _resume(run_dir, net, optimiser, scheduler, rng, device, place.rank)
    model: torch.nn.Module = net
    if place.distributed:  # DDP copies rank 0's weights to every rank; dropout then differs by rank
        # a head no sample of the global batch carries leaves its parameters without a gradient
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if on_cuda(device) else None,
                                                          find_unused_parameters=True)  # fmt: skip
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, place.rank, step]).generate_state(1)[0]))

    sampler = _sampler(cfg, train_cases)
    synthesiser = _synthesiser(cfg, run_dir, train_cases, val_cases, console)
    t1 = list(cfg.modalities).index("T1w") if "T1w" in cfg.modalities else None
    if cfg.lesion_sim.probability > 0:  # new lesions go into white matter when there is a T1w channel
        sampler.prepare_lesion_simulation(t1, synthesiser.label_maps if synthesiser is not None else None)
    adversary = (Adversary(len(cfg.modalities), cfg.translation, device)
                 if TRANSLATION_HEAD in cfg.heads and cfg.translation.adversarial_weight > 0 else None)  # fmt: skip
    if adversary is not None and resume and (run_dir / "last_optim.pt").is_file():
        adversary.load_state_dict(torch.load(run_dir / "last_optim.pt", map_location=device, weights_only=True)
                                  ["discriminator"])  # fmt: skip
    batches = batch_stream(sampler, strength=cfg.augment, batch_size=cfg.batch_size // place.size, rng=rng,
                           augmentation=cfg.augmentation, workers=cfg.workers, lesion_sim=cfg.lesion_sim,
                           synthesiser=synthesiser, stream=place.rank,
                           seed=cfg.seed, start_step=step, pin_memory=on_cuda(device))  # fmt: skip
    spec = LossSpec(tuple(cfg.heads), tuple(cfg.head_weights), cfg.loss, t1, cfg.translation)
    start = time.perf_counter()
    val: dict[str, Any] = {}
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=console, disable=console is None) as bar:  # fmt: skip
        task = bar.add_task("train", total=cfg.max_steps, completed=step, info="")
        while step < cfg.max_steps:
            batch = [t.to(device, non_blocking=True) for t in next(batches)]
            loss, parts_loss, _ = train_step(model, optimiser, batch, spec, amp=cfg.amp, cpu_bf16=cfg.cpu_bf16,
                                             channels_last=cfg.channels_last, distributed=place.distributed,
                                             extra=_adversarial(adversary, cfg) if adversary else None)  # fmt: skip
            scheduler.step()
            step += 1
            out_of_time = agree(place, cfg.time_budget_s > 0 and time.perf_counter() - start > cfg.time_budget_s)
            loss_value = float(loss)
            bar.update(task, completed=step, info=f"loss {loss_value:.3f}")
            if step % 10 == 0:
                log_rows.append({"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                                 **{f"loss_{k}": v for k, v in parts_loss.items()}})  # fmt: skip
            if step % cfg.val_every == 0 or step == cfg.max_steps or out_of_time:
                rng_states = gather(place, rng.bit_generator.state)
                if not place.main:
                    barrier(place)  # rank 0 validates and writes the checkpoint
                    if out_of_time:
                        break
                    continue
                val = (validate(net, val_cases, cfg.heads, rule, device, t1, cfg.seed) if val_cases
                       else {"score": 0.0})  # fmt: skip
                log_rows.append({"step": step, "seconds": round(time.perf_counter() - start, 1),
                                 **{f"val_{k}": v for k, v in val.items()}})  # fmt: skip
                meta = checkpoint_record(meta_base, val, step, t1)
                is_best = val["score"] >= best or not val_cases
                if is_best:
                    best = val["score"]
                    save_model(run_dir, net, meta, stem="best")
                final = step >= cfg.max_steps or out_of_time
                if (is_best and cfg.keep == "best") or (final and cfg.keep == "last"):
                    save_model(run_dir, net, meta)
                for stem in ("last", *([f"step-{step:06d}"] if cfg.snapshots else [])):
                    save_model(run_dir, net, meta, stem=stem)
                _save_optimiser(run_dir, optimiser, scheduler, adversary)
                write_json(run_dir / "last_state.json", {"step": step, "best_score": best, "log": log_rows,
                                                   "numpy_rng": rng.bit_generator.state,
                                                   **({"numpy_rng_ranks": rng_states} if place.distributed
                                                      else {})})  # fmt: skip
                write_tsv(run_dir / "log.tsv", log_rows)
                barrier(place)
            if out_of_time:
                break
    batches.close()
    same = gather(place, parameter_digest(net))
    if place.main and val_cases:
        calibrate(run_dir, val_cases, cfg.heads, device, seed=cfg.seed)
    if place.main and place.distributed:
        record = ModelRecord.read(run_dir / "model.json")
        distributed = {**record.provenance["distributed"], "parameters_identical_across_ranks": len(set(same)) == 1}
        record.updated(provenance={"distributed": distributed}).write(run_dir / "model.json")
    barrier(place)
    kept = ModelRecord.read(run_dir / "model.json")
    return {"run_dir": str(run_dir), "steps": step, "seconds": time.perf_counter() - start, "kept": cfg.keep,
            "kept_step": kept.provenance.get("step"), "validation": kept.provenance.get("validation", {}),
            "best_score": best, "threshold": kept.threshold, "split": parts}  # fmt: skip

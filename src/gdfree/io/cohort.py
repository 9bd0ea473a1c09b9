"""The one cohort runner: every command over a dataset goes through it, so all follow one rule.

1. **Select** (:func:`select`): the cases named by id or subject (an unknown name is an error, not a silent
   nothing), then the part ``--shard K/N`` of them (:func:`gdfree.io.runs.select_shard`).
2. **Fingerprint** each case (the SHA-256 of its input files); a case that cannot be fingerprinted (a missing
   modality) is a failure, and the others go on.
3. **Refuse** cases a model was fitted on, for every selected case, **before anything is written**.
4. **Manifest and resume** (:class:`gdfree.io.runs.RunManifest`): an output folder belongs to one command,
   model and set of options; a case whose inputs and outputs are unchanged since it finished is skipped.
5. **The command's per-case function** (``work``), in this process or in ``jobs`` processes; it returns the
   case's row and the files it wrote (:class:`CaseDone`), which the runner records at once.
6. **Failures**: an error in one case is recorded with its reason (``failures.tsv``) and the others go on.

The command then writes its tables from every case's record (:meth:`RunManifest.cases`), so shards sharing a
folder end with the tables of one run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from gdfree.errors import GdfreeError
from gdfree.io.runs import RunManifest, select_shard, write_failures

__all__ = ["CASE_ERRORS", "CaseDone", "CohortResult", "run_cohort", "select"]

C = TypeVar("C")

CASE_ERRORS: tuple[type[BaseException], ...] = (GdfreeError, ValueError, OSError, RuntimeError, MemoryError)
"""What one case may fail with while the cohort goes on; anything else is a bug and stops the run."""


@dataclass(frozen=True)
class CaseDone:
    """What a command's per-case function returns: its row of the cohort table and the files it wrote (inside
    the output folder), recorded with their SHA-256 so a rerun can tell they are intact."""

    row: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)


@dataclass
class CohortResult(Generic[C]):
    """The outcome of one run over the selected cases.

    Attributes:
        rows: one per selected case in selection order: the finished row (fresh or recorded earlier), or
            ``{"case_id", "status": "failed", "reason"}``.
        done, skipped: case ids worked on now, and those already finished.
        failed: case id -> reason.
        manifest: the output folder's manifest (every shard's records: for the command's tables).
    """

    rows: list[dict[str, Any]]
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    manifest: RunManifest


def _case_id(case: Any) -> str:
    return str(case.case_id)


def select(
    cases: Sequence[C],
    names: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    *,
    where: str,
    key: Callable[[C], str] = _case_id,
) -> list[C]:
    """The cases named in ``names`` (a case id, or a subject naming all its sessions; None: all), then part K of
    N of them for ``shard`` (K, N).

    Raises:
        ValueError: ``where`` holds no case, or a name matches none (naming them).
    """
    if not cases:
        raise ValueError(f"{where}: no case found")
    chosen = list(cases)
    if names is not None:
        wanted = [n.strip() for n in names if n.strip()]
        if not wanted:
            raise ValueError(f"{where}: an empty list of cases was given")
        subject = {key(c): str(getattr(c, "subject", key(c))) for c in chosen}
        unknown = [n for n in wanted if not any(n in (k, s, f"sub-{s}") for k, s in subject.items())]
        if unknown:
            raise ValueError(f"{where}: no case {', '.join(unknown)} (cases: {', '.join(sorted(subject)[:10])}"
                             f"{' ...' if len(subject) > 10 else ''})")  # fmt: skip
        chosen = [c for c in chosen if any(n in (key(c), subject[key(c)], f"sub-{subject[key(c)]}") for n in wanted)]
    return select_shard(chosen, shard, key=key)


def run_cohort(
    cases: Sequence[C],
    out: Path,
    identity: Mapping[str, Any],
    *,
    fingerprint: Callable[[C], Sequence[str]],
    work: Callable[[C, tuple[str, ...]], CaseDone],
    refuse: Callable[[C, tuple[str, ...]], None] | None = None,
    overwrite: bool = False,
    jobs: int = 1,
    key: Callable[[C], str] = _case_id,
    progress: Callable[[str, str], None] | None = None,
) -> CohortResult[C]:
    """Run ``work`` over ``cases`` into ``out`` by the steps of the module docstring.

    Args:
        identity: what the output folder belongs to (command, model hash, options): see
            :meth:`RunManifest.open`; ``overwrite`` replaces another run's outputs instead of refusing.
        fingerprint: a case's input hashes; raising one of :data:`CASE_ERRORS` fails that case.
        work: the per-case function; with ``jobs`` > 1 it runs in spawned processes and must be picklable.
        refuse: raises (ValueError) for a case that must not be processed (one a model was fitted on); called
            for every case before the manifest is opened, so a refusal writes nothing.
        progress: called with (case id, "done" | "skipped" | "failed: reason").

    Raises:
        ValueError: from ``refuse``, or ``jobs`` < 1. OutputConflictError: ``out`` holds another run.
    """
    if jobs < 1:
        raise ValueError(f"--jobs: expected 1 or more processes, got {jobs}")
    inputs: dict[str, tuple[str, ...]] = {}
    failed: dict[str, str] = {}
    for case in cases:
        try:
            inputs[key(case)] = tuple(fingerprint(case))
        except CASE_ERRORS as exc:
            failed[key(case)] = str(exc)
    if refuse is not None:
        for case in cases:
            if key(case) in inputs:
                refuse(case, inputs[key(case)])
    manifest = RunManifest.open(out, identity, replace=overwrite)
    for case_id, reason in failed.items():
        manifest.fail(case_id, reason)
        _tell(progress, case_id, f"failed: {reason}")
    rows: dict[str, dict[str, Any]] = {}
    skipped, todo = [], []
    for case in cases:
        if key(case) not in inputs:
            continue
        recorded = manifest.finished(key(case), inputs[key(case)])
        if recorded is None:
            todo.append(case)
        else:
            rows[key(case)] = recorded
            skipped.append(key(case))
            _tell(progress, key(case), "skipped")
    done = []
    for case, outcome in _work_all(todo, inputs, work, jobs, key):
        case_id = key(case)
        if isinstance(outcome, CaseDone):
            manifest.record(case_id, inputs[case_id], outcome.row, outcome.outputs)
            rows[case_id] = outcome.row
            done.append(case_id)
            _tell(progress, case_id, "done")
        else:
            failed[case_id] = outcome
            manifest.fail(case_id, outcome)
            _tell(progress, case_id, f"failed: {outcome}")
    ordered = [rows[key(c)] if key(c) in rows else {"case_id": key(c), "status": "failed", "reason": failed[key(c)]}
               for c in cases if key(c) in rows or key(c) in failed]  # fmt: skip
    write_failures(out)  # every shard's
    return CohortResult(ordered, done, skipped, failed, manifest)


def _tell(progress: Callable[[str, str], None] | None, case_id: str, status: str) -> None:
    if progress is not None:
        progress(case_id, status)


def _guarded(work: Callable[[Any, tuple[str, ...]], CaseDone], case: Any, inputs: tuple[str, ...]) -> CaseDone | str:
    try:
        return work(case, inputs)
    except CASE_ERRORS as exc:
        return str(exc) or exc.__class__.__name__


def _limit_threads(threads: int) -> None:
    """In a worker process: share the machine's cores among the jobs (torch and OpenMP pools)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _work_all(
    todo: Sequence[C], inputs: Mapping[str, tuple[str, ...]], work: Callable[[C, tuple[str, ...]], CaseDone],
    jobs: int, key: Callable[[C], str],
) -> Iterator[tuple[C, CaseDone | str]]:  # fmt: skip
    """Each case with its outcome as soon as it is there (so it is recorded before the next one ends)."""
    if jobs <= 1 or len(todo) <= 1:
        for case in todo:
            yield case, _guarded(work, case, inputs[key(case)])
        return
    # spawn, not fork: a forked child inherits the parent's torch/OpenMP thread pools and can hang in deepbet
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_limit_threads,
                             initargs=(threads,)) as pool:  # fmt: skip
        outcomes = pool.map(_guarded, [work] * len(todo), todo, [inputs[key(c)] for c in todo])
        yield from zip(todo, outcomes, strict=True)

"""Output folders that belong to one run, inputs that are never written to, and cohorts split into shards.

Every command that writes checks its output folder first with :func:`check_output_folder`: it may not be an
input folder, lie inside one, or contain one, and it must be a folder gdfree can write. A cohort command
keeps a manifest in its output folder: ``gdfree_run.json`` says what made it (command, model hash, options)
and ``gdfree_run/<case>.json`` holds one record per case: when it finished, the SHA-256 of its input files,
the row it contributed and the SHA-256 of each file it wrote; when it failed, the reason. A rerun with the
same settings skips the cases whose inputs and outputs still match and redoes the rest; another model or
other options are refused unless the caller asks to replace the old outputs. Failed cases go to
``failures.tsv`` with their reason.

One record per case lets several processes fill one folder at once: ``--shard K/N`` gives a process the
cases of part K of N (:func:`select_shard`), so Slurm array jobs, Kubernetes jobs or
torchrun ranks spread a cohort over machines without a coordinator, and the cohort tables are rebuilt from
every record present each time a shard ends (the last one to end writes the complete tables; a rerun of
any shard rewrites them).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gdfree.errors import GdfreeError
from gdfree.io.images import file_sha256, host_name
from gdfree.io.tables import write_json, write_tsv

__all__ = [
    "FAILURES",
    "MANIFEST",
    "RECORDS",
    "CaseRecord",
    "OutputConflictError",
    "RunManifest",
    "check_output_folder",
    "clear_failure",
    "finished_records",
    "listed_outputs",
    "parse_shard",
    "record_failure",
    "recorded_failures",
    "remove_stale_temporaries",
    "select_shard",
    "write_failures",
]

T = TypeVar("T")

MANIFEST = "gdfree_run.json"
RECORDS = "gdfree_run"
FAILURES = "failures.tsv"
STALE_AFTER_S = 6 * 3600
"""A temporary file of another machine (or of a process this machine cannot see) is left alone this long."""


class OutputConflictError(GdfreeError, ValueError):
    """An output folder overlaps an input, is not writable, or holds another run's outputs."""


def check_output_folder(out: Path | str, inputs: Iterable[Path | str], what: str = "--out") -> Path:
    """Refuse an output folder that equals, lies inside or contains an input path, is a file, or cannot be
    created or written; returns it resolved (not created).

    Raises:
        OutputConflictError: naming both paths.
    """
    out = Path(out).expanduser().resolve()
    for given in inputs:
        src = Path(given).expanduser().resolve()
        if out == src or src in out.parents:
            raise OutputConflictError(f"{what} {out}: is the input {src} or inside it; gdfree never writes under "
                                      "an input path, choose a folder outside it")  # fmt: skip
        if out in src.parents:
            raise OutputConflictError(f"{what} {out}: contains the input {src}; gdfree never writes where it "
                                      "could overwrite an input, choose a folder outside it")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise OutputConflictError(f"{what} {out}: exists and is not a folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputConflictError(f"{what} {out}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputConflictError(f"{what} {out}: {existing} is not writable by this user")
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; None for None or "".

    Raises:
        ValueError: anything else.
    """
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--shard: expected K/N with 1 <= K <= N (e.g. 3/8), got {text!r}")
    return int(match[1]), int(match[2])


def select_shard(items: Sequence[T], shard: tuple[int, int] | None, key: Callable[[T], str]) -> list[T]:
    """The items of shard (K, N): ranked by ``key`` (the case id), every N-th from the K-th, in their given
    order. Shards are balanced (sizes differ by at most one) and, for one cohort listing, disjoint and together
    complete; every shard of a run must therefore be given the same cohort (same folder, same --cases)."""
    if shard is None:
        return list(items)
    k, n = shard
    ranked = sorted(key(item) for item in items)
    chosen = set(ranked[k - 1 :: n])
    return [item for item in items if key(item) in chosen]


_OWNER = re.compile(r"\.gd(\d+)@([A-Za-z0-9-]*)\.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left under ``folder`` (``.<name>.<owner>.<random>
    .tmp*``, see :func:`gdfree.io.images.atomic_path`); returns them. A temporary of a process still running on
    this machine, or of another machine and younger than :data:`STALE_AFTER_S`, is being written by a shard
    that shares the folder and is left alone."""
    stale = []
    now = time.time()
    for path in folder.rglob(".*.tmp*"):
        if not path.is_file() or ".tmp" not in path.name:
            continue
        owner = _OWNER.search(path.name)
        if owner is not None:
            pid, host = int(owner[1]), owner[2]
            if host == host_name() and pid != os.getpid() and _alive(pid):
                continue
            if host != host_name() and now - path.stat().st_mtime < STALE_AFTER_S:
                continue
            if host == host_name() and pid == os.getpid():
                continue
        stale.append(path)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _record_path(folder: Path, case_id: str) -> Path:
    if not case_id or "/" in case_id or "\\" in case_id or case_id.startswith("."):
        raise ValueError(f"case id {case_id!r}: cannot name a record file")
    return folder / RECORDS / f"{case_id}.json"


RECORD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CaseRecord:
    """One case's record, ``gdfree_run/<case>.json``: finished (the SHA-256 of its inputs, its row of the cohort
    table, the SHA-256 of each file it wrote, by path relative to the folder) or failed (the reason).
    ``schema_version`` 1; a record without it (written before) reads as 0."""

    inputs: tuple[str, ...] = ()
    row: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    failed: str | None = None
    schema_version: int = RECORD_SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Any, where: Path | str = "record") -> CaseRecord:
        """The record of a parsed JSON object. Raises ValueError (naming ``where``) for another shape."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object")
        if "failed" in data:
            return cls(failed=str(data["failed"]), schema_version=int(data.get("schema_version", 0)))
        inputs, row, outputs = data.get("inputs", []), data.get("row", {}), data.get("outputs", {})
        if not (isinstance(inputs, list) and isinstance(row, dict) and isinstance(outputs, dict)):
            raise ValueError(f"{where}: expected inputs (list), row and outputs (objects)")
        return cls(tuple(str(i) for i in inputs), row, {str(k): str(v) for k, v in outputs.items()},
                   schema_version=int(data.get("schema_version", 0)))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        if self.failed is not None:
            return {"schema_version": RECORD_SCHEMA_VERSION, "failed": " ".join(self.failed.split())}
        return {"schema_version": RECORD_SCHEMA_VERSION, "inputs": list(self.inputs), "row": dict(self.row),
                "outputs": dict(self.outputs)}  # fmt: skip


def _read_record(path: Path) -> CaseRecord | None:
    """One record, or None when it is missing or unreadable (then the case counts as not finished: redone)."""
    try:
        return CaseRecord.from_json(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None


def _read_records(folder: Path) -> dict[str, CaseRecord]:
    """Every readable record of ``folder`` (for the cohort tables; per case, read its own file)."""
    records = {}
    for path in sorted((folder / RECORDS).glob("*.json")):
        entry = _read_record(path)
        if entry is not None:
            records[path.stem] = entry
    return records


def record_failure(folder: Path, case_id: str, reason: str) -> None:
    """Record that ``case_id`` failed in ``folder`` (kept until it succeeds; see :func:`write_failures`)."""
    write_json(_record_path(folder, case_id), CaseRecord(failed=str(reason)).to_json())


def clear_failure(folder: Path, case_id: str) -> None:
    """Forget a recorded failure of ``case_id`` (it succeeded)."""
    path = _record_path(folder, case_id)
    record = _read_record(path)
    if record is not None and record.failed is not None:
        path.unlink(missing_ok=True)


def finished_records(folder: Path) -> dict[str, CaseRecord]:
    """case_id -> :class:`CaseRecord` of every case finished in ``folder`` (by any shard)."""
    return {k: v for k, v in _read_records(folder).items() if v.failed is None}


def recorded_failures(folder: Path) -> dict[str, str]:
    """case_id -> reason of every failure recorded in ``folder`` (by any shard)."""
    return {k: v.failed for k, v in _read_records(folder).items() if v.failed is not None}


def write_failures(folder: Path, failures: Mapping[str, str] | None = None) -> Path | None:
    """Write ``failures.tsv`` (case_id, reason) into ``folder`` from ``failures``, or (None) from every failure
    recorded there; remove it when nothing failed."""
    path = folder / FAILURES
    failures = recorded_failures(folder) if failures is None else failures
    if not failures:
        path.unlink(missing_ok=True)
        return None
    rows = [{"case_id": k, "reason": " ".join(v.split())} for k, v in sorted(failures.items())]
    return write_tsv(path, rows, ["case_id", "reason"])


def listed_outputs(folder: Path) -> dict[str, str] | None:
    """Every output file the manifest of ``folder`` lists (relative path -> SHA-256); None without a manifest.

    Raises:
        OutputConflictError: the manifest is unreadable.
    """
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        entries = [CaseRecord.from_json(e, path) for e in old.get("cases", {}).values()]
        entries += list(_read_records(folder).values())
        return {rel: d for e in entries for rel, d in e.outputs.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise OutputConflictError(f"{path}: not a readable gdfree run manifest ({exc})") from exc


@dataclass
class RunManifest:
    """What made an output folder, and which of its cases are finished.

    Attributes:
        folder: the output folder; the manifest is ``folder/gdfree_run.json`` and ``folder/gdfree_run/``.
        identity: command, model hash and options; two runs with equal identities may share a folder (at the
            same time too: each case has its own record file).
    """

    folder: Path
    identity: dict[str, Any]

    @classmethod
    def open(cls, folder: Path, identity: Mapping[str, Any], *, replace: bool = False) -> RunManifest:
        """The manifest of ``folder`` for a run with ``identity``, creating the folder.

        An existing manifest with the same identity is continued. One with another identity, or gdfree
        outputs without a manifest, are refused unless ``replace``: then the files the old manifest lists
        (or, without one, the gdfree-named outputs) and its records are deleted first; nothing else in the
        folder is touched. A manifest of an older gdfree (cases inside ``gdfree_run.json``) is converted.

        Raises:
            OutputConflictError: another run's outputs are there and ``replace`` is False.
        """
        identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
        path = folder / MANIFEST
        old: dict[str, Any] | None = None
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = {"identity": "unreadable", "cases": {}}
        if old is not None and old.get("identity") == identity:
            manifest = cls(folder, dict(identity))
            if isinstance(old.get("cases"), dict):  # written by gdfree before per-case records
                for case_id, entry in old["cases"].items():
                    write_json(_record_path(folder, case_id), entry)
                manifest.save()
            return manifest
        leftovers = _old_outputs(folder, old)
        if leftovers and not replace:
            made_by = "another model or other options" if old is not None else "a run without a manifest"
            raise OutputConflictError(
                f"{folder}: holds outputs made by {made_by} ({leftovers[0].relative_to(folder)} and "
                f"{len(leftovers) - 1} more); choose a new folder, or pass --overwrite to replace them"
            )
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        manifest = cls(folder, dict(identity))
        manifest.save()
        return manifest

    def save(self) -> Path:
        return write_json(self.folder / MANIFEST, {"schema_version": RECORD_SCHEMA_VERSION, "identity": self.identity,
                                                   "records": f"{RECORDS}/"})  # fmt: skip

    @property
    def cases(self) -> dict[str, CaseRecord]:
        """case_id -> :class:`CaseRecord` of every finished case (read from the folder now: other shards may have
        added some)."""
        return finished_records(self.folder)

    def failures(self) -> dict[str, str]:
        """case_id -> reason of every failed case (any shard's)."""
        return recorded_failures(self.folder)

    def finished(self, case_id: str, inputs: Sequence[str]) -> dict[str, Any] | None:
        """The recorded row of ``case_id`` if it finished with these input hashes and its outputs are intact."""
        entry = _read_record(_record_path(self.folder, case_id))
        if entry is None or entry.failed is not None or list(entry.inputs) != list(inputs):
            return None
        for rel, digest in entry.outputs.items():
            path = self.folder / rel
            if not path.is_file() or file_sha256(path) != digest:
                return None
        return dict(entry.row)

    def record(self, case_id: str, inputs: Sequence[str], row: Mapping[str, Any], outputs: Iterable[Path]) -> None:
        """Mark ``case_id`` finished (its record is written at once: a later crash keeps it)."""
        outputs_sha = {str(p.relative_to(self.folder)): file_sha256(p) for p in outputs}
        write_json(_record_path(self.folder, case_id), CaseRecord(tuple(inputs), dict(row), outputs_sha).to_json())

    def forget(self, case_id: str) -> None:
        """Drop a case; its old outputs are deleted."""
        entry = _read_record(_record_path(self.folder, case_id)) or CaseRecord()
        for rel in entry.outputs:
            (self.folder / rel).unlink(missing_ok=True)
        _record_path(self.folder, case_id).unlink(missing_ok=True)

    def fail(self, case_id: str, reason: str) -> None:
        """Drop a case's old outputs and record why it failed this time."""
        self.forget(case_id)
        record_failure(self.folder, case_id, reason)

    def listed(self) -> dict[str, str]:
        """Every output file of every finished case: relative path -> SHA-256."""
        return {rel: d for entry in self.cases.values() for rel, d in entry.outputs.items()}


def _old_outputs(folder: Path, old: Mapping[str, Any] | None) -> list[Path]:
    if old is not None:
        entries = list(old.get("cases", {}).values()) if isinstance(old.get("cases"), dict) else []
        entries += [e.to_json() for e in _read_records(folder).values()]
        listed = [folder / rel for e in entries for rel in e.get("outputs", {})]
        found = [p for p in listed if p.is_file()]
    else:
        found = sorted(p for p in folder.glob("sub-*/**/sub-*") if p.is_file() and _is_gdfree_output(p.name))
    found += sorted((folder / RECORDS).glob("*.json"))
    names = ("predictions.tsv", "explain.json", "importance.tsv", FAILURES, MANIFEST)
    return found + [folder / n for n in names if (folder / n).is_file()]


def _is_gdfree_output(name: str) -> bool:
    return name.endswith(
        (
            "_probseg.nii.gz",
            "_mask.nii.gz",
            "_uncertainty.nii.gz",
            "_lesions.tsv",
            "_attribution.nii.gz",
            "_attribution.png",
        )
    )

"""Output folders that belong to one run, and inputs that are never written to.

Every command that writes checks its output folder first with :func:`check_output_folder`: it may not be an
input folder, lie inside one, or contain one, and it must be a folder gdfree can write. A cohort command
keeps a manifest, ``gdfree_run.json``, in its output folder: what made it (command, model hash, options)
and, per finished case, the SHA-256 of its input files, the rows it contributed and the SHA-256 of each file
it wrote. A rerun with the same settings skips the cases whose inputs and outputs still match and redoes
the rest; another model or other options are refused unless the caller asks to replace the old outputs.
Failed cases go to ``failures.tsv`` with their reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdfree.errors import GdfreeError
from gdfree.io.images import file_sha256
from gdfree.io.tables import write_json, write_tsv

__all__ = [
    "FAILURES",
    "MANIFEST",
    "OutputConflictError",
    "RunManifest",
    "check_output_folder",
    "remove_stale_temporaries",
    "write_failures",
]

MANIFEST = "gdfree_run.json"
FAILURES = "failures.tsv"


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


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left under ``folder`` (``.<name>.<random>.tmp*``,
    see :func:`gdfree.io.images.atomic_path`); returns them."""
    stale = [p for p in folder.rglob(".*.tmp*") if p.is_file() and ".tmp" in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_failures(folder: Path, failures: Mapping[str, str]) -> Path | None:
    """Write ``failures.tsv`` (case_id, reason) into ``folder``, or remove it when nothing failed."""
    path = folder / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return None
    rows = [{"case_id": k, "reason": " ".join(v.split())} for k, v in sorted(failures.items())]
    return write_tsv(path, rows, ["case_id", "reason"])


@dataclass
class RunManifest:
    """What made an output folder, and which of its cases are finished.

    Attributes:
        folder: the output folder; the manifest is ``folder/gdfree_run.json``.
        identity: command, model hash and options; two runs with equal identities may share a folder.
        cases: case_id -> {"inputs": [sha256...], "row": {...}, "outputs": {relative path: sha256}}.
    """

    folder: Path
    identity: dict[str, Any]
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path, identity: Mapping[str, Any], *, replace: bool = False) -> RunManifest:
        """The manifest of ``folder`` for a run with ``identity``, creating the folder.

        An existing manifest with the same identity is continued. One with another identity, or gdfree
        outputs without a manifest, are refused unless ``replace``: then the files the old manifest lists
        (or, without one, the gdfree-named outputs) are deleted first; nothing else in the folder is touched.

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
            return cls(folder, identity, dict(old.get("cases", {})))
        leftovers = _old_outputs(folder, old)
        if leftovers and not replace:
            made_by = "another model or other options" if old is not None else "a run without a manifest"
            raise OutputConflictError(
                f"{folder}: holds outputs made by {made_by} ({leftovers[0].relative_to(folder)} and "
                f"{len(leftovers) - 1} more); choose a new folder, or pass --overwrite to replace them"
            )
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        manifest = cls(folder, identity)
        manifest.save()
        return manifest

    def save(self) -> Path:
        return write_json(self.folder / MANIFEST, {"identity": self.identity, "cases": self.cases})

    def finished(self, case_id: str, inputs: Sequence[str]) -> dict[str, Any] | None:
        """The recorded row of ``case_id`` if it finished with these input hashes and its outputs are intact."""
        entry = self.cases.get(case_id)
        if entry is None or list(entry.get("inputs", [])) != list(inputs):
            return None
        for rel, digest in entry.get("outputs", {}).items():
            path = self.folder / rel
            if not path.is_file() or file_sha256(path) != digest:
                return None
        return dict(entry.get("row", {}))

    def record(self, case_id: str, inputs: Sequence[str], row: Mapping[str, Any], outputs: Iterable[Path]) -> None:
        """Mark ``case_id`` finished (and save the manifest at once: a later crash keeps it)."""
        self.cases[case_id] = {
            "inputs": list(inputs),
            "row": dict(row),
            "outputs": {str(p.relative_to(self.folder)): file_sha256(p) for p in outputs},
        }
        self.save()

    def forget(self, case_id: str) -> None:
        """Drop a case (it failed this time); its old outputs are deleted."""
        entry = self.cases.pop(case_id, None)
        for rel in (entry or {}).get("outputs", {}):
            (self.folder / rel).unlink(missing_ok=True)
        self.save()

    def listed(self) -> dict[str, str]:
        """Every output file of every finished case: relative path -> SHA-256."""
        return {rel: d for entry in self.cases.values() for rel, d in entry.get("outputs", {}).items()}


def _old_outputs(folder: Path, old: Mapping[str, Any] | None) -> list[Path]:
    if old is not None and isinstance(old.get("cases"), dict):
        listed = [folder / rel for e in old["cases"].values() for rel in e.get("outputs", {})]
        found = [p for p in listed if p.is_file()]
    else:
        found = sorted(p for p in folder.glob("sub-*/**/sub-*") if p.is_file() and _is_gdfree_output(p.name))
    names = ("predictions.tsv", "explain.json", "importance.tsv", FAILURES, MANIFEST)
    return found + [folder / n for n in names if (folder / n).is_file()]


def _is_gdfree_output(name: str) -> bool:
    return name.endswith(("_probseg.nii.gz", "_mask.nii.gz", "_uncertainty.nii.gz", "_lesions.tsv",
                          "_attribution.nii.gz", "_attribution.png"))

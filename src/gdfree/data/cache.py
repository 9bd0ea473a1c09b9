"""A preprocessed training cache: each case's normalised arrays decompressed once, then memory-mapped.

As nnU-Net does, :func:`cached_case` stores what :func:`gdfree.data.cases.load_array_case` returns as plain
``.npy`` files under ``cache/<key>/`` and opens them with ``np.load(mmap_mode="r")``: a later run (or
another DDP rank, or a DataLoader worker) skips reading and normalising the compressed NIfTI files, and
every process on a machine shares the same pages through the operating system's file cache instead of
holding its own copy. The key is the SHA-256 of the input and mask files' bytes, the roles asked for, the
normalisation and the cache layout: an edited input gets a new entry, never a stale one. An entry is
written into a temporary folder and renamed into place, so a crash or a concurrent writer never leaves a
half entry. The arrays are read-only: code that wrote into a case's arrays fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.data.cases import NORMALISATION, ArrayCase, file_fingerprints, load_array_case
from gdfree.io.bids import CaseFiles

__all__ = ["CACHE_LAYOUT", "cache_key", "cached_case"]

CACHE_LAYOUT = 1
"""Bumped whenever what an entry holds changes."""


def cache_key(
    files: CaseFiles, modalities: Sequence[str], heads: Sequence[str], oracle: bool, label_sets: Sequence[str] | None,
    normalisation: str = NORMALISATION,
) -> str:  # fmt: skip
    """The entry name of a case: SHA-256 over its files' contents and everything that shapes its arrays."""
    roles = [*(f"image:{r}" for r in sorted(files.images)), *(f"mask:{r}" for r in sorted(files.masks))]
    paths = [*(files.images[r] for r in sorted(files.images)), *(files.masks[r] for r in sorted(files.masks))]
    spec = {"files": dict(zip(roles, file_fingerprints(paths), strict=True)), "modalities": list(modalities),
            "heads": list(heads), "oracle": oracle,
            "label_sets": None if label_sets is None else sorted(label_sets), "normalisation": normalisation,
            "layout": CACHE_LAYOUT}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def cached_case(
    files: CaseFiles,
    modalities: Sequence[str],
    heads: Sequence[str] = (),
    *,
    cache: Path | str,
    oracle: bool = False,
    dataset: int = 0,
    label_sets: Sequence[str] | None = None,
    normalisation: str = NORMALISATION,
) -> ArrayCase:
    """:func:`gdfree.data.cases.load_array_case` through the cache folder ``cache`` (created if needed): the
    arrays come back memory-mapped, read-only. Raises what ``load_array_case`` raises."""
    folder = Path(cache) / cache_key(files, modalities, heads, oracle, label_sets, normalisation)
    if not (folder / "meta.json").is_file():
        case = load_array_case(files, modalities, heads, oracle=oracle, dataset=dataset, label_sets=label_sets,
                               normalisation=normalisation)  # fmt: skip
        _write_entry(folder, case)
    return _read_entry(folder, files, dataset)


def _write_entry(folder: Path, case: ArrayCase) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "image.npy", np.ascontiguousarray(case.image, np.float32))
        np.save(tmp / "brain.npy", np.ascontiguousarray(case.brain, bool))
        labels = {}
        for head, label in case.labels.items():
            if label is not None:
                np.save(tmp / f"label-{head}.npy", np.ascontiguousarray(label))
            labels[head] = label is not None
        meta: dict[str, Any] = {"case_id": case.case_id, "affine": np.asarray(case.affine).tolist(), "labels": labels,
                                "fingerprints": list(case.fingerprints), "raw_zero": list(case.raw_zero),
                                "raw_stats": [list(s) for s in case.raw_stats]}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same entry first: keep theirs
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_entry(folder: Path, files: CaseFiles, dataset: int) -> ArrayCase:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    labels = {h: (np.load(folder / f"label-{h}.npy", mmap_mode="r") if present else None)
              for h, present in meta["labels"].items()}  # fmt: skip
    return ArrayCase(
        case_id=files.case_id, subject=files.subject, session=files.session,
        image=np.load(folder / "image.npy", mmap_mode="r"), labels=labels,
        brain=np.load(folder / "brain.npy", mmap_mode="r"), affine=np.asarray(meta["affine"], float),
        dataset=dataset, fingerprints=tuple(meta["fingerprints"]), raw_zero=tuple(meta["raw_zero"]),
        raw_stats=tuple(tuple(s) for s in meta["raw_stats"]),
    )  # fmt: skip

"""Output folders a command owns (issue 33): ``report`` and ``to-native`` write only into a new or empty folder
or into one an earlier run of the same command wrote, and a rerun leaves no page of the earlier run behind.

The owner's mark is ``.gdfree_<command>.json`` in the folder: the top-level entries (files and folders) that
run wrote. :func:`claim_folder` refuses any other non-empty folder (a BIDS dataset, another command's output,
the user's documents) and removes what the earlier run listed, so that the new run's pages and tables are the
only ones there; entries it did not write are left alone. :func:`mark_folder` writes the mark at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gdfree.io.runs import OutputConflictError
from gdfree.io.tables import write_json

__all__ = ["claim_folder", "mark_folder"]


def _mark(out: Path, command: str) -> Path:
    return out / f".gdfree_{command}.json"


def claim_folder(out: Path | str, command: str, what: str = "--out") -> set[str]:
    """Make ``out`` this ``command``'s: nothing to do when it is new or empty; when it holds an earlier run's mark,
    remove the entries that run wrote; otherwise refuse. Returns the names of the entries left in ``out`` (not
    written by ``command``: :func:`mark_folder` leaves them out of the new mark).

    Raises:
        OutputConflictError: ``out`` holds files and no mark of ``command`` (naming a few of them).
    """
    out = Path(out)
    if not out.is_dir() or not any(out.iterdir()):
        return set()
    mark = _mark(out, command)
    if not mark.is_file():
        found = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise OutputConflictError(f"{what} {out}: holds files no earlier gdfree {command} wrote ({found} ...); "
                                  f"{command} writes into a new or empty folder, or over its own output")  # fmt: skip
    try:
        listed = json.loads(mark.read_text(encoding="utf-8")).get("entries", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise OutputConflictError(f"{mark}: not readable ({exc}); remove the folder or choose another") from exc
    for name in listed:
        target = out / str(name)
        if "/" in str(name) or str(name) in ("", ".", "..") or not target.exists():  # only its own top-level entries
            continue
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    mark.unlink()
    return {p.name for p in out.iterdir()}


def mark_folder(out: Path | str, command: str, foreign: set[str]) -> Path:
    """Write ``command``'s mark in ``out``: every top-level entry but ``foreign`` (what :func:`claim_folder`
    found there that the command did not write)."""
    out = Path(out)
    path = _mark(out, command)
    write_json(path, {"command": command, "entries": sorted(p.name for p in out.iterdir()
                                                            if p.name not in foreign and p != path)})  # fmt: skip
    return path

"""``gdfree import --format dicom``: DICOM series to a BIDS dataset through dcm2niix, roles by editable rules.

dcm2niix (the binary shipped in the ``dcm2niix`` registry package, run as a subprocess) converts every series
under the source folder into a temporary folder inside the destination; each series' JSON sidecar is matched
against the rule file (:data:`DEFAULT_RULES`, the shipped ``dicom_rules.yaml``, or a copy the user edited, as
dcm2bids does) to give it a role; matched series become
``DEST/sub-X/[ses-Y/]anat/sub-X[_ses-Y]_<suffix>.nii.gz`` with the dcm2niix sidecar beside them (less the
:data:`IDENTIFYING` fields, plus the rule that matched). Subjects come from PatientID, sessions from StudyDate
when a subject has more than one study. ``DEST/import.tsv`` lists every converted series, its role or why it
was not imported. The source is only read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

import gdfree
from gdfree.io.bids import bids_name, dataset_description, image_entities
from gdfree.io.tables import write_json, write_tsv
from gdfree.types import POST_CONTRAST, PRE_CONTRAST

__all__ = ["DEFAULT_RULES", "import_dicom", "is_dicom_folder", "load_rules", "match_role"]

ROLES = (*PRE_CONTRAST, POST_CONTRAST)
IDENTIFYING = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "OperatorsName",
    "PerformingPhysicianName", "StudyInstanceUID", "SeriesInstanceUID",
})  # fmt: skip
"""Sidecar fields dropped from the BIDS sidecars (who and where; the exam keeps its acquisition parameters)."""

DEFAULT_RULES = Path(__file__).with_name("dicom_rules.yaml")


def is_dicom_folder(folder: Path | str, look: int = 200) -> bool:
    """Whether any of the first ``look`` files under ``folder`` is a DICOM file ("DICM" at byte 128)."""
    for n, path in enumerate(p for p in Path(folder).rglob("*") if p.is_file()):
        if n >= look:
            break
        try:
            with path.open("rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def load_rules(path: Path | str | None = None) -> dict[str, Any]:
    """The rule file (default: the shipped one), checked: every rule has a known role and valid expressions.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    path = Path(path) if path is not None else DEFAULT_RULES
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the DICOM rule file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping with 'rules' (and 'ignore'), got {type(data).__name__}: "
                         f"{str(data)[:60]!r}")  # fmt: skip
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ValueError(f"{path}: expected a non-empty list under 'rules'")
    for n, rule in enumerate(rules, start=1):
        if not isinstance(rule, dict) or rule.get("role") not in ROLES:
            raise ValueError(f"{path}: rule {n}: 'role' must be one of {', '.join(ROLES)}, got "
                             f"{rule.get('role') if isinstance(rule, dict) else rule!r}")  # fmt: skip
        if not isinstance(rule.get("match"), dict) or not rule["match"]:
            raise ValueError(f"{path}: rule {n}: expected 'match' with at least one field: expression")
        for key in ("match", "exclude", "any_of"):
            for field, pattern in (rule.get(key) or {}).items():
                try:
                    re.compile(str(pattern))
                except re.error as exc:
                    raise ValueError(f"{path}: rule {n}, {key}.{field}: bad regular expression {pattern!r} "
                                     f"({exc})") from None
    ignore = data.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(i, dict) for i in ignore):
        raise ValueError(f"{path}: 'ignore' must be a list of field: expression entries")
    for n, entry in enumerate(ignore, start=1):
        for field, pattern in entry.items():
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise ValueError(f"{path}: ignore entry {n}, {field}: bad regular expression {pattern!r} "
                                 f"({exc})") from None
    return {"rules": rules, "ignore": ignore, "path": str(path)}


def _field(sidecar: dict[str, Any], name: str) -> str:
    value = sidecar.get(name, "")
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _found(sidecar: dict[str, Any], patterns: dict[str, str]) -> bool:
    return all(re.search(str(p), _field(sidecar, f), re.IGNORECASE) for f, p in patterns.items())


def match_role(sidecar: dict[str, Any], rules: dict[str, Any]) -> tuple[str | None, str]:
    """(role or None, why): the first rule matching a dcm2niix sidecar, 'ignored: ...' or 'no rule matched'."""
    for entry in rules["ignore"]:
        if any(re.search(str(p), _field(sidecar, f), re.IGNORECASE) for f, p in entry.items()):
            return None, f"ignored ({', '.join(f'{f} ~ {p}' for f, p in entry.items())})"
    for n, rule in enumerate(rules["rules"], start=1):
        if not _found(sidecar, rule["match"]):
            continue
        if any(re.search(str(p), _field(sidecar, f), re.IGNORECASE) for f, p in (rule.get("exclude") or {}).items()):
            continue
        any_of = rule.get("any_of") or {}
        if any_of and not any(re.search(str(p), _field(sidecar, f), re.IGNORECASE) for f, p in any_of.items()):
            continue
        return rule["role"], f"rule {n}"
    return None, "no rule matched"


def _label(text: str, fallback: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9]", "", text)
    return clean or fallback


def _run_dcm2niix(src: Path, work: Path) -> tuple[int, str, list[str]]:
    """(exit code, log, why files were not converted): dcm2niix's errors, and its warnings that name a file under
    ``src`` (a truncated or unreadable file), so that a series it skipped is listed with the reason."""
    import dcm2niix

    # -ba n: the sidecar keeps PatientID/StudyDate to name subjects and sessions; they are removed before writing
    args = [dcm2niix.bin, "-z", "y", "-b", "y", "-ba", "n", "-f", "%s_%j", "-o", str(work), str(src)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"{src}: dcm2niix could not run ({exc})") from None
    log = f"{done.stdout}\n{done.stderr}"
    why = [line.strip() for line in log.splitlines() if line.strip().lower().startswith("error")
           or (line.strip().lower().startswith("warning") and str(src) in line)]  # fmt: skip
    return done.returncode, log, why


def _convert_and_place(src: Path, work: Path, dest: Path, ruleset: dict[str, Any]) -> list[dict[str, Any]]:
    """Convert ``src`` with dcm2niix into ``work``, then move each series that a rule gives a role into ``dest``
    as BIDS; returns the rows of import.tsv (one per series, and one per file dcm2niix did not convert).

    Raises:
        ValueError: dcm2niix converted no series (with its reasons).
    """
    rows: list[dict[str, Any]] = []
    code, log, why_not = _run_dcm2niix(src, work)
    series = sorted(work.glob("*.json"))
    if not series:
        reason = " | ".join(why_not[-5:]) or (log.strip().splitlines()[-1:] or ["no output"])[0]
        raise ValueError(f"{src}: dcm2niix (exit {code}) converted no series: {reason}")
    rows += [{"series": "", "description": "(files dcm2niix did not convert)", "protocol": "", "subject": "",
              "session": "", "role": "", "why": f"dcm2niix (exit {code}): {line}", "destination": ""}
             for line in why_not]  # fmt: skip
    sidecars = {p: json.loads(p.read_text(encoding="utf-8")) for p in series}
    studies: dict[str, set[str]] = {}
    for s in sidecars.values():
        studies.setdefault(_label(str(s.get("PatientID", "")), "01"), set()).add(str(s.get("StudyDate", "")))
    taken: dict[tuple[str, str | None, str], str] = {}
    for path, sidecar in sorted(sidecars.items(), key=lambda kv: (int(kv[1].get("SeriesNumber", 0) or 0),
                                                                   kv[0].name)):  # fmt: skip
        nifti = next((path.with_suffix(e) for e in (".nii.gz", ".nii") if path.with_suffix(e).is_file()), None)
        if nifti is None:
            nifti = path.with_name(path.stem + ".nii.gz")
        subject = _label(str(sidecar.get("PatientID", "")), "01")
        session = _label(str(sidecar.get("StudyDate", "")), "1") if len(studies[subject]) > 1 else None
        row = {"series": sidecar.get("SeriesNumber", ""), "description": sidecar.get("SeriesDescription", ""),
               "protocol": sidecar.get("ProtocolName", ""), "subject": subject, "session": session or "",
               "role": "", "why": "", "destination": ""}  # fmt: skip
        rows.append(row)
        role, why = match_role(sidecar, ruleset)
        row["why"] = why
        if role is None:
            continue
        key = (subject, session, role)
        if key in taken:
            row["why"] = f"{why}; duplicate: {role} already imported from series {taken[key]}"
            continue
        if not nifti.is_file():
            row["why"] = f"{why}; dcm2niix wrote no image for this sidecar"
            continue
        taken[key] = str(row["series"])
        entities, suffix = image_entities(role)
        folder = dest / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
        name = bids_name({"sub": subject, **({"ses": session} if session else {}), **entities}, suffix)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(str(nifti), folder / name)  # same file system: a rename, never a half file
        extra = {"GeneratedBy": "gdfree import (dcm2niix)", "gdfreeRole": role, "gdfreeRule": why}
        kept = {k: v for k, v in sidecar.items() if k not in IDENTIFYING}
        write_json(folder / name.replace(".nii.gz", ".json"), {**kept, **extra})
        row.update(role=role, destination=str((folder / name).relative_to(dest)))
    return rows


def import_dicom(src: Path | str, dest: Path | str, rules: Path | str | None = None) -> list[dict[str, Any]]:
    """Convert the DICOM series under ``src`` to a BIDS dataset in ``dest``; returns the rows of import.tsv.

    A second series of a role already filled for an exam (by series number) is not imported and is listed as a
    duplicate, so an exam never silently gets the wrong one.

    Raises:
        FileExistsError: ``dest`` exists and is not empty. OutputConflictError: ``dest`` overlaps ``src``.
        ValueError: no DICOM under ``src``, dcm2niix converted no series, or the rule file is invalid (all
            named; ``dest`` is then not left behind empty).

    dcm2niix's errors, and its warnings about files under ``src`` (a truncated or unreadable file), become rows of
    import.tsv with an empty ``role``: the series it could convert are imported, the others are listed with why.
    """
    from gdfree.io.runs import check_output_folder

    src = Path(src)
    dest = check_output_folder(dest, [src], what="DEST")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty; import writes into a new or empty folder")
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder")
    ruleset = load_rules(rules)
    if not is_dicom_folder(src):
        raise ValueError(f"{src}: no DICOM files found (none of the first files has the DICM marker)")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".gdfree-dcm2niix-", dir=dest) as tmp:
            rows = _convert_and_place(src, Path(tmp), dest, ruleset)
    except ValueError:
        if created:
            shutil.rmtree(dest, ignore_errors=True)  # no empty destination left behind
        raise
    description = dataset_description(
        f"{src.name} imported by gdfree from DICOM", "raw",
        GeneratedBy=[{"Name": "gdfree import", "Version": gdfree.__version__},
                     {"Name": "dcm2niix", "Version": _dcm2niix_version()}],
        SourceDatasets=[{"URL": src.resolve().as_uri()}],
    )  # fmt: skip
    write_json(dest / "dataset_description.json", description)
    subjects = sorted({r["subject"] for r in rows if r["role"]})
    write_tsv(dest / "participants.tsv", [{"participant_id": f"sub-{s}"} for s in subjects])
    write_tsv(dest / "import.tsv", rows)
    return rows


def _dcm2niix_version() -> str:
    try:
        import dcm2niix

        return str(dcm2niix.__version__)
    except ImportError:  # pragma: no cover
        return "unknown"

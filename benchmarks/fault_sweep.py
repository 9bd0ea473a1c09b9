"""A hostile user's sweep: bad inputs, damaged models and bad options against every command, each outcome classed.

Every fault runs the real ``gdfree`` command in a subprocess on a fresh copy of a 3-subject 4 mm phantom
(sub-002 is the one damaged) and an untrained tiny model, with a timeout. Outcomes:

- ``clear error``: exit 2, one ``error:`` line naming what is wrong (the expected words are checked);
- ``case failed, others done``: exit 1, ``failures.tsv`` names the damaged case, the other cases have outputs;
- ``correct``: exit 0 and the result checked (finite maps, every case, the expected rows);
- ``listed with its reason, rest done``: exit 1, the folder or file that is not a case (or a missing output) named
  with why, the rest done (issue 33);
- ``TRACEBACK``, ``HANG`` (timeout), ``INPUT CHANGED`` (any byte or mode of the inputs), ``WRONG``
  (exit 0 with an unchecked or wrong result, or an error that does not say what is wrong).

    python benchmarks/fault_sweep.py --out /tmp/faults [--timeout 120] [--markdown docs/faults.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GDFREE = [sys.executable, "-m", "gdfree"]


@dataclass
class Fault:
    name: str
    command: str
    damage: Callable[[Path, Path], None]
    args: Callable[[Path, Path, Path], list[str]]
    expect: str  # "error", "case", "ok", "info", "listed"
    words: tuple[str, ...] = ()
    check: Callable[[Path], bool] | None = None


def _digest(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for f in folders if f.exists() for p in sorted(f.rglob("*")) if p.is_file()}  # fmt: skip


def _flair(ds: Path, subject: str = "002", role: str = "FLAIR") -> Path:
    return ds / f"sub-{subject}" / "anat" / f"sub-{subject}_{role}.nii.gz"


def _edit_image(path: Path, fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    import nibabel as nib

    img = nib.load(path)
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    out = nib.Nifti1Image(data, affine)
    nib.save(out, path)


def _block(value: float) -> Callable[[Path, Path], None]:
    def damage(ds: Path, run: Path) -> None:
        def fn(d: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            d = d.astype(np.float32)
            d[8:11, 8:11, 8:11] = value
            return d, a

        _edit_image(_flair(ds), fn)

    return damage


def _header(*edits: tuple[int, str, float]) -> Callable[[Path, Path], None]:
    """Patch NIfTI-1 header fields (byte offset, struct code, value) of sub-002's FLAIR."""

    def damage(ds: Path, run: Path) -> None:
        import gzip
        import struct

        path = _flair(ds)
        raw = bytearray(gzip.decompress(path.read_bytes()))
        for offset, fmt, value in edits:
            struct.pack_into("<" + fmt, raw, offset, value)
        path.write_bytes(gzip.compress(bytes(raw)))

    return damage


_NO_SFORM = (254, "h", 0)  # sform_code 0: the grid comes from the qform and pixdim


def _meta(**over: object) -> Callable[[Path, Path], None]:
    def damage(ds: Path, run: Path) -> None:
        meta = json.loads((run / "model.json").read_text())
        (run / "model.json").write_text(json.dumps({**meta, **over}))

    return damage


def _none(ds: Path, run: Path) -> None:
    return None


def _predict(extra: list[str] | None = None) -> Callable[[Path, Path, Path], list[str]]:
    return lambda ds, run, out: ["predict", "--model", str(run), "--input", str(ds), "--out", str(out),
                                 *(extra or [])]  # fmt: skip


def _maps_ok(out: Path, subjects: tuple[str, ...] = ("001", "002", "003")) -> bool:
    import nibabel as nib

    rows = (out / "predictions.tsv").read_text().splitlines()[1:]
    if [r.split("\t")[0] for r in rows] != [f"sub-{s}" for s in subjects]:
        return False
    for s in subjects:
        prob = np.asarray(nib.load(out / f"sub-{s}" / "anat" / f"sub-{s}_desc-enhancing_probseg.nii.gz").dataobj)
        if not (np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1):
            return False
    return True


def _faults() -> list[Fault]:
    import gzip

    def truncate(ds: Path, run: Path) -> None:
        path = _flair(ds)
        path.write_bytes(path.read_bytes()[:-200])

    def mask_values(labels: bool) -> Callable[[Path, Path], None]:
        def damage(ds: Path, run: Path) -> None:
            path = next((ds / "derivatives").rglob("sub-002*_desc-brain_mask.nii.gz"))
            if labels:  # a label map: values 0, 1 and 2
                fn = lambda d, a: ((d > 0) * (1 + (np.indices(d.shape)[0] % 2)), a)  # noqa: E731
            else:  # 0/255, as some tools write binary masks
                fn = lambda d, a: (((d > 0) * 255).astype(np.uint8), a)  # noqa: E731
            _edit_image(path, lambda d, a: (np.asarray(fn(d, a)[0]).astype(np.uint8), a))

        return damage

    def flip_weights(ds: Path, run: Path) -> None:
        data = bytearray((run / "model.safetensors").read_bytes())
        data[len(data) // 2] ^= 0x01
        (run / "model.safetensors").write_bytes(bytes(data))

    def drop(role: str) -> Callable[[Path, Path], None]:
        return lambda ds, run: _flair(ds, role=role).unlink()

    def other_run_in_out(ds: Path, run: Path) -> None:
        out = ds.parent / "out"
        (out / "sub-009" / "anat").mkdir(parents=True)
        (out / "sub-009" / "anat" / "sub-009_desc-enhancing_probseg.nii.gz").write_bytes(b"older map")

    def predicted(ds: Path, run: Path) -> None:
        subprocess.run([*GDFREE, "predict", "--model", str(run), "--input", str(ds), "--out",
                        str(ds.parent / "pred")], check=True, capture_output=True)  # fmt: skip

    def prepared_eval(ds: Path, run: Path) -> None:
        predicted(ds, run)
        stale = ds.parent / "pred" / "sub-002" / "anat" / "sub-002_desc-enhancing_probseg.nii.gz"
        _edit_image(stale, lambda d, a: (d * 0 + 0.9, a))

    def odd_subject(name: str, outside_anat: bool = False) -> Callable[[Path, Path], None]:
        """A copy of sub-002 as folder ``name`` (its files renamed to match), or with its images outside anat/."""

        def damage(ds: Path, run: Path) -> None:
            target = ds / name / ("" if outside_anat else "anat")
            target.mkdir(parents=True)
            for f in (ds / "sub-002" / "anat").glob("sub-002_*.nii.gz"):
                shutil.copy(f, target / f.name.replace("sub-002", name))

        return damage

    def other_dataset(ds: Path, run: Path) -> None:
        from gdfree.phantom.cohort import PhantomConfig, write_cohort

        predicted(ds, run)
        write_cohort(ds.parent / "other", PhantomConfig(resolution_mm=4), 3, seed=8)

    def predicted_into_other(ds: Path, run: Path) -> None:
        predicted(ds, run)
        shutil.copytree(ds, ds.parent / "other")  # a BIDS dataset as --out

    def deleted_map(ds: Path, run: Path) -> None:
        predicted(ds, run)
        next((ds.parent / "pred" / "sub-002" / "anat").glob("*desc-enhancing_probseg.nii.gz")).unlink()

    def edited_activity(ds: Path, run: Path) -> None:
        from gdfree.demo import PRETRAINED

        shutil.copytree(PRETRAINED / "activity", ds.parent / "activity")
        meta = json.loads((ds.parent / "activity" / "activity.json").read_text())
        (ds.parent / "activity" / "activity.json").write_text(json.dumps({**meta, "threshold": 0.01}))

    report = lambda ds, run, out, where="ds": ["report", "--out", str(out), "--predictions",  # noqa: E731
                                               str(ds.parent / "pred"), "--input", str(ds.parent / where),
                                               "--no-viewer"]  # fmt: skip
    evaluate = lambda ds, run, out: ["evaluate", "--pred", str(ds.parent / "pred"), "--ref", str(ds),  # noqa: E731
                                     "--out", str(out), "--n-boot", "10"]  # fmt: skip
    return [
        Fault("NaN block in one FLAIR", "predict", _block(np.nan), _predict(), "case", ("NaN", "sub-002_FLAIR")),
        Fault("Inf block in one FLAIR", "predict", _block(np.inf), _predict(), "case", ("infinite",)),
        Fault("NaN block in one FLAIR", "prepare", _block(np.nan),
              lambda ds, run, out: ["prepare", str(ds), "--out", str(out), "--no-n4", "--no-register"], "case",
              ("NaN",)),
        Fault("NaN block in one FLAIR", "info", _block(np.nan), lambda ds, run, out: ["info", str(ds)], "info",
              ("NaN",)),
        Fault("complex voxels", "predict",
              lambda ds, run: _edit_image(_flair(ds), lambda d, a: (d.astype(np.complex64), a)), _predict(), "case",
              ("not a real number",)),
        Fault("4-D image (3 volumes)", "predict",
              lambda ds, run: _edit_image(_flair(ds), lambda d, a: (np.stack([d] * 3, -1), a)), _predict(), "case",
              ("4-D",)),
        Fault("pixdim 0 under a valid sform (the sform defines the grid)", "predict", _header((80, "f", 0.0)),
              _predict(), "ok", check=_maps_ok),
        Fault("pixdim 0 and no sform (zero voxel size)", "predict", _header((80, "f", 0.0), _NO_SFORM), _predict(),
              "case", ("sub-002_FLAIR",)),
        Fault("pixdim 1e6 and no sform", "predict", _header((80, "f", 1e6), _NO_SFORM), _predict(), "case",
              ("voxel size",)),
        Fault("absurd voxel size (1e6 mm)", "predict",
              lambda ds, run: _edit_image(_flair(ds), lambda d, a: (d, a @ np.diag([1e6, 1, 1, 1]))), _predict(),
              "case", ("voxel size",)),
        Fault("singular sform, no qform", "predict",
              _header((312, "f", 0.0), (316, "f", 0.0), (320, "f", 0.0), (252, "h", 0)), _predict(), "case",
              ("sub-002_FLAIR",)),
        Fault("truncated gzip", "predict", truncate, _predict(), "case", ("truncated",)),
        Fault("header claims more data than the file holds", "predict", _header((42, "h", 400)), _predict(), "case",
              ("sub-002_FLAIR",)),
        Fault("empty file", "predict", lambda ds, run: _flair(ds).write_bytes(b""), _predict(), "case",
              ("sub-002_FLAIR",)),
        Fault("text file named .nii.gz", "predict", lambda ds, run: _flair(ds).write_bytes(gzip.compress(b"hello")),
              _predict(), "case", ("sub-002_FLAIR",)),
        Fault("all-zero image (empty brain)", "predict",
              lambda ds, run: _edit_image(_flair(ds), lambda d, a: (d * 0, a)), _predict(), "case", ("empty",)),
        Fault("missing T2w", "predict", drop("T2w"), _predict(), "case", ("missing T2w",)),
        Fault("brain mask with label values 0/1/2", "predict", mask_values(True), _predict(), "case",
              ("not a binary mask",)),
        Fault("brain mask stored as 0/255", "predict", mask_values(False), _predict(), "ok", check=_maps_ok),
        Fault("weights with one flipped bit", "predict", flip_weights, _predict(), "error", ("SHA-256",)),
        Fault("modalities reordered in model.json", "predict", _meta(modalities=["FLAIR", "T2w", "T1w"]),
              _predict(), "error", ("edited after training",)),
        Fault("heads reordered in model.json", "predict", _meta(heads=["lesion", "enhancing"]), _predict(), "error",
              ("heads",)),
        Fault("temperature 0 in model.json", "predict", _meta(temperature={"enhancing": 0}), _predict(), "error",
              ("temperature.enhancing",)),
        Fault("threshold 2 in model.json", "predict", _meta(threshold=2), _predict(), "error", ("threshold",)),
        Fault("model.json not JSON", "predict", lambda ds, run: (run / "model.json").write_text("{oops"),
              _predict(), "error", ("not valid JSON",)),
        Fault("model.json missing", "predict", lambda ds, run: (run / "model.json").unlink(), _predict(), "error",
              ("model.json: not found",)),
        Fault("unknown architecture class", "predict", _meta(architecture={"class": "Evil", "kwargs": {}}),
              _predict(), "error", ("architecture",)),
        Fault("--mc -1", "predict", _none, _predict(["--mc", "-1"]), "error", ("mc",)),
        Fault("--device tpu", "predict", _none, _predict(["--device", "tpu"]), "error", ("--device",)),
        Fault("--device cuda without CUDA", "predict", _none, _predict(["--device", "cuda"]), "error", ("CUDA",)),
        Fault("--out equal to the input", "predict", _none,
              lambda ds, run, out: ["predict", "--model", str(run), "--input", str(ds), "--out", str(ds)], "error",
              ("never writes",)),
        Fault("--out inside the input", "prepare", _none,
              lambda ds, run, out: ["prepare", str(ds), "--out", str(ds / "prepared"), "--no-n4"], "error",
              ("never writes",)),
        Fault("--out equal to the input", "prepare", _none,
              lambda ds, run, out: ["prepare", str(ds), "--out", str(ds), "--no-n4"], "error", ("never writes",)),
        Fault("--out is a file", "predict", lambda ds, run: (ds.parent / "notes.txt").write_text("mine"),
              lambda ds, run, out: ["predict", "--model", str(run), "--input", str(ds), "--out",
                                    str(ds.parent / "notes.txt")], "error", ("not a folder",)),
        Fault("--input does not exist", "predict", _none,
              lambda ds, run, out: ["predict", "--model", str(run), "--input", str(ds / "nothing"), "--out",
                                    str(out)], "error", ("nothing",)),
        Fault("out holds another run's outputs", "predict", other_run_in_out,
              lambda ds, run, out: ["predict", "--model", str(run), "--input", str(ds), "--out",
                                    str(ds.parent / "out")], "error", ("--overwrite",)),
        Fault("prediction edited after predict", "evaluate", prepared_eval, evaluate, "error", ("changed since",)),
        Fault("--spacing -1", "prepare", _none,
              lambda ds, run, out: ["prepare", str(ds), "--out", str(out), "--spacing", "-1"], "error", ("spacing",)),
        Fault("--jobs 0", "prepare", _none,
              lambda ds, run, out: ["prepare", str(ds), "--out", str(out), "--jobs", "0"], "error", ("jobs",)),
        Fault("--subjects 0", "synth", _none,
              lambda ds, run, out: ["synth", "--out", str(out), "--subjects", "0"], "error", ("subjects",)),
        Fault("--resolution 3", "synth", _none,
              lambda ds, run, out: ["synth", "--out", str(out), "--resolution", "3"], "error", ("resolution",)),
        Fault("--threshold 2", "evaluate", predicted,
              lambda ds, run, out: [*evaluate(ds, run, out), "--threshold", "2"], "error", ("threshold",)),
        Fault("--crop 0", "explain", _none,
              lambda ds, run, out: ["explain", "--model", str(run), "--case", str(ds / "sub-001"), "--out", str(out),
                                    "--crop", "0"], "error", ("crop",)),
        Fault("--steps 0", "explain", _none,
              lambda ds, run, out: ["explain", "--model", str(run), "--case", str(ds / "sub-001"), "--out", str(out),
                                    "--steps", "0"], "error", ("steps",)),
        Fault("--steps 0", "demo", _none, lambda ds, run, out: ["demo", "--out", str(out), "--steps", "0"], "error",
              ("steps",)),
        Fault("subject folder sub-02_baseline (label not BIDS)", "info", odd_subject("sub-02_baseline"),
              lambda ds, run, out: ["info", str(ds), "--quick"], "info", ("not a BIDS subject folder name",
                                                                          "sub-02baseline")),
        Fault("subject folder Sub-04 (upper case)", "prepare", odd_subject("Sub-04"),
              lambda ds, run, out: ["prepare", str(ds), "--out", str(out), "--no-n4", "--no-register"], "listed",
              ("Sub-04",)),
        Fault("subject images outside anat/", "predict", odd_subject("sub-05", outside_anat=True), _predict(),
              "listed", ("outside sub-05/anat/",)),
        Fault("report --input of another dataset", "report", other_dataset,
              lambda ds, run, out: report(ds, run, out, "other"), "error", ("was not predicted from",)),
        Fault("report into a folder it does not own", "report", predicted_into_other,
              lambda ds, run, out: report(ds, run, ds.parent / "other"), "error", ("no earlier gdfree report wrote",)),
        Fault("a deleted probability map", "report", deleted_map, report, "listed", ("missing",)),
        Fault("activity.json threshold edited", "predict", edited_activity,
              lambda ds, run, out: [*_predict()(ds, run, out), "--activity", str(ds.parent / "activity")], "error",
              ("meta_sha256",)),
        Fault("NaN block in one FLAIR", "explain", _block(np.nan),
              lambda ds, run, out: ["explain", "--model", str(run), "--case", str(ds), "--out", str(out),
                                    "--methods", "occlusion", "--occlusions", "mean", "--crop", "8",
                                    "--no-sanity"], "case", ("NaN",)),
    ]  # fmt: skip


def _classify(fault: Fault, proc: subprocess.CompletedProcess | None, out: Path, changed: bool) -> str:
    if proc is None:
        return "HANG"
    text = proc.stdout + proc.stderr
    if "Traceback" in text:
        return "TRACEBACK"
    if changed:
        return "INPUT CHANGED"
    said = all(w in text or ((out / "failures.tsv").is_file() and w in (out / "failures.tsv").read_text())
               for w in fault.words)  # fmt: skip
    if fault.expect == "info":
        return "unusable case reported" if proc.returncode == 1 and said else f"WRONG (exit {proc.returncode})"
    if fault.expect == "listed":  # the command did the rest, named what it could not, and exits 1
        ok = proc.returncode == 1 and said
        return "listed with its reason, rest done" if ok else f"WRONG (exit {proc.returncode})"
    if proc.returncode == 2:
        return "clear error" if "error:" in text and said else "WRONG (error does not say what)"
    if proc.returncode == 1:
        failures = (out / "failures.tsv").read_text() if (out / "failures.tsv").is_file() else ""
        others = all((out / f"sub-{s}").is_dir() for s in ("001", "003"))
        ok = "sub-002" in failures and others and said
        return "case failed, others done" if ok else "WRONG (exit 1 unexplained)"
    if proc.returncode == 0:
        return "correct" if fault.check is not None and fault.check(out) else "WRONG (exit 0)"
    return f"WRONG (exit {proc.returncode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here too")
    parser.add_argument("--only", default=None, help="run the faults whose name contains this")
    args = parser.parse_args()

    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import untrained_run

    base = args.out / "base"
    if not (base / "ds").is_dir():
        write_cohort(base / "ds", PhantomConfig(resolution_mm=4), 3, seed=7)
        untrained_run(base / "run")
    rows = []
    for k, fault in enumerate(_faults()):
        if args.only and args.only not in fault.name:
            continue
        work = args.out / f"fault-{k:02d}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        ds, run, out = work / "ds", work / "run", work / "out-cmd"
        fault.damage(ds, run)
        before = _digest(ds, run)
        start = time.perf_counter()
        try:
            proc = subprocess.run([*GDFREE, *fault.args(ds, run, out)], capture_output=True, text=True,
                                  timeout=args.timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            proc = None
        seconds = time.perf_counter() - start
        changed = _digest(ds, run) != before
        outcome = _classify(fault, proc, out, changed)
        said = "" if proc is None else (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])
        message = said[-1] if isinstance(said, list) else said
        if fault.expect in ("case", "info") and (out / "failures.tsv").is_file():
            message = (out / "failures.tsv").read_text().splitlines()[1]
        rows.append({"fault": fault.name, "command": fault.command, "expected": fault.expect, "outcome": outcome,
                     "exit": None if proc is None else proc.returncode, "seconds": round(seconds, 1),
                     "message": " ".join(message.split())[:160]})  # fmt: skip
        print(f"{fault.command:9s} {fault.name:45s} -> {outcome} ({rows[-1]['exit']}, {seconds:.0f} s)", flush=True)
    bad = [r for r in rows if r["outcome"].isupper() or r["outcome"].startswith("WRONG")]
    print(f"{len(rows)} faults: {len(rows) - len(bad)} handled, {len(bad)} not")
    (args.out / "faults.json").write_text(json.dumps(rows, indent=1))
    if args.markdown:
        lines = ["| command | fault | outcome | exit | what it said |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['command']} | {r['fault']} | {r['outcome']} | {r['exit']} | "
                  f"{r['message'].replace('|', '/')} |" for r in rows]  # fmt: skip
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

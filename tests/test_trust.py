"""Issue 16: inputs are never written to, bad inputs are reported per case, outputs belong to one run.

Each test reproduces a fault found by trying gdfree as a hostile user would; each failed before the change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.bids import derivative_path
from gdfree.io.images import read_volume, write_volume
from tests.conftest import nan_block, untrained_run

runner = CliRunner()
MODALITIES = ["T1w", "T2w", "FLAIR"]


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its SHA-256 and mode: what 'unchanged' means."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def cohort(tiny_cohort: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, copy)
    return copy


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_run(tmp_path_factory.mktemp("run") / "run")


def _predict(run: Path, source: Path, out: Path, *options: str):
    return runner.invoke(app, ["predict", "--model", str(run), "--input", str(source), "--out", str(out), *options])


def test_prepare_and_predict_refuse_to_write_into_their_input(cohort: Path, run: Path):
    before = _digest(cohort)
    for out in (cohort, cohort / "derivatives" / "prepared", cohort.parent):
        result = runner.invoke(app, ["prepare", str(cohort), "--out", str(out), "--no-n4", "--no-register"])
        assert result.exit_code == 2, result.output
        assert "never writes" in result.output
    for out in (cohort, cohort / "sub-001"):
        result = _predict(run, cohort, out)
        assert result.exit_code == 2 and "never writes" in result.output, result.output
    result = runner.invoke(app, ["evaluate", "--pred", str(cohort), "--ref", str(cohort), "--out", str(cohort)])
    assert result.exit_code == 2 and "never writes" in result.output
    result = runner.invoke(app, ["import", str(cohort), str(cohort / "bids")])
    assert result.exit_code == 2 and "never writes" in result.output
    assert _digest(cohort) == before  # not one byte or mode changed


def test_a_nan_block_fails_that_case_alone_and_a_rerun_does_no_repeated_work(
    cohort: Path, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from gdfree.predict import case as predict_module

    original = (cohort / "sub-002" / "anat" / "sub-002_FLAIR.nii.gz").read_bytes()
    flair = nan_block(cohort)
    out = tmp_path / "pred"
    result = _predict(run, cohort, out)
    assert result.exit_code == 1, result.output
    failures = (out / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("sub-002\t") and "NaN" in failures[1]
    assert "sub-002_FLAIR.nii.gz" in failures[1]
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-001", "sub-003"]  # no "not active" row for sub-002
    assert not derivative_path(out, "002", None, "probseg", desc="enhancing").exists()
    for subject in ("001", "003"):
        prob = read_volume(derivative_path(out, subject, None, "probseg", desc="enhancing")).data
        assert np.isfinite(prob).all()

    calls: list[str] = []
    real = predict_module.predict_case

    def counted(model, case, *args, **kwargs):
        calls.append(case.case_id)
        return real(model, case, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_case", counted)
    again = _predict(run, cohort, out)
    assert again.exit_code == 1 and calls == []  # sub-002 fails on reading again; nothing else is redone
    flair.write_bytes(original)  # the user fixes the exam
    fixed = _predict(run, cohort, out)
    assert fixed.exit_code == 0, fixed.output
    assert calls == ["sub-002"] and not (out / "failures.tsv").exists()
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-001", "sub-002", "sub-003"]


def test_prepare_reports_a_nan_case_and_goes_on(cohort: Path, tmp_path: Path):
    nan_block(cohort)
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(cohort), "--out", str(out), "--no-n4", "--no-register"])
    assert result.exit_code == 1, result.output
    failures = (out / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("sub-002\t") and "NaN or infinite" in failures[1]
    assert (out / "sub-001" / "anat").is_dir() and (out / "sub-003" / "anat").is_dir()


def test_tampered_models_are_refused(run: Path, cohort: Path, tmp_path: Path):
    weights = tmp_path / "flipped"
    shutil.copytree(run, weights)
    data = bytearray((weights / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (weights / "model.safetensors").write_bytes(bytes(data))
    reordered = tmp_path / "reordered"
    shutil.copytree(run, reordered)
    meta = json.loads((reordered / "model.json").read_text())
    (reordered / "model.json").write_text(json.dumps({**meta, "modalities": ["FLAIR", "T2w", "T1w"]}))
    for folder, message in ((weights, "SHA-256"), (reordered, "edited after training")):
        result = _predict(folder, cohort, tmp_path / f"out-{folder.name}")
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / f"out-{folder.name}").exists()


def test_outputs_belong_to_one_run(run: Path, cohort: Path, tmp_path: Path):
    other = untrained_run(tmp_path / "other", seed=1)
    out = tmp_path / "pred"
    assert _predict(run, cohort / "sub-001", out).exit_code == 0
    assert _predict(run, cohort / "sub-002", out).exit_code == 0  # one subject at a time, same model
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-001", "sub-002"]
    refused = _predict(other, cohort / "sub-003", out)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert _predict(run, cohort, out, "--flips").exit_code == 2  # other options: refused too
    # a stale file from elsewhere in the folder is refused by evaluate
    stale = derivative_path(out, "003", None, "probseg", desc="enhancing")
    stale.parent.mkdir(parents=True)
    shutil.copy(derivative_path(out, "001", None, "probseg", desc="enhancing"), stale)
    result = runner.invoke(app, ["evaluate", "--pred", str(out), "--ref", str(cohort), "--out",
                                 str(tmp_path / "eval"), "--only-predicted", "--n-boot", "10"])  # fmt: skip
    assert result.exit_code == 2 and "not an output of the run" in result.output, result.output
    stale.unlink()
    replaced = _predict(other, cohort / "sub-003", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-003"]
    assert not derivative_path(out, "001", None, "probseg", desc="enhancing").exists()
    mode = derivative_path(out, "003", None, "probseg", desc="enhancing").stat().st_mode
    assert mode & 0o040 or os.umask(0o022) & 0o040  # readable by the group unless the umask forbids it
    assert not list(out.rglob(".*.tmp*"))


def test_old_outputs_without_a_manifest_are_not_mixed_in(run: Path, cohort: Path, tmp_path: Path):
    out = tmp_path / "pred"
    old = derivative_path(out, "003", None, "probseg", desc="enhancing")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an older run's map")
    result = _predict(run, cohort / "sub-001", out)
    assert result.exit_code == 2 and "without a manifest" in result.output
    assert old.read_bytes() == b"an older run's map"


def test_leftover_temporary_files_are_cleaned_on_the_next_run(run: Path, cohort: Path, tmp_path: Path):
    out = tmp_path / "pred"
    leftover = out / "sub-001" / "anat" / ".sub-001_desc-enhancing_probseg.nii.gz.abc123.tmp.nii.gz"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a file")
    assert _predict(run, cohort / "sub-001", out).exit_code == 0
    assert not leftover.exists()


def test_predict_opens_no_connection(run: Path, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from gdfree.predict import predict_dataset

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    rows = predict_dataset(run, cohort, tmp_path / "pred", mc=2, flips=True, seed=0)
    assert len(rows) == 3 and attempts == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "tpu"], "expected cpu, cuda or cuda:N"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--mc", "-1"], "mc: expected 0 or more"),
    ],
)
def test_bad_options_end_in_a_clear_error(run: Path, cohort: Path, tmp_path: Path, options: list[str], message: str):
    import torch

    if "cuda" in options[-1] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    result = _predict(run, cohort, tmp_path / "out", *options)
    assert result.exit_code == 2 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit)


def test_an_output_path_that_is_a_file_is_refused(run: Path, cohort: Path, tmp_path: Path):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    result = _predict(run, cohort, target / "pred")
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused(run: Path, cohort: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = _predict(run, cohort, locked / "pred")
        assert result.exit_code == 2 and "not writable" in result.output
    finally:
        locked.chmod(0o755)


def test_one_lesion_connectivity_everywhere():
    from gdfree.metrics.lesions import LESION_CONNECTIVITY, DetectionRule, label_lesions
    from gdfree.preprocess.enhancing import EnhancingConfig

    assert EnhancingConfig().connectivity == DetectionRule().connectivity == LESION_CONNECTIVITY == 6
    corners = np.zeros((4, 4, 4), bool)
    corners[1, 1, 1] = corners[2, 2, 2] = True  # touching at a corner only: two lesions
    assert label_lesions(corners, (1.0, 1.0, 1.0))[1] == 2


def test_an_empty_acquisition_fails_that_case_alone(cohort: Path, run: Path, tmp_path: Path):
    path = cohort / "sub-003" / "anat" / "sub-003_T2w.nii.gz"
    vol = read_volume(path)
    write_volume(vol.with_data(np.zeros(vol.shape, np.float32)), path)
    out = tmp_path / "pred"
    result = _predict(run, cohort, out)
    assert result.exit_code == 1, result.output
    failures = (out / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("sub-003\t")
    assert "sub-003_T2w.nii.gz: constant (0) over the whole brain" in failures[1]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["prepare", "{ds}", "--out", "{tmp}/p", "--jobs", "0"], "--jobs: expected 1 or more"),
        (["explain", "--model", "{run}", "--case", "{ds}/sub-001", "--out", "{tmp}/e", "--crop", "0"],
         "--crop: expected 8 or more"),
        (["explain", "--model", "{run}", "--case", "{ds}/sub-001", "--out", "{tmp}/e", "--steps", "0"],
         "--steps: expected 1 or more"),
        (["demo", "--out", "{tmp}/d", "--steps", "0"], "max_steps"),
        (["demo", "--out", "{tmp}/d", "--subjects", "0"], "--subjects"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(
    command: list[str], message: str, cohort: Path, run: Path, tmp_path: Path
):
    args = [a.format(ds=cohort, run=run, tmp=tmp_path) for a in command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert isinstance(result.exception, SystemExit)
    assert not any((tmp_path / name).exists() for name in ("p", "e", "d"))


def test_explain_maps_a_crop_smaller_than_the_occlusion_reach(cohort: Path, run: Path, tmp_path: Path):
    result = runner.invoke(app, ["explain", "--model", str(run), "--case", str(cohort / "sub-001"), "--out",
                                 str(tmp_path / "e"), "--lesions", "lesion-mask", "--methods", "occlusion",
                                 "--occlusions", "mean", "--crop", "8", "--no-sanity", "--no-permutation"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "e").rglob("*Occlusion*.nii.gz"))


def test_an_explanation_folder_belongs_to_one_explanation(cohort: Path, run: Path, tmp_path: Path):
    base = ["explain", "--model", str(run), "--case", str(cohort / "sub-001"), "--out", str(tmp_path / "e"),
            "--lesions", "lesion-mask", "--methods", "occlusion", "--occlusions", "mean", "--no-sanity",
            "--no-permutation"]  # fmt: skip
    assert runner.invoke(app, [*base, "--crop", "8"]).exit_code == 0
    maps = sorted(p.name for p in (tmp_path / "e").rglob("*_attribution.nii.gz"))
    again = runner.invoke(app, [*base, "--crop", "16"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, [*base, "--crop", "8"]).exit_code == 0  # same options: recomputed in place
    assert sorted(p.name for p in (tmp_path / "e").rglob("*_attribution.nii.gz")) == maps
    replaced = runner.invoke(app, [*base, "--crop", "16", "--all-lesions", "--max-mapped", "1", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output

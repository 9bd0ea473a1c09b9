"""Issue 20: a cohort split into shards that share one output folder makes exactly one run's files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.runs import parse_shard, remove_stale_temporaries, select_shard
from tests.conftest import nan_block, untrained_run

runner = CliRunner()


def _files(folder: Path) -> dict[str, str]:
    """Relative path -> content digest of every file (the creation time of dataset_description.json left out)."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "dataset_description.json":
            data = json.dumps({k: v for k, v in json.loads(data).items() if k != "GeneratedAt"}).encode()
        found[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return found


def test_shards_are_balanced_disjoint_and_complete():
    ids = [f"sub-{i:03d}" for i in range(23)]
    for n in (1, 2, 5, 23, 30):
        parts = [select_shard(ids, (k, n), key=str) for k in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == ids
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert select_shard(ids[::-1], (1, 2), key=str) == select_shard(ids, (1, 2), key=str)[::-1]  # order kept


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_bad_shards_are_refused(text: str):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def _predict_args(run: Path, source: Path, out: Path, *options: str) -> list[str]:
    return ["predict", "--model", str(run), "--input", str(source), "--out", str(out), *options]


def test_predict_shards_into_one_folder_make_the_files_of_one_run(tiny_cohort: Path, tmp_path: Path):
    run = untrained_run(tmp_path / "run")
    whole = tmp_path / "whole"
    assert runner.invoke(app, _predict_args(run, tiny_cohort, whole)).exit_code == 0
    shared = tmp_path / "shared"
    first = runner.invoke(app, _predict_args(run, tiny_cohort, shared, "--shard", "2/2"))
    assert first.exit_code == 0, first.output
    assert len((shared / "predictions.tsv").read_text().splitlines()) == 2  # one of three cases so far
    second = runner.invoke(app, _predict_args(run, tiny_cohort, shared, "--shard", "1/2"))
    assert second.exit_code == 0, second.output
    assert _files(shared) == _files(whole)
    assert len((shared / "predictions.tsv").read_text().splitlines()) == 4


@pytest.mark.slow
def test_concurrent_shards_with_a_failing_case(tiny_cohort: Path, tmp_path: Path):
    """Two processes at once into one folder: all outputs, and the failure of one shard's case kept."""
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    nan_block(cohort, "003")  # sorted ids 001, 002, 003: shard 1/2 holds 001 and 003, shard 2/2 holds 002
    run = untrained_run(tmp_path / "run")
    out = tmp_path / "pred"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "gdfree", *_predict_args(run, cohort, out, "--shard", k)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in ("1/2", "2/2")]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 0], outputs
    failures = (out / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("sub-003\t")
    rows = (out / "predictions.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["sub-001", "sub-002"]
    assert not list(out.rglob(".*.tmp*"))


def test_a_temporary_of_a_live_process_is_not_removed(tmp_path: Path):
    """Another shard's file being written is left alone; an interrupted process's leftover is removed."""
    from gdfree.io.images import host_name

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        writing = tmp_path / f".a_probseg.nii.gz.gd{live.pid}@{host_name()}.x1.tmp.nii.gz"
        leftover = tmp_path / f".b_probseg.nii.gz.gd{dead}@{host_name()}.x2.tmp.nii.gz"
        elsewhere = tmp_path / ".c_probseg.nii.gz.gd1@another-host.x3.tmp.nii.gz"
        old = tmp_path / ".d_probseg.nii.gz.gd1@another-host.x4.tmp.nii.gz"
        for path in (writing, leftover, elsewhere, old):
            path.write_bytes(b"part")
        os.utime(old, (time.time() - 7 * 3600,) * 2)
        assert sorted(remove_stale_temporaries(tmp_path)) == sorted([leftover, old])
        assert writing.exists() and elsewhere.exists()
    finally:
        live.kill()
        live.wait()


def test_prepare_shards_into_one_folder_make_the_files_of_one_run(tiny_cohort: Path, tmp_path: Path):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    nan_block(cohort, "002")  # the one case of shard 2/2 fails; shard 1/2 must not forget that
    base = ["prepare", str(cohort), "--no-n4", "--no-register", "--brain-mask", "provided"]
    whole = runner.invoke(app, [*base, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 1, whole.output
    shared = tmp_path / "shared"
    assert runner.invoke(app, [*base, "--out", str(shared), "--shard", "2/2"]).exit_code == 1
    assert runner.invoke(app, [*base, "--out", str(shared), "--shard", "1/2"]).exit_code == 0
    assert (shared / "failures.tsv").read_text() == (tmp_path / "whole" / "failures.tsv").read_text()
    assert _files(shared).keys() == _files(tmp_path / "whole").keys()


def test_evaluate_shards_write_the_tables_of_one_run(tiny_cohort: Path, tmp_path: Path):
    run = untrained_run(tmp_path / "run")
    pred = tmp_path / "pred"
    assert runner.invoke(app, _predict_args(run, tiny_cohort, pred)).exit_code == 0
    base = ["evaluate", "--pred", str(pred), "--ref", str(tiny_cohort), "--n-boot", "50", "--target", "lesion"]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "whole")]).exit_code == 0
    shared = tmp_path / "shared"
    partial = runner.invoke(app, [*base, "--out", str(shared), "--shard", "2/2"])
    assert partial.exit_code == 0 and "other shards" in partial.output, partial.output
    assert not (shared / "summary.json").exists()
    assert runner.invoke(app, [*base, "--out", str(shared), "--shard", "1/2"]).exit_code == 0
    for name in ("cases.tsv", "lesions.tsv", "froc.tsv", "reliability.tsv", "by_volume.tsv"):
        assert (shared / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    one, other = (json.loads((f / "summary.json").read_text()) for f in (shared, tmp_path / "whole"))
    for summary in (one, other):
        summary["provenance"].pop("created")
    assert one == other


def test_a_case_result_survives_its_record():
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.cohort import evaluate_case, result_from_json, result_to_json

    ref = np.zeros((12, 12, 12), bool)
    ref[2:5, 2:5, 2:5] = True
    prob = np.zeros(ref.shape, np.float32)
    prob[3:6, 3:6, 3:6] = 0.8
    result = evaluate_case(ref, (2.0, 2.0, 2.0), case_id="sub-1", prob=prob, brain=np.ones_like(ref),
                           config=EvaluationConfig(n_boot=10))  # fmt: skip
    result.row["nan_metric"] = float("nan")
    back = result_from_json(json.loads(json.dumps(result_to_json(result))))
    assert back.case_id == "sub-1" and back.match.counts == result.match.counts
    assert np.isnan(back.row["nan_metric"]) and back.row["lesion_f1"] == result.row["lesion_f1"]
    np.testing.assert_array_equal(back.froc.detected, result.froc.detected)
    np.testing.assert_array_equal(back.reliability.count, result.reliability.count)
    assert back.match.rule == result.match.rule

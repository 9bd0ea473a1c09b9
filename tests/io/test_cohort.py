"""The one cohort runner: selection, refusal before writing, failures that do not stop the cohort, resume."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdfree.io.cohort import CaseDone, run_cohort, select


@dataclass(frozen=True)
class Item:
    case_id: str
    subject: str
    value: int


ITEMS = [Item("sub-01_ses-1", "01", 1), Item("sub-01_ses-2", "01", 2), Item("sub-02", "02", -1),
         Item("sub-03", "03", 3)]  # fmt: skip


def _write(item: Item, inputs: tuple[str, ...], out: Path, calls: list[str] | None = None) -> CaseDone:
    if calls is not None:
        calls.append(item.case_id)
    if item.value < 0:
        raise ValueError(f"{item.case_id}: negative")
    path = out / f"{item.case_id}.txt"
    path.write_text(str(item.value))
    return CaseDone({"case_id": item.case_id, "value": item.value}, [path])


def test_select_names_subjects_and_refuses_unknown_or_empty_names():
    assert [i.case_id for i in select(ITEMS, ["01"], where="d")] == ["sub-01_ses-1", "sub-01_ses-2"]
    assert [i.case_id for i in select(ITEMS, ["sub-03", "sub-02"], where="d")] == ["sub-02", "sub-03"]
    with pytest.raises(ValueError, match="d: no case sub-09"):
        select(ITEMS, ["sub-03", "sub-09"], where="d")
    with pytest.raises(ValueError, match="empty list"):
        select(ITEMS, [""], where="d")
    with pytest.raises(ValueError, match="no case found"):
        select([], None, where="d")
    shards = [select(ITEMS, None, (k, 2), where="d") for k in (1, 2)]
    assert sorted(i.case_id for s in shards for i in s) == sorted(i.case_id for i in ITEMS)


def test_a_refused_case_stops_the_run_before_anything_is_written(tmp_path: Path):
    def refuse(item: Item, inputs: tuple[str, ...]) -> None:
        if item.case_id == "sub-03":  # the last case: the check runs before the first is worked on
            raise ValueError("sub-03: a training case of the model")

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="training case"):
        run_cohort(ITEMS, out, {"command": "t"}, fingerprint=lambda i: [str(i.value)],
                   work=functools.partial(_write, out=out), refuse=refuse)  # fmt: skip
    assert not out.exists()


def test_a_failing_case_is_recorded_the_others_go_on_and_a_rerun_skips_the_finished(tmp_path: Path):
    out, calls = tmp_path / "out", []
    work = functools.partial(_write, out=out, calls=calls)

    def fingerprint(item: Item) -> list[str]:
        if item.case_id == "sub-01_ses-2":
            raise ValueError("missing FLAIR needed by the model")
        return [str(item.value)]

    first = run_cohort(ITEMS, out, {"command": "t"}, fingerprint=fingerprint, work=work)
    assert first.done == ["sub-01_ses-1", "sub-03"] and first.skipped == []
    assert first.failed == {"sub-01_ses-2": "missing FLAIR needed by the model", "sub-02": "sub-02: negative"}
    assert [r["case_id"] for r in first.rows] == [i.case_id for i in ITEMS]  # every case accounted for, in order
    assert (out / "failures.tsv").read_text().count("\n") == 3
    calls.clear()
    again = run_cohort(ITEMS, out, {"command": "t"}, fingerprint=fingerprint, work=work)
    assert again.skipped == ["sub-01_ses-1", "sub-03"] and calls == ["sub-02"]  # failures are retried
    (out / "sub-03.txt").write_text("edited")  # an output changed since: done again
    calls.clear()
    run_cohort(ITEMS, out, {"command": "t"}, fingerprint=fingerprint, work=work)
    assert calls == ["sub-02", "sub-03"]


def test_another_identity_is_refused_unless_overwrite(tmp_path: Path):
    out = tmp_path / "out"
    run_cohort(ITEMS[:1], out, {"command": "t"}, fingerprint=lambda i: [str(i.value)],
               work=functools.partial(_write, out=out))  # fmt: skip
    with pytest.raises(ValueError, match="--overwrite"):
        run_cohort(ITEMS[:1], out, {"command": "u"}, fingerprint=lambda i: [str(i.value)],
                   work=functools.partial(_write, out=out))  # fmt: skip


def test_jobs_run_the_cases_in_processes_and_record_each(tmp_path: Path):
    out = tmp_path / "out"
    result = run_cohort(ITEMS, out, {"command": "t"}, fingerprint=lambda i: [str(i.value)],
                        work=functools.partial(_write, out=out), jobs=2)  # fmt: skip
    assert sorted(result.done) == ["sub-01_ses-1", "sub-01_ses-2", "sub-03"] and list(result.failed) == ["sub-02"]
    assert (out / "sub-01_ses-2.txt").read_text() == "2"


def test_case_records_are_typed_and_those_from_before_still_count(tmp_path: Path):
    import json

    from gdfree.io.runs import RECORDS, CaseRecord

    out = tmp_path / "out"
    run_cohort(ITEMS[:1], out, {"command": "t"}, fingerprint=lambda i: [str(i.value)],
               work=functools.partial(_write, out=out))  # fmt: skip
    path = out / RECORDS / "sub-01_ses-1.json"
    written = json.loads(path.read_text())
    assert written["schema_version"] == 1 and CaseRecord.from_json(written).row["value"] == 1
    path.write_text(json.dumps({k: v for k, v in written.items() if k != "schema_version"}))  # an older gdfree's
    again = run_cohort(ITEMS[:1], out, {"command": "t"}, fingerprint=lambda i: [str(i.value)],
                       work=functools.partial(_write, out=out))  # fmt: skip
    assert again.skipped == ["sub-01_ses-1"] and again.manifest.cases["sub-01_ses-1"].schema_version == 0
    with pytest.raises(ValueError, match="expected inputs"):
        CaseRecord.from_json({"inputs": "x"}, "r.json")

"""gdfree.report: pages, pictures, colour tables, escaping, inputs left alone, failures reported."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.errors import GdfreeError
from gdfree.io.colours import MASK_COLOURS, Label, write_colour_tables
from gdfree.report import case_slug, write_reports
from gdfree.report.cohort import roc_band, write_cohort_report
from gdfree.report.figures import mosaic_slices
from gdfree.report.viewer import script_json

EVIL = "<script>window.pwned=1</script>"


class _Page(HTMLParser):
    """The text, links, images and script sources of a page, and the rows of each table by id."""

    def __init__(self) -> None:
        super().__init__()
        self.text, self.links, self.images, self.scripts = [], [], [], []
        self.rows: dict[str, int] = {}
        self._table: str | None = None
        self._in_script = False
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "script":
            self._in_script = True
            if a.get("src"):
                self.scripts.append(a["src"])
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table and "data-lesion" in a:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_reports_of_a_predicted_cohort(predicted: dict[str, Path], tmp_path: Path) -> None:
    before = {k: _digest(v) for k, v in predicted.items()}
    result = write_reports(tmp_path / "report", evaluation=predicted["evaluation"])  # finds the rest itself
    assert not result.failures and sorted(result.cases) == ["sub-001", "sub-002", "sub-003"]
    assert {k: _digest(v) for k, v in predicted.items()} == before, "an input changed"
    report = tmp_path / "report"
    index = _parse(result.index)
    for link in index.links + index.images:  # every link and picture resolves inside or beside the report
        assert (report / link).is_file(), link
    assert {"cohort/froc.png", "cohort/calibration.png", "cohort/retention.png"} <= set(index.images)
    both = len({r["active"] for r in _rows(predicted["evaluation"] / "cases.tsv")}) == 2
    assert ("cohort/roc.png" in index.images) == both  # a ROC needs active and inactive patients
    assert {f"{c}.html" for c in result.cases} <= set(index.links)
    for case_id, page_path in result.cases.items():
        page = _parse(page_path)
        assert page.inline_scripts == 0, "data reaches pages only through files"
        for src in page.images + page.scripts:
            assert (report / src).is_file(), src
        anat = predicted["predictions"] / case_id / "anat"
        assert page.rows.get("enhancing-table", 0) == len(_rows(anat / f"{case_id}_lesions.tsv"))
        assert page.rows.get("visible-table", 0) == len(_rows(anat / f"{case_id}_desc-all_lesions.tsv"))
        assert {f"{case_id}/mosaic-flair.png", f"{case_id}/mosaic-uncertainty.png"} <= set(page.images)
        viewer = (report / case_id / "viewer.js").read_text()
        assert viewer.startswith("window.gdfreeViewer = ") and "<" not in viewer
        layers = json.loads(viewer.removeprefix("window.gdfreeViewer = ").rstrip().rstrip(";"))["volumes"]
        colours = {v["name"]: tuple(v["rgb"]) for v in layers if v["kind"] == "label"}
        # one source of colours (issue 29): the viewer draws masks as the mosaics and the colour tables do
        assert colours["predicted lesions"] == MASK_COLOURS["lesion"]
        assert set(colours.values()) <= set(MASK_COLOURS.values())


def test_colour_tables_beside_predicted_labels(predicted: dict[str, Path]) -> None:
    import nibabel as nib

    anat = predicted["predictions"] / "sub-001" / "anat"
    ids = np.unique(np.asarray(nib.load(anat / "sub-001_desc-all_dseg.nii.gz").dataobj))
    lesions = _rows(anat / "sub-001_desc-all_lesions.tsv")
    bids = _rows(anat / "sub-001_desc-all_dseg.tsv")
    assert [int(r["index"]) for r in bids] == [int(r["lesion_id"]) for r in lesions] == sorted(set(ids) - {0})
    itk = [line for line in (anat / "sub-001_desc-all_dseg.itksnap.txt").read_text().splitlines() if line[:1] != "#"]
    assert len(itk) == len(lesions) + 1 and itk[0].split()[0] == "0"  # the clear label, then one per lesion
    lut = (anat / "sub-001_desc-all_dseg.lut").read_text().splitlines()
    assert [int(line.split()[0]) for line in lut] == [int(r["lesion_id"]) for r in lesions]
    for r, line in zip(lesions, lut, strict=True):
        red = float(line.split()[1])
        assert (red > 0.9) == (r["predicted_active"] == "true") or r["predicted_active"] == "false"
    assert (anat / "sub-001_desc-enhancing_mask.ctbl").read_text().splitlines()[2].startswith("1 predicted_enhancing")


def test_colour_table_names_cannot_break_a_format(tmp_path: Path) -> None:
    written = write_colour_tables(tmp_path / "x_dseg.nii.gz", [Label(3, 'a "quoted"\tname\nwith lines', (1, 2, 3))])
    assert [p.name for p in written] == ["x_dseg.tsv", "x_dseg.itksnap.txt", "x_dseg.lut", "x_dseg.ctbl"]
    itk = written[1].read_text().splitlines()[-1]
    assert itk.count('"') == 2 and itk.endswith("\"a 'quoted' name with lines\"")
    assert written[2].read_text() == "3 0.0039 0.0078 0.0118 a 'quoted' name with lines\n"


def test_every_string_is_escaped(predicted: dict[str, Path], tmp_path: Path) -> None:
    evaluation = tmp_path / "evaluation"
    shutil.copytree(predicted["evaluation"], evaluation)
    rows = _rows(evaluation / "cases.tsv")
    rows[0]["case_id"] = EVIL
    with open(evaluation / "cases.tsv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    page = write_cohort_report(tmp_path / "report", evaluation=evaluation, failures={f"x{EVIL}": f"bad {EVIL}"},
                               title=f"Cohort {EVIL}")  # fmt: skip
    html = page.read_text(encoding="utf-8")
    assert EVIL not in html and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
    assert html.count("<script") == 1  # only the page's own script file
    assert EVIL in "".join(_parse(page).text)  # shown as text


def test_script_json_cannot_close_a_script() -> None:
    text = script_json({"name": "</script><script>alert(1)</script>", "amp": "a&b"})
    assert "<" not in text and ">" not in text and "&" not in text
    import json

    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "amp": "a&b"}


def test_case_slug() -> None:
    assert case_slug("sub-01_ses-02") == "sub-01_ses-02"
    slug = case_slug(EVIL)
    assert (
        slug.startswith("_script_window.pwned_1__script_-") and len(slug) == len("_script_window.pwned_1__script_") + 9
    )
    assert case_slug("a/b") != case_slug("a?b")


def test_a_failing_case_is_listed_and_the_others_go_on(predicted: dict[str, Path], tmp_path: Path) -> None:
    import nibabel as nib

    preds = tmp_path / "predictions"
    shutil.copytree(predicted["predictions"], preds)
    bad = preds / "sub-002" / "anat" / "sub-002_desc-enhancing_probseg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)), bad)
    result = write_reports(tmp_path / "report", predictions=preds, dataset=predicted["cohort"], viewer=False)
    assert sorted(result.cases) == ["sub-001", "sub-003"]
    assert "sub-002" in result.failures and str(bad) in result.failures["sub-002"]
    assert "on grid (5, 5, 5)" in result.failures["sub-002"]
    assert "sub-002" in "".join(_parse(result.index).text)


def test_refuses_to_write_under_an_input(predicted: dict[str, Path]) -> None:
    with pytest.raises(GdfreeError, match="never writes under an input"):
        write_reports(predicted["predictions"] / "report", evaluation=predicted["evaluation"])
    with pytest.raises(GdfreeError, match="go together"):
        write_reports(predicted["predictions"].parent / "r", predictions=predicted["predictions"])


def test_cli_report(predicted: dict[str, Path], tmp_path: Path) -> None:
    from gdfree.cli import app

    out = tmp_path / "r"
    args = ["--predictions", str(predicted["predictions"]), "--input", str(predicted["cohort"]), "--cases", "sub-003"]
    result = CliRunner().invoke(app, ["report", "--out", str(out), *args, "--no-viewer"])
    assert result.exit_code == 0, result.output
    assert (out / "sub-003.html").is_file() and not (out / "sub-001.html").exists()
    assert not (out / "assets" / "niivue.umd.js").exists()
    missing = CliRunner().invoke(app, ["report", "--out", str(out), "--evaluation", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    base = ["report", "--predictions", str(predicted["predictions"]), "--input", str(predicted["cohort"])]
    empty = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "e"), "--cases", ""])
    assert empty.exit_code == 2 and "empty list of cases" in empty.output  # was: no page, exit 0 (issue 29)
    unknown = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "u"), "--cases", "sub-003,sub-999"])
    assert unknown.exit_code == 2 and "no case sub-999" in unknown.output


def test_roc_band_by_hand() -> None:
    grid, low, high = roc_band(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1]), n_boot=200)
    assert np.all(low == 1) and np.all(high == 1)  # separated in every resample
    grid, low, high = roc_band(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.2, 0.1]), n_boot=500, seed=1)
    assert grid[0] == 0 and grid[-1] == 1 and np.all(low <= high) and high[-1] == 1
    assert low[0] == 0 and high[0] == 1  # at fpr 0 some resamples catch both actives above the negatives, some none
    assert roc_band(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_mosaic_slices_put_the_lesions_first() -> None:
    brain = np.zeros((8, 8, 100), bool)
    brain[:, :, 10:90] = True
    slices = mosaic_slices(brain, focus=[50, 50, 200], n=6)
    assert 50 in slices and len(slices) == 6 and slices == sorted(set(slices))
    assert all(10 <= z < 90 for z in slices)


def test_bad_inputs_get_clear_errors(
    predicted: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gdfree.report.viewer as viewer

    broken = tmp_path / "evaluation"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(GdfreeError, match=r"summary.json: not readable JSON"):
        write_reports(tmp_path / "r1", evaluation=broken)
    (broken / "summary.json").write_text('{"something": "else"}', encoding="utf-8")
    with pytest.raises(GdfreeError, match="not a gdfree evaluation summary"):
        write_reports(tmp_path / "r2", evaluation=broken)
    monkeypatch.setattr(viewer, "NIIVUE", tmp_path / "missing" / "niivue.umd.js")
    with pytest.raises(GdfreeError, match=r"NiiVue viewer is not installed.*--no-viewer"):
        write_reports(tmp_path / "r3", evaluation=predicted["evaluation"])
    assert not (tmp_path / "r3" / "index.html").exists()


def test_cases_predict_could_not_do_are_listed(predicted: dict[str, Path], tmp_path: Path) -> None:
    preds = tmp_path / "predictions"
    shutil.copytree(predicted["predictions"], preds)
    (preds / "failures.tsv").write_text("case_id\treason\nsub-009\tFLAIR: NaN voxels\n", encoding="utf-8")
    result = write_reports(tmp_path / "report", predictions=preds, dataset=predicted["cohort"], viewer=False,
                           case_ids=["sub-001"])  # fmt: skip
    assert sorted(result.cases) == ["sub-001"] and result.failures == {}  # not asked for
    result = write_reports(tmp_path / "report", predictions=preds, dataset=predicted["cohort"], viewer=False)
    assert result.failures == {"sub-009": "predict failed: FLAIR: NaN voxels"}
    assert "predict failed: FLAIR: NaN voxels" in "".join(_parse(result.index).text)
    (preds / "predictions.tsv").unlink()
    with pytest.raises(GdfreeError, match="not a gdfree predict folder"):
        write_reports(tmp_path / "report2", predictions=preds, dataset=predicted["cohort"])


def test_predictions_are_drawn_only_over_the_images_they_were_made_from(
    predicted: dict[str, Path], tmp_path: Path
) -> None:
    from gdfree.io.pairing import PairingError
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    other = tmp_path / "other"  # another dataset with the same case ids
    write_cohort(other, PhantomConfig(resolution_mm=4), 3, seed=8)
    with pytest.raises(PairingError, match=r"was not predicted from .*other \(--input\).*3 of 3 cases"):
        write_reports(tmp_path / "r1", predictions=predicted["predictions"], dataset=other, viewer=False)
    assert not list((tmp_path / "r1").glob("sub-*"))
    later = tmp_path / "later"  # a dataset holding none of the predicted cases (sub-101)
    write_cohort(later, PhantomConfig(resolution_mm=4), 1, seed=7, first=100)
    with pytest.raises(PairingError, match="none of its 3 predicted cases"):
        write_reports(tmp_path / "r2", predictions=predicted["predictions"], dataset=later, viewer=False)
    partial = tmp_path / "partial"  # one predicted case missing from --input: listed, not skipped in silence
    shutil.copytree(predicted["cohort"], partial)
    shutil.rmtree(partial / "sub-002")
    result = write_reports(tmp_path / "r3", predictions=predicted["predictions"], dataset=partial, viewer=False)
    assert sorted(result.cases) == ["sub-001", "sub-003"]
    assert "not found in" in result.failures["sub-002"]


def test_to_native_refuses_a_prepared_folder_of_another_dataset(predicted: dict[str, Path], tmp_path: Path) -> None:
    from gdfree.cli import app
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    other = tmp_path / "other"
    write_cohort(other, PhantomConfig(resolution_mm=4), 3, seed=8)
    run = CliRunner().invoke(app, ["to-native", str(predicted["predictions"]), "--prepared", str(other),
                                   "--out", str(tmp_path / "native")])  # fmt: skip
    assert run.exit_code == 2 and "was not predicted from" in run.output and "--prepared" in run.output
    taken = tmp_path / "taken"
    (taken / "sub-001").mkdir(parents=True)
    run = CliRunner().invoke(app, ["to-native", str(predicted["predictions"]), "--prepared", str(predicted["cohort"]),
                                   "--out", str(taken)])  # fmt: skip
    assert run.exit_code == 2 and "no earlier gdfree to-native wrote" in run.output


def test_a_report_owns_its_folder_and_a_rerun_leaves_no_orphan_page(predicted: dict[str, Path], tmp_path: Path) -> None:
    from gdfree.io.pairing import PairingError
    from gdfree.io.runs import OutputConflictError
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    bids = tmp_path / "bids"  # a folder that is not a report's: refused, untouched
    shutil.copytree(predicted["cohort"], bids / "data")
    before = sorted(p.relative_to(bids) for p in bids.rglob("*"))
    with pytest.raises(OutputConflictError, match="no earlier gdfree report wrote"):
        write_reports(bids, predictions=predicted["predictions"], dataset=predicted["cohort"], viewer=False)
    assert sorted(p.relative_to(bids) for p in bids.rglob("*")) == before
    out = tmp_path / "report"
    first = write_reports(out, predictions=predicted["predictions"], dataset=predicted["cohort"], viewer=False)
    assert sorted(first.cases) == ["sub-001", "sub-002", "sub-003"]
    other = tmp_path / "other"  # inputs checked before the folder is claimed: a refused rerun keeps the report
    write_cohort(other, PhantomConfig(resolution_mm=4), 1, seed=8)
    with pytest.raises(PairingError):
        write_reports(out, predictions=predicted["predictions"], dataset=other, viewer=False)
    assert sorted(p.name for p in out.glob("sub-*.html")) == ["sub-001.html", "sub-002.html", "sub-003.html"]
    (out / "my notes.txt").write_text("mine", encoding="utf-8")  # the user's own file in the report folder
    again = write_reports(out, predictions=predicted["predictions"], dataset=predicted["cohort"], viewer=False,
                          case_ids=["sub-002"])  # fmt: skip
    assert sorted(again.cases) == ["sub-002"]
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "sub-002.html"]  # no page of the first run
    assert not (out / "sub-001").exists() and (out / "my notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_deleted_or_edited_output_is_said_on_the_page_and_in_the_exit_code(
    predicted: dict[str, Path], tmp_path: Path
) -> None:
    from gdfree.cli import app

    preds = tmp_path / "predictions"
    shutil.copytree(predicted["predictions"], preds)
    prob = next((preds / "sub-001" / "anat").glob("*desc-enhancing_probseg.nii.gz"))
    prob.unlink()
    lesions = next((preds / "sub-002" / "anat").glob("*lesions.tsv"))
    lesions.write_text(lesions.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    out = tmp_path / "report"
    run = CliRunner().invoke(app, ["report", "--out", str(out), "--predictions", str(preds), "--input",
                                   str(predicted["cohort"]), "--no-viewer"])  # fmt: skip
    assert run.exit_code == 1, run.output
    page = (out / "sub-001.html").read_text(encoding="utf-8")
    assert "Incomplete outputs" in page and f"{prob.name} (missing)" in page
    assert "changed since predict wrote it" in (out / "sub-002.html").read_text(encoding="utf-8")
    assert "Incomplete outputs" not in (out / "sub-003.html").read_text(encoding="utf-8")
    assert prob.name in (out / "index.html").read_text(encoding="utf-8")

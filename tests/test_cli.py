from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gdfree.cli import app

runner = CliRunner()


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, gdfree.cli; heavy = {'torch', 'monai', 'torchio', 'nibabel', 'SimpleITK', 'scipy', 'nilearn'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_command_renders_its_help():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert {"predict", "explain", "train", "prepare"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, f"{name} --help: {result.output[-300:]}"


def test_synth_then_info(tmp_path: Path):
    out = tmp_path / "c"
    result = runner.invoke(app, ["synth", "--out", str(out), "--subjects", "1", "--resolution", "4", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "1 subjects" in result.output
    assert (out / "sub-001/anat/sub-001_ce-gadolinium_T1w.nii.gz").is_file()
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 cases, 1 without problems" in result.output
    again = runner.invoke(app, ["synth", "--out", str(out), "--subjects", "1", "--resolution", "4"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_synth_rejects_a_post_contrast_signature_carrier(tmp_path: Path):
    result = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "x"), "--resolution", "4", "--signature-modalities", "T1POST"]
    )
    assert result.exit_code == 2 and "signature_modalities" in result.output
    assert not (tmp_path / "x").exists()


def test_info_on_a_folder_without_a_dataset(tmp_path: Path):
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 2 and "no known dataset layout" in result.output


def test_synth_randomise_records_each_subjects_draw(tmp_path: Path):
    import json

    out = tmp_path / "dr"
    result = runner.invoke(app, ["synth", "--out", str(out), "--subjects", "2", "--resolution", "4", "--randomise"])
    assert result.exit_code == 0, result.output
    sides = [json.loads((out / f"derivatives/phantom/sub-00{i}/anat/sub-00{i}_phantom.json").read_text())
             for i in (1, 2)]  # fmt: skip
    assert all(s["domain"] is not None for s in sides) and sides[0]["domain"] != sides[1]["domain"]
    assert "enabled: true" in (out / "derivatives/phantom/phantom_config.yaml").read_text()

"""End to end on the tiny 4 mm cohort: train a few steps, resume, predict, check the outputs, evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.config import save_config
from gdfree.infer.model import TrainedModel
from gdfree.io.adapters import discover
from gdfree.io.images import read_volume
from gdfree.metrics import label_lesions
from gdfree.train import DatasetSpec, SplitConfig, TrainConfig
from gdfree.types import Volume
from tests.conftest import tiny_train_config

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    config = save_config(tiny_train_config(tiny_cohort), root / "train.yaml")
    result = runner.invoke(app, ["train", str(config), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root, root / "run"


def test_run_folder_and_split(trained: tuple[Path, Path]):
    _, run = trained
    names = {p.name for p in run.iterdir()}
    expected = {"config.yaml", "split.json", "log.tsv", "model.json", "model.safetensors", "last_state.json"}
    assert expected | {"best.json", "last.json"} <= names
    split = json.loads((run / "split.json").read_text())
    assert len(split["train_patients"]) == len(split["val_patients"]) == len(split["test_patients"]) == 1
    meta = json.loads((run / "model.json").read_text())
    assert meta["modalities"] == ["T1w", "T2w", "FLAIR"] and not meta["oracle"]
    assert meta["schema_version"] == 1  # written through gdfree.models.record.ModelRecord
    assert meta["spacing_mm"] == [4.0, 4.0, 4.0]  # the voxel size it trained at (issue 30): predict runs there
    assert meta["architecture"]["class"] == "MultitaskUNet" and 0 < meta["threshold"] < 1
    assert len(meta["training_fingerprints"]) == 6  # 2 cases x 3 inputs
    last = json.loads((run / "last.json").read_text())
    assert meta["step"] == 4 and meta["weights_sha256"] == last["weights_sha256"]  # keep: last (the default)


def test_keep_best_keeps_the_best_validation_and_snapshots_every_one(tiny_cohort: Path, tmp_path: Path):
    from gdfree.infer.model import TrainedModel
    from gdfree.train import train

    # with a DataLoader worker drawing the batches
    cfg = tiny_train_config(tiny_cohort, keep="best", max_steps=6, val_every=2, workers=1, snapshots=True)
    summary = train(cfg, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    scores = {r["step"]: r["val_score"] for r in json.loads((tmp_path / "run" / "last_state.json").read_text())["log"]
              if "val_score" in r}  # fmt: skip
    assert sorted(scores) == [2, 4, 6]
    assert meta["weights_sha256"] == best["weights_sha256"] and summary["kept"] == "best"
    top = max(scores.values())
    assert meta["validation"]["score"] == top and meta["step"] == max(s for s, v in scores.items() if v == top)
    snaps = {json.loads(p.read_text())["step"]: p.stem for p in (tmp_path / "run").glob("step-*.json")}
    assert snaps == {2: "step-000002", 4: "step-000004", 6: "step-000006"}
    last = json.loads((tmp_path / "run" / "last.json").read_text())
    assert json.loads((tmp_path / "run" / "step-000006.json").read_text())["weights_sha256"] == last["weights_sha256"]
    assert TrainedModel.load(tmp_path / "run", stem="step-000002").modalities == cfg.modalities
    seconds = [r["seconds"] for r in json.loads((tmp_path / "run" / "last_state.json").read_text())["log"]
               if "val_score" in r]  # fmt: skip
    assert seconds == sorted(seconds) and seconds[0] >= 0


def test_resume_continues_from_the_last_checkpoint(trained: tuple[Path, Path], tiny_cohort: Path):
    root, run = trained
    again = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(run)])
    assert again.exit_code == 2 and "--resume" in again.output
    other = save_config(tiny_train_config(tiny_cohort, lr=1e-2), root / "other.yaml")
    mismatch = runner.invoke(app, ["train", str(other), "--out", str(run), "--resume"])
    assert mismatch.exit_code == 2 and "lr differ" in mismatch.output
    before = json.loads((run / "last_state.json").read_text())
    assert before["step"] == 4
    resumed = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(run), "--resume", "--max-steps", "6"])
    assert resumed.exit_code == 0, resumed.output
    after = json.loads((run / "last_state.json").read_text())
    assert after["step"] == 6 and after["log"][: len(before["log"])] == before["log"]


def test_a_run_killed_before_its_first_checkpoint_restarts_and_a_damaged_one_says_how_to_go_on(
    trained: tuple[Path, Path], tiny_cohort: Path, tmp_path: Path
):
    import shutil

    root, run = trained
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    shutil.copy(run / "config.yaml", stuck / "config.yaml")  # what a kill before step val_every leaves
    shutil.copy(run / "split.json", stuck / "split.json")
    shutil.copytree(stuck, tmp_path / "stuck2")
    restarted = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(stuck), "--resume"])
    assert restarted.exit_code == 0, restarted.output
    assert json.loads((stuck / "last_state.json").read_text())["step"] == 4
    # a start that failed on its config (nothing trained): rerun into the same folder with the corrected config,
    # without --resume (was: refused both ways, a new folder was the only way on)
    fixed = save_config(tiny_train_config(tiny_cohort, lr=1e-2), tmp_path / "fixed.yaml")
    again = runner.invoke(app, ["train", str(fixed), "--out", str(tmp_path / "stuck2")])
    assert again.exit_code == 0, again.output
    assert "lr: 0.01" in (tmp_path / "stuck2" / "config.yaml").read_text()
    damaged = tmp_path / "damaged"
    shutil.copytree(stuck, damaged)
    optim = damaged / "last_optim.pt"
    optim.write_bytes(optim.read_bytes()[:100])
    result = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(damaged), "--resume",
                                 "--max-steps", "6"])  # fmt: skip
    assert result.exit_code == 2 and "cannot be resumed" in result.output and "--init" in result.output
    weights = damaged / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(damaged), "--resume"])
    assert result.exit_code == 2 and "last.safetensors" in result.output


def test_init_starts_from_a_trained_run_and_refuses_what_does_not_fit(trained: tuple[Path, Path], tiny_cohort: Path):
    from safetensors.torch import load_file

    from gdfree.train import train

    root, run = trained
    tuned = root / "tuned"
    train(tiny_train_config(tiny_cohort, init=str(run), max_steps=1, val_every=1, lr=1e-9, warmup_steps=1), tuned)
    meta = json.loads((tuned / "model.json").read_text())
    source = json.loads((run / "model.json").read_text())
    assert meta["init"] == {"run": str(run.resolve()), "weights_sha256": source["weights_sha256"]}
    before, after = load_file(str(run / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    assert all(np.allclose(before[k], after[k], atol=1e-5) for k in before if "num_batches" not in k)
    with pytest.raises(ValueError, match="init network"):
        train(tiny_train_config(tiny_cohort, init=str(run), channels=(4, 16)), root / "wider")
    with pytest.raises(ValueError, match="init modalities"):
        train(tiny_train_config(tiny_cohort, init=str(run), modalities=("FLAIR", "T2w", "T1w")), root / "reordered")
    # another split: this run's test patient trained the init model
    trained_on = json.loads((run / "split.json").read_text())["train_patients"][0]
    with pytest.raises(ValueError, match="trained or validated the init model"):
        leak = SplitConfig(val_fraction=0.5, test_subjects=(trained_on,))
        train(tiny_train_config(tiny_cohort, init=str(run), split=leak), root / "leak")
    missing = runner.invoke(app, ["train", str(root / "train.yaml"), "--out", str(root / "none"), "--init",
                                  str(root / "nothing")])  # fmt: skip
    assert missing.exit_code == 2 and "model.json: not found" in missing.output


def _predict_test_patient(run: Path, cohort: Path, out: Path, *options: str) -> tuple[str, Path, Volume]:
    """Predict the run's test patient into ``out``; returns its subject, anat folder and FLAIR."""
    test_subject = json.loads((run / "split.json").read_text())["test_patients"][0].split(":")[-1]
    result = runner.invoke(app, ["predict", "--model", str(run), "--input", str(cohort / f"sub-{test_subject}"),
                                 "--out", str(out), *options])  # fmt: skip
    assert result.exit_code == 0, result.output
    flair = read_volume(next(c for c in discover(cohort) if c.subject == test_subject).images["FLAIR"])
    return test_subject, out / f"sub-{test_subject}" / "anat", flair


def test_predict_the_test_patient_on_its_grid(trained: tuple[Path, Path], tiny_cohort: Path):
    root, run = trained
    out = root / "pred"
    test_subject, anat, flair = _predict_test_patient(run, tiny_cohort, out)
    prob = read_volume(anat / f"sub-{test_subject}_desc-enhancing_probseg.nii.gz")
    mask = read_volume(anat / f"sub-{test_subject}_desc-enhancing_mask.nii.gz")
    assert prob.same_grid(flair) and mask.same_grid(flair)
    assert prob.data.dtype == np.float32 and 0 <= prob.data.min() and prob.data.max() <= 1
    meta = json.loads((run / "model.json").read_text())
    threshold = TrainedModel.load(run).thresholds["enhancing"]  # the validation threshold on the calibrated scale
    assert set(meta["temperature"]) == {"enhancing", "lesion"} and all(t > 0 for t in meta["temperature"].values())
    from gdfree.train.validation import MIN_LESION_MM3

    min_mm3 = meta["min_lesion_mm3"]  # chosen on validation with the threshold
    assert min_mm3 in MIN_LESION_MM3 and meta["validation"]["enhancing_min_lesion_mm3"] == min_mm3
    kept = label_lesions(prob.data >= threshold, prob.spacing_mm, 6, min_mm3)[0] > 0
    assert np.array_equal(mask.data.astype(bool), kept)
    rows = (anat / f"sub-{test_subject}_lesions.tsv").read_text().splitlines()
    n = label_lesions(mask.data, mask.spacing_mm, 6, 3.0)[1]
    assert rows[0].startswith("lesion_id\tcentroid_x_mm") and len(rows) == 1 + n
    assert (out / "predictions.tsv").is_file() and (out / "dataset_description.json").is_file()
    # issue 33: the activity score is the model's patient score, called active at the model's patient threshold
    model = TrainedModel.load(run)
    from gdfree.metrics.patient import probability_score

    (row,) = list(csv.DictReader((out / "predictions.tsv").open(), delimiter="\t"))
    labels = label_lesions(mask.data, mask.spacing_mm, 6, 3.0)[0]
    score = probability_score(model.patient_score, prob.data, labels, model.lesion_calibration)
    assert float(row["activity_score"]) == pytest.approx(score, abs=1e-5)
    want = score >= model.patient_threshold if model.patient_threshold is not None else n > 0
    assert row["predicted_active"] == str(bool(want)).lower()
    evaluated = runner.invoke(app, ["evaluate", "--pred", str(out), "--ref", str(tiny_cohort), "--out",
                                    str(root / "eval"), "--only-predicted", "--n-boot", "10"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output


def test_predict_drops_enhancing_lesions_up_to_the_models_minimum_volume(
    trained: tuple[Path, Path], tiny_cohort: Path, tmp_path: Path
):
    import shutil

    run = trained[1]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    # A threshold that keeps nearly the whole brain: one or a few large components.
    meta["thresholds"] = {h: 1e-6 for h in meta["heads"]}
    kept = {}
    for min_mm3 in (0.0, 1e9):
        (copy / "model.json").write_text(json.dumps({**meta, "min_lesion_mm3": min_mm3}))
        subject, anat, _ = _predict_test_patient(copy, tiny_cohort, tmp_path / f"pred-{min_mm3:g}")
        mask = read_volume(anat / f"sub-{subject}_desc-enhancing_mask.nii.gz").data.astype(bool)
        rows = (anat / f"sub-{subject}_lesions.tsv").read_text().splitlines()
        kept[min_mm3] = (int(mask.sum()), len(rows) - 1)
        assert read_volume(anat / f"sub-{subject}_desc-lesion_mask.nii.gz").data.any()  # the lesion head keeps all
    assert kept[0.0][0] > 1000 and kept[0.0][1] >= 1
    assert kept[1e9] == (0, 0)


def test_predict_with_uncertainty(trained: tuple[Path, Path], tiny_cohort: Path):
    root, run = trained
    out = root / "pred-unc"
    test_subject, anat, flair = _predict_test_patient(run, tiny_cohort, out, "--mc", "3", "--flips", "--ensemble",
                                                      str(run))  # fmt: skip
    for measure in ("PredictiveEntropy", "ExpectedEntropy", "MutualInformation", "Variance"):
        unc = read_volume(anat / f"sub-{test_subject}_desc-enhancing{measure}_uncertainty.nii.gz")
        assert unc.same_grid(flair) and unc.data.min() >= 0 and unc.data.max() > 0
    pe = read_volume(anat / f"sub-{test_subject}_desc-enhancingPredictiveEntropy_uncertainty.nii.gz").data
    assert pe.max() <= np.log(2) + 1e-6
    header = (anat / f"sub-{test_subject}_lesions.tsv").read_text().splitlines()[0].split("\t")
    assert {"lsu", "mutual_information_mean", "variance_max"} <= set(header)
    rows = (out / "predictions.tsv").read_text().splitlines()
    cols = dict(zip(rows[0].split("\t"), rows[1].split("\t"), strict=True))
    assert cols["n_samples"] == str(2 * 8 * 3) and float(cols["score_std"]) >= 0
    evaluated = runner.invoke(app, ["evaluate", "--pred", str(out), "--ref", str(tiny_cohort), "--out",
                                    str(root / "eval-unc"), "--only-predicted", "--n-boot", "10",
                                    "--uncertainty", "enhancingMutualInformation"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output


def test_predicting_a_training_case_is_refused(trained: tuple[Path, Path], tiny_cohort: Path):
    root, run = trained
    result = runner.invoke(app, ["predict", "--model", str(run), "--input", str(tiny_cohort), "--out",
                                 str(root / "all")])  # fmt: skip
    assert result.exit_code == 2 and "training/validation case" in result.output
    assert not (root / "all").exists()  # checked before anything is written


def test_a_test_subject_that_is_also_trained_on_is_refused(tiny_cohort: Path, tmp_path: Path):
    import shutil

    from gdfree.train import train

    # A copy of one subject under another label: same patient, same files, two names.
    copy = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, copy)
    for path in (copy / "sub-001").rglob("*"):
        if path.is_file():
            target = copy / "sub-004" / path.relative_to(copy / "sub-001").as_posix().replace("sub-001", "sub-004")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    cfg = tiny_train_config(copy, split=SplitConfig(val_fraction=0.0, test_subjects=(f"{copy}:004",)))
    with pytest.raises(ValueError, match="identical to"):
        train(cfg, tmp_path / "run")


def test_a_tiny_model_learns_lesions_on_an_easy_cohort(tiny_cohort: Path, tmp_path: Path):
    """FLAIR-bright lesions on the 4 mm phantom: 60 steps of a 4-8 channel net rank held-out lesion voxels
    above the rest of the brain far better than chance (voxel AUC 0.5)."""
    from gdfree.data.cases import load_array_case
    from gdfree.metrics import roc_auc
    from gdfree.models import load_model
    from gdfree.predict import predict_volume
    from gdfree.train import train

    cfg = tiny_train_config(tiny_cohort, max_steps=60, val_every=60, batch_size=4, lr=1e-2, warmup_steps=5,
                  heads=("lesion",), head_weights=(1.0,), augment=0.0)  # fmt: skip
    train(cfg, tmp_path / "run")
    model, meta = load_model(tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    test_subject = split["test_patients"][0].split(":")[-1]
    files = next(c for c in discover(tiny_cohort) if c.subject == test_subject)
    case = load_array_case(files, meta["modalities"], ("lesion",))
    prob = predict_volume(model, case.image)[0]
    truth = case.labels["lesion"]
    assert truth is not None and truth[case.brain].sum() > 10
    auc = roc_auc(truth[case.brain].astype(int), prob[case.brain])
    print(f"held-out voxel AUC {auc:.3f}")
    assert auc > 0.8, auc


def test_train_refuses_a_post_gd_input_outside_the_oracle(tiny_cohort: Path, tmp_path: Path):
    config = tmp_path / "leaky.yaml"
    config.write_text(f"datasets: [{{path: {tiny_cohort}}}]\nmodalities: [T1w, FLAIR, T1POST]\n")
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "T1gd (post-gadolinium" in result.output and "oracle" in result.output
    assert not (tmp_path / "run").exists()
    aliases = TrainConfig(datasets=(DatasetSpec("x"),), modalities=("t1", "flair"))
    assert aliases.modalities == ("T1w", "FLAIR")


def test_explain_lesions_of_a_case(trained: tuple[Path, Path], tiny_cohort: Path):
    root, run = trained
    # every lesion of the lesion mask (the 4 mm tiny cohort has no enhancing voxel); a training case, allowed
    test_subject = "001"
    case = next(c for c in discover(tiny_cohort) if c.subject == test_subject)
    reference = read_volume(case.masks["lesion"])
    n = label_lesions(reference.data > 0, reference.spacing_mm, 6, 3.0)[1]
    out = root / "explain"
    result = runner.invoke(app, ["explain", "--model", str(run), "--case", str(tiny_cohort / f"sub-{test_subject}"),
                                 "--out", str(out), "--lesions", "lesion-mask", "--all-lesions", "--crop", "16",
                                 "--steps", "4", "--no-permutation", "--allow-training-cases"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lesions = (out / "lesions.tsv").read_text().strip().splitlines()
    assert len(lesions) - 1 == n > 0
    anat = out / f"sub-{test_subject}" / "anat"
    maps = sorted(p.name for p in anat.glob("*_attribution.nii.gz"))
    assert len(maps) == n * (3 + 3 + 1)  # ig and occlusion per modality, one Grad-CAM map
    flair = read_volume(case.images["FLAIR"])
    ig = read_volume(anat / f"sub-{test_subject}_desc-lesion1IgFLAIR_attribution.nii.gz")
    assert ig.shape == flair.shape and np.allclose(ig.affine, flair.affine)
    assert len(list(anat.glob("*_attribution.png"))) == n
    summary = (out / "importance_summary.tsv").read_text()
    for method in ("occlusion-mean", "occlusion-zeros", "occlusion-noise", "occlusion-blur", "ig"):
        assert method in summary
    sanity = (out / "sanity.tsv").read_text().strip().splitlines()
    assert len(sanity) - 1 == 2 * n  # ig and gradcam against the randomised model
    assert (out / "importance_summary.png").stat().st_size > 0 and (out / "profiles.tsv").is_file()
    refused = runner.invoke(app, ["explain", "--model", str(run), "--case", str(tiny_cohort), "--out",
                                  str(root / "explain2")])  # fmt: skip
    assert refused.exit_code != 0 and "training/validation case" in refused.output
    assert not (root / "explain2").exists()  # refused before anything is written (issue 29)


def test_explain_finds_the_predicted_lesions_that_predict_writes(
    trained: tuple[Path, Path], tiny_cohort: Path, tmp_path: Path
):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained[1], copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["thresholds"] = {h: 1e-6 for h in meta["heads"]}  # nearly the whole brain
    outputs = {}
    for min_mm3 in (0.0, 1e9):
        (copy / "model.json").write_text(json.dumps({**meta, "min_lesion_mm3": min_mm3}))
        outputs[min_mm3] = runner.invoke(app, [
            "explain", "--model", str(copy), "--case", str(tiny_cohort / "sub-001"), "--out",
            str(tmp_path / f"explain-{min_mm3:g}"), "--lesion", "1", "--methods", "occlusion", "--occlusions",
            "mean", "--crop", "8", "--no-permutation", "--no-sanity", "--allow-training-cases"])  # fmt: skip
    assert outputs[0.0].exit_code == 0, outputs[0.0].output
    refused = outputs[1e9]
    assert refused.exit_code != 0 and "no lesion 1; it has 0 (predicted)" in refused.output + str(refused.exception)


def test_a_label_randomised_control_is_not_a_model_to_predict_with(trained: tuple[Path, Path], tiny_cohort: Path):
    import shutil

    from gdfree.predict import predict_dataset

    root, run = trained
    control = root / "control"
    shutil.copytree(run, control)
    meta = json.loads((control / "model.json").read_text())
    meta["config"]["randomise_labels"] = True
    (control / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="randomise_labels"):
        predict_dataset(control, tiny_cohort, root / "control-pred")
    with pytest.raises(ValueError, match="randomise_labels"):  # nor as an ensemble member
        predict_dataset(run, tiny_cohort, root / "control-pred", ensemble=[control])


def test_evaluate_run_adds_held_out_patients_to_the_test_set(trained: tuple[Path, Path], tiny_cohort: Path):
    from gdfree.demo import evaluate_run
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    root, run = trained
    heldout = root / "heldout"
    write_cohort(heldout, PhantomConfig(resolution_mm=4), 1, seed=7, first=3)  # sub-004: in no split
    test_ids = [c.split(":")[-1] for c in json.loads((run / "split.json").read_text())["test_cases"]]
    results, evaluation, affines, _ = evaluate_run(root, tiny_cohort, heldout=heldout)
    assert [r.case_id.split(":")[-1] for r in results] == [*test_ids, "sub-004"] and len(affines) == 2
    pooled = evaluation["pooled_lesions"]
    assert evaluation["n_cases"] == 2 and len(pooled["lesion_f1_ci"]) == 2
    assert pooled["n_ref_lesions"] == sum(r.match.n_ref for r in results)
    assert (root / "predictions-heldout" / "predictions.tsv").is_file()
    # a "held-out" dataset that holds the test patient again is refused
    again = root / "again"
    again.mkdir()
    (again / "run").symlink_to(run)
    clash = root / "clash"
    write_cohort(clash, PhantomConfig(resolution_mm=4), 1, seed=7, first=int(test_ids[0].removeprefix("sub-")) - 1)
    with pytest.raises(ValueError, match="named like test cases"):
        evaluate_run(again, tiny_cohort, heldout=clash)


def test_demo_headline_fits_80_columns_and_uses_the_patient_threshold(trained: tuple[Path, Path], tiny_cohort: Path):
    from gdfree.demo import evaluate_run
    from gdfree.evaluate.display import compact_headline
    from gdfree.infer.model import TrainedModel

    root, run = trained
    _, evaluation, _, _ = evaluate_run(root, tiny_cohort)
    lines = compact_headline(evaluation)
    assert len(lines) >= 4 and all(len(line) <= 78 for line in lines)  # printed with a 2-space indent
    model = TrainedModel.load(run)
    want = model.patient_threshold if model.patient_threshold is not None else model.thresholds["enhancing"]
    assert evaluation["patient"]["threshold"] == pytest.approx(want)

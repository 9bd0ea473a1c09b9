"""Fixtures of the report tests: a tiny cohort predicted and evaluated by the real commands, and a browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Debian's Chromium headless on a machine with no GPU and no network (WebGL through SwiftShader)."""


@pytest.fixture(scope="session")
def predicted(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny cohort predicted by the shipped model (3 MC passes: uncertainty maps; lesion-level activity)
    and evaluated with the mutual information as uncertainty (retention curves)."""
    from gdfree.demo import PRETRAINED
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.files import evaluate_dataset, write_evaluation
    from gdfree.predict import predict_dataset

    root = tmp_path_factory.mktemp("predicted")
    predict_dataset(PRETRAINED / "network", tiny_cohort, root / "predictions", mc=3, mc_layers="last",
                    activity=PRETRAINED / "activity")  # fmt: skip
    config = EvaluationConfig(n_boot=50)
    results, summary, affines = evaluate_dataset(root / "predictions", tiny_cohort, config=config,
                                                 uncertainty_desc="enhancingMutualInformation")  # fmt: skip
    assert summary is not None
    write_evaluation(root / "evaluation", results, summary, affines)
    return {"cohort": tiny_cohort, "predictions": root / "predictions", "evaluation": root / "evaluation"}


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; skipped when absent unless GDFREE_BROWSER_TESTS=required (``make test`` sets it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("GDFREE_BROWSER_TESTS") == "required":
            pytest.fail("GDFREE_BROWSER_TESTS=required but no chromium on PATH (`make browser` installs it)")
        pytest.skip("no chromium on PATH (`make browser` installs Debian's)")
    return found

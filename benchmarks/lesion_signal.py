"""Is the pre-contrast signature there at all? A per-lesion logistic regression on the TRUE lesion masks.

For every connected lesion (26-connected, >= 2 voxels) of a synthetic cohort: mean T1w, mean and spread of
T2w, mean FLAIR inside it and mean FLAIR in a 2-voxel ring outside all lesions, and log volume, each image
z-scored over normal-appearing brain. A lesion is active when it overlaps the enhancing mask. Prints the
5-fold cross-validated AUC (active vs chronic) of each feature group: an upper bound for what a network could
learn per lesion if it segmented lesions perfectly.

    python benchmarks/lesion_signal.py COHORT [COHORT ...]
"""

from __future__ import annotations

import sys

import numpy as np


def lesion_features(root: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    from gdfree.io.adapters import discover
    from gdfree.io.images import read_volume

    features, active = [], []
    for case in discover(root):
        images = {m: read_volume(case.images[m]).data.astype(np.float64) for m in ("T1w", "T2w", "FLAIR")}
        lesion = read_volume(case.masks["lesion"]).data > 0
        enhancing = read_volume(case.masks["enhancing"]).data > 0
        brain = read_volume(case.masks["brain"]).data > 0
        for m, data in images.items():
            normal = data[brain & ~lesion]
            images[m] = (data - np.median(normal)) / normal.std()
        labels, n = ndimage.label(lesion, np.ones((3, 3, 3)))
        for k in range(1, n + 1):
            comp = labels == k
            if comp.sum() < 2:
                continue
            ring = ndimage.binary_dilation(comp, iterations=2) & ~lesion & brain
            features.append([images["T1w"][comp].mean(), images["T2w"][comp].mean(), images["T2w"][comp].std(),
                             images["FLAIR"][comp].mean(), images["FLAIR"][ring].mean() if ring.any() else 0.0,
                             np.log(comp.sum())])  # fmt: skip
            active.append(bool((enhancing & comp).any()))
    return np.asarray(features), np.asarray(active)


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    groups = {"T1w mean": [0], "T2w mean+sd": [1, 2], "FLAIR inside+ring": [3, 4], "all + log volume": list(range(6))}
    for root in sys.argv[1:]:
        x, y = lesion_features(root)
        aucs = {}
        for name, cols in groups.items():
            p = cross_val_predict(LogisticRegression(max_iter=1000), x[:, cols], y, cv=5, method="predict_proba")
            aucs[name] = round(float(roc_auc_score(y, p[:, 1])), 3)
        print(f"{root}: {y.size} lesions, {int(y.sum())} active; 5-fold AUC {aucs}")


if __name__ == "__main__":
    main()

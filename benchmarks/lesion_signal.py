"""Is the pre-contrast signature there at all? A per-lesion logistic regression on the TRUE lesion masks.

For every connected lesion (26-connected, >= 2 voxels) of a synthetic cohort: mean T1w, mean and spread of
T2w, mean FLAIR inside it and mean FLAIR in a 2-voxel ring outside all lesions, and log volume, each image
z-scored over normal-appearing brain. A lesion is active when it overlaps the enhancing mask. Prints the
5-fold cross-validated AUC (active vs chronic; folds by patient) of each feature group, then, with every
feature, the AUC and the best lesion F1 over the probability threshold per lesion size. What six simple
features of a perfectly segmented lesion tell: a lower bound on the information in the images, not an
upper one (the F1 takes its threshold on the same lesions, so it is optimistic by that choice).

    python benchmarks/lesion_signal.py COHORT [COHORT ...]
"""

from __future__ import annotations

import sys

import numpy as np


def lesion_features(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (n, 6), active (n,), patient (n,)) of every lesion of 2 voxels or more in ``root``."""
    from scipy import ndimage

    from gdfree.io.adapters import discover
    from gdfree.io.images import read_volume

    features, active, patient = [], [], []
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
            patient.append(case.subject)
    return np.asarray(features), np.asarray(active), np.asarray(patient)


SIZES = (("2-6 voxels", 2, 6), ("7-25 voxels", 7, 25), ("> 25 voxels", 26, np.inf))


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_recall_curve, roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    groups = {"T1w mean": [0], "T2w mean+sd": [1, 2], "FLAIR inside+ring": [3, 4], "all + log volume": list(range(6))}
    for root in sys.argv[1:]:
        x, y, patient = lesion_features(root)
        aucs, p = {}, np.zeros(y.size)
        for name, cols in groups.items():
            p = cross_val_predict(LogisticRegression(max_iter=1000), x[:, cols], y, cv=GroupKFold(5), groups=patient,
                                  method="predict_proba")[:, 1]  # fmt: skip
            aucs[name] = round(float(roc_auc_score(y, p)), 3)
        print(f"{root}: {y.size} lesions, {int(y.sum())} active; 5-fold AUC {aucs}")
        voxels = np.rint(np.exp(x[:, 5]))
        for name, low, high in (("all", 2, np.inf), *SIZES):
            sel = (voxels >= low) & (voxels <= high)
            if 0 < y[sel].sum() < sel.sum():
                precision, recall, _ = precision_recall_curve(y[sel], p[sel])
                f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
                print(f"  {name}: {sel.sum()} lesions, {int(y[sel].sum())} active, AUC "
                      f"{roc_auc_score(y[sel], p[sel]):.3f}, best lesion F1 {f1:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Metrics of an area classifier, and the grouped cross-validation that trains its model card."""

from __future__ import annotations

import numpy as np

from iptnlp.taxonomy import AREAS, UNCERTAIN

COVERAGE_THRESHOLDS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def expected_calibration_error(proba: np.ndarray, y_idx: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins."""
    if len(y_idx) == 0:
        return float("nan")
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_idx).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(y_true: list[str], proba: np.ndarray) -> dict:
    """Per-class P/R/F1, macro-F1, accuracy, kappa, confusion, Brier, ECE, coverage vs accuracy."""
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(AREAS)
    y_idx = np.array([labels.index(y) for y in y_true])
    pred_idx = proba.argmax(axis=1)
    y_pred = [labels[k] for k in pred_idx]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    onehot = np.eye(len(labels))[y_idx]
    conf = proba.max(axis=1)
    coverage = []
    for t in COVERAGE_THRESHOLDS:
        kept = conf >= t
        coverage.append({"threshold": t, "coverage": float(kept.mean()),
                         "accuracy": float((pred_idx[kept] == y_idx[kept]).mean()) if kept.any() else None})
    return {
        "n": len(y_true),
        "per_class": {a: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(s[i])} for i, a in enumerate(labels)},
        "macro_f1": float(np.mean(f)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)),
        "confusion": {"labels": labels,
                      "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(proba, y_idx),
        "coverage": coverage,
    }


def groups_of(case_ids: list, note_ids: list) -> list[str]:
    """A course's notes share a group; a note outside any course is its own group."""
    return [str(c) if isinstance(c, str) and c else f"note:{n}" for c, n in zip(case_ids, note_ids)]


def grouped_cv_proba(features: list[str], labels: list[str], groups: list[str], fit, *,
                     n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold probabilities (AREAS order) with no course in both a train and a test fold.

    ``fit(features, labels)`` returns a fitted estimator with ``predict_proba`` and ``classes_``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = np.zeros((len(labels), len(AREAS)))
    feats = np.array(features, dtype=object)
    ys = np.array(labels, dtype=object)
    for train_idx, test_idx in splitter.split(feats, ys, groups):
        est = fit(feats[train_idx].tolist(), ys[train_idx].tolist())
        order = [list(est.classes_).index(a) for a in AREAS]
        proba[test_idx] = est.predict_proba(feats[test_idx].tolist())[:, order]
    return proba


def format_metrics(m: dict, title: str = "") -> str:
    """A plain-text table of ``classification_metrics`` output."""
    lines = [title] if title else []
    lines.append(f"notes {m['n']}  macro-F1 {m['macro_f1']:.3f}  accuracy {m['accuracy']:.3f}  "
                 f"kappa {m['kappa']:.3f}  Brier {m['brier']:.3f}  ECE {m['ece']:.3f}")
    lines.append(f"{'area':<24}{'precision':>10}{'recall':>8}{'F1':>8}{'n':>6}")
    for a, v in m["per_class"].items():
        lines.append(f"{a:<24}{v['precision']:>10.3f}{v['recall']:>8.3f}{v['f1']:>8.3f}{v['support']:>6}")
    short = {"grief": "grief", "role_dispute": "dispute", "role_transition": "transit",
             "interpersonal_deficits": "deficit"}
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(f"{'':<24}" + "".join(f"{short[a]:>9}" for a in AREAS))
    for a, row in zip(AREAS, m["confusion"]["matrix"]):
        lines.append(f"{a:<24}" + "".join(f"{v:>9}" for v in row))
    cov = "  ".join(f">={c['threshold']:.1f}: {c['coverage']:.2f}/{c['accuracy'] or 0:.2f}"
                    for c in m["coverage"])
    lines.append(f"coverage/accuracy by confidence threshold  {cov}")
    return "\n".join(lines)


__all__ = ["classification_metrics", "grouped_cv_proba", "format_metrics", "UNCERTAIN"]

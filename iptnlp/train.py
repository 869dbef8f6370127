"""Training and evaluating the area model from labelled note files (``iptnlp train`` / ``evaluate``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from iptnlp.errors import InputError
from iptnlp.evaluate import classification_metrics, grouped_cv_proba, groups_of
from iptnlp.io import InputSpec, probe, read_chunks
from iptnlp.model import AreaModel, ResolvedConfig, fit, save_model
from iptnlp.taxonomy import AREAS


def read_labelled(paths: list[str], spec: InputSpec, label_col: str) -> pd.DataFrame:
    """All rows of labelled files, with ``label``; any unreadable row or bad label is an error."""
    from dataclasses import replace

    frames = []
    for path in paths:
        columns = probe(path, spec)
        if label_col not in columns:
            from iptnlp.io import describe_columns

            raise InputError(f"{path}: no {label_col!r} label column (columns found: "
                             f"{describe_columns(columns)}); name it with --label-col")
        keep = (label_col, "themes") if "themes" in columns else (label_col,)
        chunk_frames = list(read_chunks(path, replace(spec, keep=keep)))
        frame = pd.concat(chunk_frames, ignore_index=True) if chunk_frames else pd.DataFrame()
        frame["label"] = frame.pop(f"_keep_{label_col}")
        if "themes" in columns:
            frame["themes"] = [_theme_list(v) for v in frame.pop("_keep_themes")]
        bad = frame[frame["error"].notna()]
        if len(bad):
            raise InputError(f"{path}: {bad['error'].iloc[0]} ({len(bad)} unreadable rows); training "
                             f"needs every row readable")
        wrong = frame[~frame["label"].isin(AREAS)]
        if len(wrong):
            raise InputError(f"{path}: row {wrong['row'].iloc[0]} has label outside {list(AREAS)} "
                             f"({len(wrong)} such rows); fix the {label_col!r} column")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _theme_list(value) -> list[str] | None:
    """A themes cell as a list: JSON lists as they are, CSV cells `;`-joined; empty -> []."""
    if hasattr(value, "tolist") and not isinstance(value, str):   # a Parquet list cell (ndarray)
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [t.strip() for t in str(value).split(";") if t.strip()]


def theme_metrics(y_true, proba, threshold: float) -> dict:
    """Micro and per-theme precision/recall/F1 of thresholded theme probabilities."""
    import numpy as np

    from iptnlp.taxonomy import THEME_IDS

    y = np.array([[t in row for t in THEME_IDS] for row in y_true])
    pred = proba >= threshold

    def prf(tp, fp, fn):
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

    def counts(a, b):
        return int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum())

    return {"threshold": threshold, "micro": prf(*counts(pred, y)),
            "per_theme": {t: {**prf(*counts(pred[:, j], y[:, j])), "support": int(y[:, j].sum())}
                          for j, t in enumerate(THEME_IDS)}}


def cached_features(config: ResolvedConfig, texts: list[str]) -> list[str]:
    """Preprocessed feature strings, cached on disk by joblib (keyed on texts and rules)."""
    import os

    from joblib import Memory

    from iptnlp.config import REPO_ROOT

    location = os.environ.get("IPTNLP_CACHE", str(REPO_ROOT / ".cache"))
    memory = Memory(location if location != "off" else None, verbose=0)
    return memory.cache(_features)(config.to_card(), texts)


def _features(card_config: dict, texts: list[str]) -> list[str]:
    return ResolvedConfig.from_card(card_config).preprocessor().transform(texts)


def train_model(data_paths: list[str], out_dir: str | Path, *, config_path: str | None = None,
                label_col: str = "area", text_col: str = "text", cv_folds: int = 5,
                progress: Callable[[str], None] | None = None) -> dict:
    """Fit on every labelled row, score by grouped CV, and save the model with its card."""
    say = progress or (lambda _m: None)
    config = ResolvedConfig.from_file(config_path)
    data = read_labelled(data_paths, InputSpec(text_col=text_col), label_col)
    say(f"read {len(data)} labelled notes from {len(data_paths)} file(s)")
    feats = cached_features(config, data["text"].tolist())
    labels = data["label"].tolist()
    metrics = {}
    groups = groups_of(data["case_id"].tolist() if "case_id" in data else [None] * len(data),
                       data["note_id"].tolist())
    if cv_folds > 1:
        say(f"grouped {cv_folds}-fold cross-validation over {len(set(groups))} groups")
        proba = grouped_cv_proba(feats, labels, groups, lambda f, y, g: fit(f, y, config, g),
                                 n_splits=cv_folds, seed=config.model.seed, n_jobs=2)
        metrics["grouped_cv"] = classification_metrics(labels, proba)
    say("fitting the final model on all notes")
    estimator = fit(feats, labels, config, groups)
    theme_estimator = None
    if config.model.themes.enabled and "themes" in data:
        from dataclasses import replace

        from iptnlp.model import fit_themes

        theme_cfg = replace(config, model=replace(config.model, features=config.theme_features()))
        theme_feats = cached_features(theme_cfg, data["text"].tolist())
        themes = data["themes"].tolist()
        if cv_folds > 1:
            say("theme model: grouped cross-validation")
            proba = _grouped_theme_proba(theme_feats, themes, groups, config, cv_folds)
            metrics["themes_grouped_cv"] = theme_metrics(themes, proba, config.model.themes.threshold)
        say("fitting the theme model on all notes")
        theme_estimator = fit_themes(theme_feats, themes, config)
    return save_model(out_dir, estimator, config, data_files=[Path(p) for p in data_paths],
                      n_notes=len(data), label_counts=dict(Counter(labels)), metrics=metrics,
                      theme_estimator=theme_estimator)


def _grouped_theme_proba(feats, themes, groups, config, n_splits):
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.model_selection import GroupKFold

    from iptnlp.model import fit_themes
    from iptnlp.taxonomy import THEME_IDS

    X = np.array(feats, dtype=object)
    T = np.array(themes, dtype=object)

    def one(train_idx, test_idx):
        est = fit_themes(X[train_idx].tolist(), T[train_idx].tolist(), config)
        return test_idx, est.predict_proba(X[test_idx].tolist())

    proba = np.zeros((len(feats), len(THEME_IDS)))
    folds = GroupKFold(n_splits=n_splits).split(X, groups=groups)
    for test_idx, p in Parallel(n_jobs=2)(delayed(one)(tr, te) for tr, te in folds):
        proba[test_idx] = p
    return proba


def evaluate_model(model: AreaModel, data_path: str, *, label_col: str = "area",
                   text_col: str = "text") -> dict:
    """Metrics of ``model`` on a labelled file it is applied to as it stands."""
    data = read_labelled([data_path], InputSpec(text_col=text_col), label_col)
    proba = model.predict_proba(data["text"].tolist())
    return classification_metrics(data["label"].tolist(), proba)

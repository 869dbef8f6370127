"""Metrics of an area classifier, and the grouped cross-validation that trains its model card."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

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
                     n_splits: int = 5, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Out-of-fold probabilities (AREAS order) with no course in both a train and a test fold.

    ``fit(features, labels, groups)`` returns a fitted estimator with ``predict_proba`` and ``classes_``.
    """
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    feats = np.array(features, dtype=object)
    ys = np.array(labels, dtype=object)
    gs = np.array(groups, dtype=object)
    folds = list(splitter.split(feats, ys, gs))

    def one_fold(train_idx, test_idx):
        est = fit(feats[train_idx].tolist(), ys[train_idx].tolist(), gs[train_idx].tolist())
        order = [list(est.classes_).index(a) for a in AREAS]
        return test_idx, est.predict_proba(feats[test_idx].tolist())[:, order]

    proba = np.zeros((len(labels), len(AREAS)))
    for test_idx, fold_proba in Parallel(n_jobs=n_jobs)(delayed(one_fold)(tr, te) for tr, te in folds):
        proba[test_idx] = fold_proba
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


# --- make evaluate: the whole evaluation, written to reports/ ------------------------------------

EXTERNAL_DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "external-dev.jsonl"


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _majority_fit(_features, labels, _groups=None):
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="prior").fit(np.zeros((len(labels), 1)), labels)


def _raw_tfidf_fit(texts, labels, _groups=None):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([("tfidf", TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)),
                     ("lr", LogisticRegression(max_iter=2000, C=4.0))]).fit(texts, labels)


def lexicon_baseline_proba(feature_strings: list[str], areas_of: dict[str, str]) -> np.ndarray:
    """Keyword baseline: count non-negated lexicon hits per area; ties and no hits stay flat."""
    proba = np.ones((len(feature_strings), len(AREAS)))
    for i, feats in enumerate(feature_strings):
        for tok in feats.split():
            if tok.startswith("lex_") and tok[4:] in areas_of:
                proba[i, AREAS.index(areas_of[tok[4:]])] += 1
    return proba / proba.sum(axis=1, keepdims=True)


def variants(base) -> dict[str, object]:
    """Ablation: the shipped config, then one change at a time (each named by what it flips)."""
    from dataclasses import replace

    m = base.model
    f, v, c = m.features, m.vectorizer, m.calibration

    def flip(on: bool, what: str) -> str:
        return f"{'-' if on else '+'} {what}"

    out = {
        "shipped config": m,
        flip(f.negation, "negation marks"): replace(m, features=replace(f, negation=not f.negation)),
        flip(f.hypothetical, "hypothetical marks"): replace(m, features=replace(f, hypothetical=not f.hypothetical)),
        flip(f.speaker, "client-turn features"): replace(m, features=replace(f, speaker=not f.speaker)),
        flip(bool(f.lexicon), "domain lexicon"): replace(m, features=replace(f, lexicon=None if f.lexicon else "lexicon.yml"),
                                                         vectorizer=replace(v, lexicon_weight=None)),
        flip(bool(v.lexicon_weight), "lexicon as its own block"): replace(
            m, vectorizer=replace(v, lexicon_weight=None if v.lexicon_weight else 1.0)),
        flip(bool(v.char_ngrams), "character n-grams"): replace(
            m, vectorizer=replace(v, char_ngrams=None if v.char_ngrams else (3, 5))),
        flip(v.ngram_range[1] > 1, "word bigrams"): replace(
            m, vectorizer=replace(v, ngram_range=(1, 1) if v.ngram_range[1] > 1 else (1, 2))),
        "sigmoid calibration" if c.method != "sigmoid" else "temperature calibration": replace(
            m, calibration=replace(c, method="sigmoid" if c.method != "sigmoid" else "temperature")),
    }
    if not f.lexicon:
        out.pop(flip(False, "lexicon as its own block"), None)
    return out


def run_evaluation(corpus: Path, external: Path | None, out_dir: Path, *, config_path=None,
                   ablation: bool = True, say=print) -> dict:
    """Grouped CV on the corpus and the external dev set, for the model, baselines and ablations."""
    from dataclasses import replace

    from iptnlp.config import load_lexicon, load_lexicon_areas, resolve_path
    from iptnlp.model import ResolvedConfig, fit
    from iptnlp.train import cached_features

    base = ResolvedConfig.from_file(config_path)
    records = _read_jsonl(corpus)
    texts = [r["text"] for r in records]
    labels = [r["area"] for r in records]
    groups = groups_of([r.get("case_id") for r in records], [r["note_id"] for r in records])
    augmented = [str(r.get("source", "")).startswith("augmented") for r in records]
    ext = None
    if external is not None and external.is_file():
        ext_records = _read_jsonl(external)
        ext = ([r["text"] for r in ext_records], [r["label"] for r in ext_records])
        say(f"external dev set: {len(ext[0])} texts from {external.name}")
    else:
        say(f"external dev set not found at {external}; reporting the corpus only")
    report: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": "make evaluate",
        "corpus": {"path": str(corpus.name), "notes": len(records), "groups": len(set(groups)),
                   "augmented_notes": int(sum(augmented))},
        "external": {"path": "shared/data/external-dev.jsonl", "present": ext is not None,
                     "n": len(ext[0]) if ext else 0},
        "systems": {},
    }

    def score(name: str, cv_proba: np.ndarray, ext_proba: np.ndarray | None) -> None:
        entry = {"grouped_cv": classification_metrics(labels, cv_proba)}
        if ext is not None and ext_proba is not None:
            entry["external"] = classification_metrics(ext[1], ext_proba)
        report["systems"][name] = entry
        e = entry.get("external", {}).get("macro_f1")
        say(f"{name:<28} grouped-CV macro-F1 {entry['grouped_cv']['macro_f1']:.3f}"
            f"  ECE {entry['grouped_cv']['ece']:.3f}" + (f"  external macro-F1 {e:.3f}" if e is not None else ""))

    def model_system(name: str, model_cfg) -> None:
        cfg = ResolvedConfig(model_cfg, base.preprocess,
                             load_lexicon(resolve_path(config_path, model_cfg.features.lexicon))
                             if model_cfg.features.lexicon else None)
        feats = cached_features(cfg, texts)
        cv = grouped_cv_proba(feats, labels, groups, lambda X, y, g: fit(X, y, cfg, g), seed=cfg.model.seed,
                              n_jobs=2)
        ext_proba = None
        if ext is not None:
            est = fit(feats, labels, cfg, groups)
            order = [list(est.classes_).index(a) for a in AREAS]
            ext_proba = est.predict_proba(cached_features(cfg, ext[0]))[:, order]
        score(name, cv, ext_proba)

    # baselines
    cv = grouped_cv_proba([""] * len(labels), labels, groups, _majority_fit, seed=base.model.seed)
    score("baseline: majority class", cv, np.tile(cv[0], (len(ext[0]), 1)) if ext else None)
    lex_path = resolve_path(config_path, base.model.features.lexicon or "lexicon.yml")
    lex_cfg = ResolvedConfig(replace(base.model, features=replace(base.model.features, lexicon=str(lex_path))),
                             base.preprocess, load_lexicon(lex_path))
    areas_of = load_lexicon_areas(lex_path)
    score("baseline: keyword lexicon", lexicon_baseline_proba(cached_features(lex_cfg, texts), areas_of),
          lexicon_baseline_proba(cached_features(lex_cfg, ext[0]), areas_of) if ext else None)
    cv = grouped_cv_proba(texts, labels, groups, _raw_tfidf_fit, seed=base.model.seed, n_jobs=2)
    ext_proba = None
    if ext:
        est = _raw_tfidf_fit(texts, labels)
        ext_proba = est.predict_proba(ext[0])[:, [list(est.classes_).index(a) for a in AREAS]]
    score("baseline: raw TF-IDF + LR", cv, ext_proba)

    for name, model_cfg in (variants(base) if ablation else {"shipped config": base.model}).items():
        model_system(name, model_cfg)

    if any(augmented):
        written = [i for i, a in enumerate(augmented) if not a]
        report["augmentation"] = "see systems; augmented notes are excluded in 'written only'"
        feats = cached_features(base, [texts[i] for i in written])
        cv = grouped_cv_proba(feats, [labels[i] for i in written], [groups[i] for i in written],
                              lambda X, y, g: fit(X, y, base, g), seed=base.model.seed, n_jobs=2)
        report["systems"]["shipped config, written notes only"] = {
            "grouped_cv": classification_metrics([labels[i] for i in written], cv)}
    else:
        report["augmentation"] = "the corpus has no generated augmentation: every note is written"

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "evaluation.md").write_text(markdown_report(report), encoding="utf-8")
    return report


def markdown_report(report: dict) -> str:
    lines = [f"# Evaluation ({report['date']}, `{report['command']}`)", "",
             f"Corpus: {report['corpus']['notes']} notes in {report['corpus']['groups']} groups "
             f"(a course is one group); cross-validation is 5-fold, grouped by course, so no course "
             f"is in both a training and a test fold. {report['augmentation'].capitalize()}.", ""]
    if report["external"]["present"]:
        lines += [f"External dev set: {report['external']['n']} real help-seeking texts "
                  f"(`{report['external']['path']}`), never trained on; the model is trained on the whole "
                  f"corpus and applied to it.", ""]
    else:
        lines += ["External dev set: not found, so only the corpus is reported.", ""]
    lines += ["| system | CV macro-F1 | CV kappa | CV ECE | external macro-F1 | external kappa | external ECE |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in report["systems"].items():
        cv, ex = entry["grouped_cv"], entry.get("external")
        lines.append(f"| {name} | {cv['macro_f1']:.3f} | {cv['kappa']:.3f} | {cv['ece']:.3f} | "
                     + (f"{ex['macro_f1']:.3f} | {ex['kappa']:.3f} | {ex['ece']:.3f} |" if ex else "- | - | - |"))
    shipped = report["systems"].get("shipped config")
    if shipped:
        lines += ["", "## The shipped configuration", "", "```",
                  format_metrics(shipped["grouped_cv"], "grouped cross-validation on the corpus:")]
        if "external" in shipped:
            lines += ["", format_metrics(shipped["external"], "external dev set:")]
        lines += ["```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from iptnlp.config import REPO_ROOT

    parser = argparse.ArgumentParser(prog="python -m iptnlp.evaluate",
                                     description="Grouped CV, external dev set, baselines and ablation.")
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT / "data" / "corpus.jsonl")
    parser.add_argument("--external", type=Path, default=EXTERNAL_DEV)
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--no-ablation", action="store_true")
    args = parser.parse_args(argv)
    run_evaluation(args.corpus, args.external, args.out, config_path=args.config,
                   ablation=not args.no_ablation)
    print(f"written: {args.out / 'evaluation.md'} and evaluation.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

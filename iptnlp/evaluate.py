"""Metrics of an area classifier, and the grouped cross-validation that trains its model card."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from iptnlp.errors import ModelError
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


def writers_of(records: list[dict]) -> list[str] | None:
    """Who wrote each note (the corpus's ``source``, e.g. ``written:w7``), or None when cross-validation
    by writer cannot be run: a note names no source, fewer than three writers, an area written by
    one writer only (holding that writer out would leave the area untaught), or generated
    augmentation (an augmented note would stay in training while its original's writer is held out)."""
    writers = [str(r.get("source") or "") for r in records]
    if not all(writers) or len(set(writers)) < 3 or any(w.startswith("augmented") for w in writers):
        return None
    by_area: dict[str, set[str]] = {}
    for r, w in zip(records, writers):
        by_area.setdefault(r.get("area"), set()).add(w)
    return writers if all(len(ws) >= 2 for ws in by_area.values()) else None


WRITERS_SKIPPED = ("cross-validation by writer skipped: it needs a source on every note, at least three "
                   "writers, every area from two writers or more, and no generated augmentation")


def grouped_cv_proba(features: list[str], labels: list[str], groups: list[str], fit, *,
                     n_splits: int = 5, seed: int = 0, n_jobs: int = 1,
                     fit_groups: list[str] | None = None) -> np.ndarray:
    """Out-of-fold probabilities (AREAS order) with no group (course) in both a train and a test fold.

    ``fit(features, labels, groups)`` returns a fitted estimator with ``predict_proba`` and ``classes_``;
    it is given ``fit_groups`` of the training rows (default: ``groups``), e.g. courses for the
    calibration's own folds when the folds here are whole writers.
    """
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    feats = np.array(features, dtype=object)
    ys = np.array(labels, dtype=object)
    gs = np.array(groups, dtype=object)
    fgs = gs if fit_groups is None else np.array(fit_groups, dtype=object)
    folds = list(splitter.split(feats, ys, gs))

    def one_fold(train_idx, test_idx):
        est = fit(feats[train_idx].tolist(), ys[train_idx].tolist(), fgs[train_idx].tolist())
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

    writers = writers_of(records)
    by_writer = None
    if writers is None:
        say(WRITERS_SKIPPED)
    else:
        # the same model, each writer's notes predicted by a model that never saw that writer: how it
        # reads notes written by other people, in other words (folds: whole writers)
        try:
            by_writer = grouped_cv_proba(cached_features(base, texts), labels, writers,
                                         lambda X, y, g: fit(X, y, base, g), n_splits=min(5, len(set(writers))),
                                         seed=base.model.seed, n_jobs=2, fit_groups=groups)
        except ModelError as exc:   # an extra measurement: the report is written without it
            say(f"cross-validation by writer skipped: {exc}")
    if by_writer is not None:
        entry = {"grouped_cv": classification_metrics(labels, by_writer), "groups": "writer",
                 "writers": len(set(writers))}
        report["systems"]["shipped config, cross-validated by writer"] = entry
        say(f"{'shipped config, by writer':<28} grouped-CV macro-F1 {entry['grouped_cv']['macro_f1']:.3f}"
            f"  ECE {entry['grouped_cv']['ece']:.3f}")

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
    by_writer = report["systems"].get("shipped config, cross-validated by writer")
    if by_writer:
        lines += ["", f"The row \"cross-validated by writer\" folds whole writers ({by_writer['writers']} sources), "
                  f"so each note is predicted by a model that saw nothing its writer wrote: the nearest the corpus "
                  f"comes to notes by other people."]
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
    parser.add_argument("--only", choices=["themes-audit"], default=None,
                        help="Run only this section (themes and the audit, a few minutes) and add it to "
                             "the existing reports/evaluation.json and .md.")
    parser.add_argument("--audit-config", default=None, help="Audit rules (default: configs/audit.yml).")
    parser.add_argument("--heldout", type=Path, nargs="*", default=[],
                        help="Authored note files (data/notes/*.txt format) the shipped model and rules were "
                             "not built from, scored as they are (e.g. data/notes/w16.txt).")
    parser.add_argument("--heldout-model", type=Path, default=None,
                        help="Score the --heldout files with this model folder instead of the shipped one "
                             "(e.g. the model of an earlier commit, to measure notes before training on them).")
    args = parser.parse_args(argv)
    if args.heldout_model and not args.heldout:
        parser.error("--heldout-model scores the --heldout files: name them too")
    if args.only is None:
        run_evaluation(args.corpus, args.external, args.out, config_path=args.config,
                       ablation=not args.no_ablation)
    section = themes_audit_evaluation(args.corpus, config_path=args.config, audit_config_path=args.audit_config,
                                      heldout=args.heldout, heldout_model=args.heldout_model)
    print_themes_audit(section)
    write_themes_audit(section, args.out)
    print(f"written: {args.out / 'evaluation.md'} and evaluation.json")
    return 0


# --- themes and the audit (python -m iptnlp.evaluate --only themes-audit) ------------------------

DRIFT_SWEEP = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def combine_themes(theme_proba: np.ndarray, ruled: list[set[str]], phases: list[str], cfg) -> list[list[str]]:
    """Themes found per note exactly as ``Tagger.tag_frame`` decides them (``themes.decide_themes``)."""
    from iptnlp.themes import decide_themes

    return [decide_themes(theme_proba[i], ruled[i], phases[i], cfg) for i in range(len(ruled))]


THRESHOLD_GRID = tuple(round(0.2 + 0.05 * k, 2) for k in range(11))   # 0.2 .. 0.7


def choose_theme_thresholds(theme_proba: np.ndarray, ruled: list[set[str]], gold: list[list[str]],
                            phases: list[str], cfg, rows=None) -> dict[str, float]:
    """Per theme, the threshold on ``THRESHOLD_GRID`` that gives the theme's best F1 over ``rows``,
    deciding exactly as ``themes.decide_themes`` does (a theme's decision depends on its own threshold
    only). Ties go to the threshold nearest ``cfg.threshold``."""
    from iptnlp.taxonomy import PHASES, THEME_IDS, THEMES, is_off_phase

    rows = np.arange(len(gold)) if rows is None else np.asarray(rows)
    join = set(cfg.rules_join)
    chosen = {}
    for j, t in enumerate(THEME_IDS):
        p = theme_proba[rows, j]
        y = np.array([t in gold[i] for i in rows])
        hit = np.array([t in ruled[i] and t in join for i in rows])
        off = np.array([phases[i] in PHASES and is_off_phase(t, phases[i]) for i in rows])
        off_found = off & ((p >= cfg.off_phase_threshold) | (hit & (p >= cfg.off_phase_rule_threshold)))
        # in the theme's expected phase, expected_phase_thresholds lowers the bar (as decide_themes does)
        low = cfg.expected_phase_thresholds.get(t, 1.0)
        expected = np.array([phases[i] == THEMES[t][1] for i in rows])
        best = None
        for thr in THRESHOLD_GRID:
            found = np.where(off, off_found, (p >= np.where(expected, min(thr, low), thr)) | hit)
            tp, fp, fn = int((found & y).sum()), int((found & ~y).sum()), int((~found & y).sum())
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            key = (round(f1, 9), -abs(thr - cfg.threshold))
            if best is None or key > best[0]:
                best = (key, thr)
        chosen[t] = best[1]
    return chosen


def cross_fitted_thresholds(theme_proba, ruled, gold, phases, groups, cfg, seed: int = 0) -> dict:
    """An honest figure for per-theme thresholds: courses split in two halves; thresholds chosen on
    one half decide the other, and the other way round; plus the thresholds chosen on all notes."""
    from dataclasses import replace

    courses = sorted(set(groups))
    rng = np.random.default_rng(seed)
    half = {c: k % 2 for k, c in enumerate(rng.permutation(courses))}
    side = np.array([half[g] for g in groups])
    pred: list = [None] * len(gold)
    chosen_halves = []
    for s in (0, 1):
        picked = choose_theme_thresholds(theme_proba, ruled, gold, phases, cfg, np.flatnonzero(side == s))
        chosen_halves.append(picked)
        use = replace(cfg, thresholds=picked)
        for i in np.flatnonzero(side != s):
            pred[i] = combine_themes(theme_proba[i:i + 1], [ruled[i]], [phases[i]], use)[0]
    return {"how": "per-theme thresholds chosen on one half of the courses and scored on the other, both ways",
            "grid": list(THRESHOLD_GRID), "cross_fitted": theme_flag_metrics(gold, pred, phases),
            "chosen_per_half": chosen_halves,
            "chosen_on_all": choose_theme_thresholds(theme_proba, ruled, gold, phases, cfg)}


def _prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn}


def theme_flag_metrics(gold: list[list[str]], pred: list[list[str]], phases: list[str]) -> dict:
    """Per-theme and micro P/R/F1 of theme lists, and the precision of the off-phase flags they raise."""
    from iptnlp.taxonomy import THEME_IDS
    from iptnlp.themes import off_phase

    per = {}
    for t in THEME_IDS:
        g = [t in x for x in gold]
        p = [t in x for x in pred]
        tp = sum(a and b for a, b in zip(g, p))
        per[t] = {**_prf(tp, sum(b and not a for a, b in zip(g, p)), sum(a and not b for a, b in zip(g, p))),
                  "support": sum(g)}
    micro = _prf(*(sum(v[k] for v in per.values()) for k in ("tp", "fp", "fn")))
    gold_off = {(i, t) for i, (x, ph) in enumerate(zip(gold, phases)) for t in off_phase(x, ph)}
    pred_off = {(i, t) for i, (x, ph) in enumerate(zip(pred, phases)) for t in off_phase(x, ph)}
    off = _prf(len(gold_off & pred_off), len(pred_off - gold_off), len(gold_off - pred_off))
    return {"n": len(gold), "micro": micro, "per_theme": per, "off_phase": off}


def _course_frame(records: list[dict], area_proba: np.ndarray, themes: list[list[str]], two_area=None):
    import pandas as pd

    from iptnlp.taxonomy import AREAS

    rows = []
    two_area = two_area if two_area is not None else [False] * len(records)
    for r, p, t, two in zip(records, area_proba, themes, two_area):
        rows.append({"two_area_focus": bool(two), "note_id": r["note_id"], "case_id": r.get("case_id"), "session": r.get("session"),
                     "total_sessions": r.get("total_sessions"), "status": "ok",
                     "area": AREAS[int(np.argmax(p))], **{f"p_{a}": float(p[j]) for j, a in enumerate(AREAS)},
                     "phase": r["phase"], "themes": t, "focus": r.get("focus")})
    return pd.DataFrame(rows)


def _split(value) -> set[str]:
    return {v for v in str(value or "").split(";") if v}


def audit_check(records: list[dict], area_proba: np.ndarray, themes: list[list[str]], audit_config=None,
                two_area: list[bool] | None = None) -> dict:
    """The audit on courses with known answers: predicted (probabilities, themes) against gold.

    Gold: focus as written; drift = a middle session whose ``area`` label is not in the focus;
    missing expected themes from the gold theme labels. Drift is scored with the focus given (the
    drift rule alone) and with the focus inferred (the whole audit, as on notes with no focus).
    """
    from dataclasses import replace

    from iptnlp.audit import AuditConfig, DriftRule, audit
    from iptnlp.taxonomy import AREAS

    cfg = audit_config or AuditConfig()
    keep = [i for i, r in enumerate(records) if r.get("case_id")]
    recs = [records[i] for i in keep]
    onehot = np.array([[1.0 if r["area"] == a else 0.0 for a in AREAS] for r in recs])
    gold = audit(_course_frame(recs, onehot, [r["themes"] for r in recs]), cfg).cases.set_index("case_id")
    pred_frame = _course_frame(recs, area_proba[keep], [themes[i] for i in keep],
                               [two_area[i] for i in keep] if two_area is not None else None)
    given_result = audit(pred_frame, cfg)
    given = given_result.cases.set_index("case_id")
    inferred = audit(pred_frame, cfg, focus_col=None).cases.set_index("case_id")
    # each session's area, by the note alone and read with its course (sessions.csv's course_area)
    gold_area = {r["note_id"]: r["area"] for r in recs}
    ses = given_result.sessions

    def accuracy(column: str) -> float:
        return float(np.mean([a == gold_area[n] for n, a in zip(ses["note_id"], ses[column])])) if len(ses) else 0.0

    alone, with_course = accuracy("area"), accuracy("course_area")
    cases = list(gold.index)

    def norm(f):
        return "+".join(sorted(str(f).split("+")))

    focus_exact = [c for c in cases if norm(inferred.at[c, "focus"]) == norm(gold.at[c, "focus"])]
    primary_in = [c for c in cases if set(str(inferred.at[c, "focus"]).split("+")) & set(gold.at[c, "focus"].split("+"))]
    wrong = {c: {"gold": gold.at[c, "focus"], "inferred": inferred.at[c, "focus"]}
             for c in cases if c not in focus_exact}

    def drift_prf(table) -> dict:
        g = {(c, s) for c in cases for s in _split(gold.at[c, "drift_sessions"])}
        p = {(c, s) for c in cases for s in _split(table.at[c, "drift_sessions"])}
        return _prf(len(g & p), len(p - g), len(g - p))

    sweep = {}
    for t in DRIFT_SWEEP:
        table = audit(pred_frame, replace(cfg, drift=DriftRule(t))).cases.set_index("case_id")
        sweep[str(t)] = drift_prf(table)
    exact = [c for c in cases if _split(given.at[c, "missing_expected"]) == _split(gold.at[c, "missing_expected"])]
    g_items = {(c, m) for c in cases for m in _split(gold.at[c, "missing_expected"])}
    p_items = {(c, m) for c in cases for m in _split(given.at[c, "missing_expected"])}
    return {
        "courses": len(cases), "notes": len(recs),
        "middle_sessions": int(gold["middle_sessions"].sum()),
        "gold_drift_sessions": int(sum(len(_split(v)) for v in gold["drift_sessions"])),
        "drift_threshold": cfg.drift.max_focus_probability,
        "session_area_accuracy": {"note_alone": alone, "with_course": with_course,
                                  "course_weight": cfg.course_context.weight},
        "focus_exact": {"right": len(focus_exact), "rate": len(focus_exact) / len(cases) if cases else 0.0},
        "focus_primary_in_gold": {"right": len(primary_in), "rate": len(primary_in) / len(cases) if cases else 0.0},
        "focus_wrong": wrong,
        "drift_given_focus": drift_prf(given),
        "drift_inferred_focus": drift_prf(inferred),
        "drift_sweep_given_focus": sweep,
        "missing_expected_exact": {"right": len(exact), "rate": len(exact) / len(cases) if cases else 0.0},
        "missing_expected_items": _prf(len(g_items & p_items), len(p_items - g_items), len(g_items - p_items)),
    }


def oof_corpus_predictions(records: list[dict], *, config_path=None, n_splits: int = 5, say=print):
    """Out-of-fold (grouped by course) area probabilities and theme probabilities, and rule hits."""
    from dataclasses import replace

    from iptnlp.model import ResolvedConfig, fit
    from iptnlp.themes import ThemeFinder, tagging_rules
    from iptnlp.train import _grouped_theme_proba, cached_features

    base = ResolvedConfig.from_file(config_path)
    texts = [r["text"] for r in records]
    groups = groups_of([r.get("case_id") for r in records], [r["note_id"] for r in records])
    say("areas: grouped cross-validation")
    feats = cached_features(base, texts)
    area = grouped_cv_proba(feats, [r["area"] for r in records], groups,
                            lambda X, y, g: fit(X, y, base, g), n_splits=n_splits, seed=base.model.seed, n_jobs=2)
    say("themes: grouped cross-validation of the learned model")
    theme_cfg = replace(base, model=replace(base.model, features=base.theme_features()))
    theme_proba = _grouped_theme_proba(cached_features(theme_cfg, texts), [r["themes"] for r in records],
                                       groups, base, n_splits)
    say("themes: rule hits")
    pre = base.preprocessor()
    finder = ThemeFinder(pre.nlp, tagging_rules())   # as the tagger does
    ruled = [{h.label for h in finder.hits(doc)} for doc in pre.pipe(texts)]
    return base, area, theme_proba, ruled


def theme_proba_by_writer(records: list[dict], base, say=print) -> np.ndarray | None:
    """Out-of-fold theme probabilities with whole writers as folds (None without several writers)."""
    from dataclasses import replace

    from iptnlp.train import _grouped_theme_proba, cached_features

    writers = writers_of(records)
    if writers is None:
        say(WRITERS_SKIPPED)
        return None
    say("themes: cross-validation by writer")
    theme_cfg = replace(base, model=replace(base.model, features=base.theme_features()))
    try:
        return _grouped_theme_proba(cached_features(theme_cfg, [r["text"] for r in records]),
                                    [r["themes"] for r in records], writers, base, min(5, len(set(writers))))
    except ModelError as exc:   # a theme absent (or everywhere) in a fold's training notes
        say(f"themes: cross-validation by writer skipped: {exc}")
        return None


def heldout_predictions(records: list[dict], model_dir=None):
    """The shipped model and rules applied, through ``Tagger.tag_frame``, to notes it was not built from."""
    import pandas as pd

    from iptnlp.io import InputSpec, _normalise
    from iptnlp.model import load_model
    from iptnlp.tagger import Tagger
    from iptnlp.taxonomy import AREAS

    model = load_model(model_dir)
    df = pd.DataFrame([{k: r.get(k) for k in ("note_id", "text", "case_id", "session", "total_sessions")}
                       | {"phase": r["phase"] if r.get("phase_stated") else None} for r in records])
    out = Tagger(model).tag_frame(_normalise(df, "<heldout>", 1, InputSpec()))
    return (out[[f"p_{a}" for a in AREAS]].to_numpy(dtype=float), [list(t) for t in out["themes"]],
            [bool(v) for v in out["two_area_focus"]])


def themes_audit_evaluation(corpus: Path, *, config_path=None, audit_config_path=None,
                            heldout: list[Path] = (), heldout_model=None, say=print) -> dict:
    """Themes (per theme, off-phase flags) and the audit, out-of-fold on the corpus and on held-out notes."""
    from dataclasses import replace

    from iptnlp.audit import load_audit_config

    audit_cfg = load_audit_config(audit_config_path)
    records = _read_jsonl(corpus)
    base, area, theme_proba, ruled = oof_corpus_predictions(records, config_path=config_path, say=say)
    tc = base.model.themes
    gold = [r["themes"] for r in records]
    phases = [r["phase"] for r in records]
    themes = combine_themes(theme_proba, ruled, phases, tc)
    learned_only = combine_themes(theme_proba, ruled, phases, replace(tc, rules_join=()))
    by_writer = theme_proba_by_writer(records, base, say=say)
    section = {
        "corpus": {"path": corpus.name, "notes": len(records),
                   "how": "5-fold cross-validation grouped by course for the learned area and theme models; "
                          "the theme rules (configs/themes.yml) were written with notes of this corpus in view, "
                          "so their share of the theme scores is partly in-sample",
                   "themes": theme_flag_metrics(gold, themes, phases),
                   "themes_learned_only": theme_flag_metrics(gold, learned_only, phases)["micro"],
                   **({"themes_by_writer": theme_flag_metrics(
                       gold, combine_themes(by_writer, ruled, phases, tc), phases)["micro"]}
                      if by_writer is not None else {}),
                   "audit": audit_check(records, area, themes, audit_cfg,
                                        ["two_area_focus" in r for r in ruled]),
                   # the per-theme thresholds of configs/model.yml were chosen from these same
                   # out-of-fold predictions: the cross-fitted figure is the honest one for them
                   "threshold_choice": cross_fitted_thresholds(
                       theme_proba, ruled, gold, phases,
                       groups_of([r.get("case_id") for r in records], [r["note_id"] for r in records]),
                       replace(tc, thresholds={}))},
        "theme_threshold": tc.threshold, "theme_thresholds": dict(tc.thresholds),
        "expected_phase_thresholds": dict(tc.expected_phase_thresholds),
        "rules_join": list(tc.rules_join),
        "off_phase_threshold": tc.off_phase_threshold, "off_phase_rule_threshold": tc.off_phase_rule_threshold,
    }
    if heldout:
        from iptnlp.corpus import load_corpus
        from iptnlp.model import DEFAULT_MODEL_DIR, read_card, sha256_files

        held = load_corpus(list(heldout))
        known = {r["note_id"] for r in records}
        overlap = sum(r["note_id"] in known for r in held)
        model_dir = Path(heldout_model) if heldout_model else DEFAULT_MODEL_DIR
        trained = read_card(model_dir).get("training_data", {})
        # the card holds a digest of the training data, not its note ids: if the corpus has changed since
        # the shipped model was trained, notes new in it were not trained on
        same_corpus = trained.get("sha256") == sha256_files([corpus])
        h_area, h_themes, h_two = heldout_predictions(held, model_dir)
        shipped = model_dir == DEFAULT_MODEL_DIR
        entry = {"files": [p.name for p in heldout], "notes": len(held),
                 "model": "the shipped model" if shipped else str(heldout_model),
                 "in_current_corpus": overlap, "model_trained_on_current_corpus": same_corpus,
                 "model_training_notes": trained.get("n_notes"),
                 "how": ("the shipped model" if shipped else f"the model in {heldout_model}")
                        + " and the theme rules, applied as `iptnlp tag` does",
                 "area": classification_metrics([r["area"] for r in held], h_area),
                 "themes": theme_flag_metrics([r["themes"] for r in held], h_themes, [r["phase"] for r in held])}
        if any(r.get("case_id") for r in held):
            entry["audit"] = audit_check(held, h_area, h_themes, audit_cfg, h_two)
        if overlap and same_corpus:
            say(f"warning: {overlap} held-out notes are in {corpus.name}, which the model was trained "
                f"on: they are not held out")
        elif overlap:
            say(f"note: {overlap} held-out notes are in {corpus.name} now, but the model was trained on "
                f"an earlier corpus ({trained.get('n_notes')} notes), so they are held out from it")
        section["heldout"] = entry
    return section


def _line_prf(name: str, m: dict) -> str:
    return f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} |"


def _heldout_note(s: dict) -> str:
    where = f" ({', '.join(s['files'])}"
    if not s["in_current_corpus"]:
        return where + "; none of them in the corpus)"
    if s["model_trained_on_current_corpus"]:
        return where + f"; {s['in_current_corpus']} of them in the corpus the model was trained on: NOT held out)"
    return where + (f"; {s['in_current_corpus']} of them in the corpus now, but the model was trained "
                    f"on an earlier corpus of {s['model_training_notes']} notes, so held out from it)")


def markdown_themes_audit(section: dict) -> str:
    """The themes-and-audit section of reports/evaluation.md."""
    lines = ["", "## Themes and the focus-adherence audit", "",
             "`python -m iptnlp.evaluate --only themes-audit`. Themes are combined exactly as `iptnlp tag` "
             f"does: the learned model at threshold {section['theme_threshold']}"
             + (" (per theme: " + ", ".join(f"{t} {v}" for t, v in section["theme_thresholds"].items()) + ")"
                if section.get("theme_thresholds") else "")
             + ("; in the phase where it is expected: " + ", ".join(
                 f"{t} {v}" for t, v in section["expected_phase_thresholds"].items())
                if section.get("expected_phase_thresholds") else "")
             + ", plus rule hits for "
             f"{', '.join(section['rules_join'])}; outside its phases a theme needs the learned model's "
             f"probability {section.get('off_phase_threshold', 0.5)}, or a rule hit with "
             f"{section.get('off_phase_rule_threshold', 0.0)}. "
             f"Gold drift = a middle session whose `area` label is not "
             "in the course's `focus`; gold missing themes come from the theme labels.", ""]
    parts = [("corpus", "Corpus, out-of-fold")] + ([("heldout", "Held-out notes")] if "heldout" in section else [])
    for key, title in parts:
        s = section[key]
        th, au = s["themes"], s.get("audit")
        lines += [f"### {title}", "", s["how"] + ".", "",
                  f"Notes: {s['notes']}" + (_heldout_note(s) if key == "heldout" else ""), ""]
        if "area" in s:
            lines += ["Area:", "", "```", format_metrics(s["area"]), "```", ""]
        lines += ["| measure | precision | recall | F1 |", "| --- | --- | --- | --- |",
                  _line_prf("themes, micro", th["micro"])]
        if "themes_learned_only" in s:
            lines.append(_line_prf("themes, micro, learned model alone", s["themes_learned_only"]))
        if "themes_by_writer" in s:
            lines.append(_line_prf("themes, micro, cross-validated by writer (whole writers held out)",
                                   s["themes_by_writer"]))
        lines.append(_line_prf("off-phase flags", th["off_phase"]))
        choice = s.get("threshold_choice")
        if choice:
            cf = choice["cross_fitted"]
            lines += ["", "Per-theme thresholds (grid " + f"{choice['grid'][0]}-{choice['grid'][-1]}): "
                      + choice["how"] + " (the honest figure for thresholds chosen on these predictions):", "",
                      "| measure | precision | recall | F1 |", "| --- | --- | --- | --- |",
                      _line_prf("themes, micro, cross-fitted thresholds", cf["micro"]),
                      _line_prf("off-phase flags, cross-fitted thresholds", cf["off_phase"]), "",
                      "Chosen on all notes: " + ", ".join(f"{t} {v}" for t, v in choice["chosen_on_all"].items())
                      + "; on each half: " + " / ".join(", ".join(f"{v}" for v in h.values())
                                                         for h in choice["chosen_per_half"]) + "."]
        lines += ["", "| theme | precision | recall | F1 | n |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                  for t, v in th["per_theme"].items()]
        if au:
            lines += ["", f"Audit on {au['courses']} courses ({au['notes']} notes, {au['middle_sessions']} middle "
                      f"sessions, {au['gold_drift_sessions']} gold drift sessions; drift threshold "
                      f"p(focus) < {au['drift_threshold']}):", "",
                      f"- each session's area right: {au['session_area_accuracy']['note_alone']:.3f} by the note "
                      f"alone, {au['session_area_accuracy']['with_course']:.3f} read with its course "
                      f"(`course_area`, weight {au['session_area_accuracy']['course_weight']})",
                      f"- focus inferred exactly right: {au['focus_exact']['right']} of {au['courses']} "
                      f"({au['focus_exact']['rate']:.3f}); its top area within the agreed focus: "
                      f"{au['focus_primary_in_gold']['right']} of {au['courses']}",
                      f"- missing expected themes exactly right: {au['missing_expected_exact']['right']} of "
                      f"{au['courses']} courses ({au['missing_expected_exact']['rate']:.3f}); per item P "
                      f"{au['missing_expected_items']['precision']:.3f} R {au['missing_expected_items']['recall']:.3f}",
                      "", "| drift sessions | precision | recall | F1 |", "| --- | --- | --- | --- |",
                      _line_prf("focus given", au["drift_given_focus"]),
                      _line_prf("focus inferred", au["drift_inferred_focus"])]
            lines += [_line_prf(f"focus given, threshold {t}", m) for t, m in au["drift_sweep_given_focus"].items()]
            if au["focus_wrong"]:
                lines += ["", "Courses whose inferred focus differs from the agreed one: " + "; ".join(
                    f"{c} (agreed {v['gold']}, inferred {v['inferred']})" for c, v in au["focus_wrong"].items())]
        lines.append("")
    return "\n".join(lines)


def print_themes_audit(section: dict, say=print) -> None:
    for key in ("corpus", "heldout"):
        if key not in section:
            continue
        s = section[key]
        th = s["themes"]
        if "area" in s:
            a = s["area"]
            say(f"{key}: area macro-F1 {a['macro_f1']:.3f} accuracy {a['accuracy']:.3f} kappa {a['kappa']:.3f} "
                f"ECE {a['ece']:.3f} ({a['n']} notes)")
        say(f"{key}: themes micro P {th['micro']['precision']:.3f} R {th['micro']['recall']:.3f} "
            f"F1 {th['micro']['f1']:.3f}; off-phase precision {th['off_phase']['precision']:.3f} "
            f"({th['off_phase']['tp'] + th['off_phase']['fp']} flags)")
        if s.get("themes_by_writer"):
            w = s["themes_by_writer"]
            say(f"{key}: themes cross-validated by writer: micro P {w['precision']:.3f} R {w['recall']:.3f} "
                f"F1 {w['f1']:.3f}")
        if s.get("threshold_choice"):
            cf = s["threshold_choice"]["cross_fitted"]
            say(f"{key}: per-theme thresholds cross-fitted: themes micro P {cf['micro']['precision']:.3f} "
                f"R {cf['micro']['recall']:.3f} F1 {cf['micro']['f1']:.3f}; chosen on all: "
                f"{s['threshold_choice']['chosen_on_all']}")
        au = s.get("audit")
        if au:
            d = au["drift_given_focus"]
            sa = au["session_area_accuracy"]
            say(f"{key}: session area right {sa['note_alone']:.3f} by the note alone, {sa['with_course']:.3f} "
                f"read with its course")
            say(f"{key}: focus right {au['focus_exact']['right']}/{au['courses']} courses; drift P "
                f"{d['precision']:.3f} R {d['recall']:.3f} F1 {d['f1']:.3f}; missing-expected exact "
                f"{au['missing_expected_exact']['right']}/{au['courses']} ({au['missing_expected_exact']['rate']:.3f})")


def write_themes_audit(section: dict, out_dir: Path) -> None:
    """Add the section to reports/evaluation.json and .md, keeping what the full run wrote there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    report = json.loads(json_path.read_text(encoding="utf-8")) if json_path.is_file() else {}
    report["themes_audit"] = section
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    head = markdown_report(report) if "systems" in report else "# Evaluation\n"
    (out_dir / "evaluation.md").write_text(head + markdown_themes_audit(section), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())

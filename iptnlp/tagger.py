"""Tagging: note chunks in, one result row per note out (the ``iptnlp tag`` job and its Python API)."""

from __future__ import annotations

import sys
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from iptnlp.io import (
    CARRIED,
    PROBA_COLUMNS,
    RESULT_COLUMNS,
    TRAILING_COLUMNS,
    InputSpec,
    ResultWriter,
    probe,
    read_chunks,
)
from iptnlp.model import AreaModel
from iptnlp.taxonomy import AREAS, DEFAULT_COURSE_LENGTH, PHASES, THEME_IDS, phase_of
from iptnlp.themes import off_phase, themes_of

_DEFAULT_FINDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Tagger:
    """Everything one tagging run applies to each chunk: the area model, the theme rules, phases."""

    def __init__(self, model: AreaModel, *, threshold: float | None = None,
                 course_length: int = DEFAULT_COURSE_LENGTH, theme_rules: str | None = None):
        from iptnlp.themes import ThemeFinder, load_theme_rules

        self.model = model
        self.threshold = threshold
        self.course_length = course_length
        finder = _DEFAULT_FINDERS.get(model) if theme_rules is None else None
        if finder is None:
            finder = ThemeFinder(model.preprocessor.nlp, load_theme_rules(theme_rules))
            if theme_rules is None:   # built once per model: tag() may be called for every DataFrame
                _DEFAULT_FINDERS[model] = finder
        self.themes = finder
        self.rules_join = set(model.config.model.themes.rules_join)

    def phase(self, row: dict) -> str:
        stated = row.get("phase")
        if isinstance(stated, str) and stated.strip().lower() in PHASES:
            return stated.strip().lower()
        session, total = row.get("session"), row.get("total_sessions")
        session = None if session is None or session is pd.NA else int(session)
        total = self.course_length if total is None or total is pd.NA else int(total)
        return phase_of(session, total)

    def tag_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Results for one normalised chunk (see ``iptnlp.io``), same rows in the same order."""
        out = frame.drop(columns=["text"]).copy()
        ok = out["error"].isna().to_numpy()
        docs = list(self.model.preprocessor.pipe(frame.loc[ok, "text"].tolist()))
        proba = self.model.predict_proba_features([self.model.preprocessor.features(d) for d in docs])
        n = len(out)
        out["status"] = np.where(ok, "ok", "error")
        area: list = [None] * n
        confidence = np.full(n, np.nan)
        probs = np.full((n, len(AREAS)), np.nan)
        phase: list = [None] * n
        themes: list = [None] * n
        off: list = [None] * n
        evidence: list = [None] * n
        rows = out.to_dict(orient="records")
        decided = self.model.decide(proba, self.threshold) if len(docs) else []
        learned = self.model.theme_estimator is not None
        theme_proba = self.model.predict_themes(docs) if learned else None
        theme_threshold = self.model.config.model.themes.threshold
        for k, i in enumerate(np.flatnonzero(ok)):
            doc = docs[k]
            area[i] = decided[k]
            confidence[i] = proba[k].max()
            probs[i] = proba[k]
            hits = self.themes.hits(doc)
            phase[i] = self.phase(rows[i])
            # the learned theme model decides where the model has one; the rules point at the words
            if learned:
                ruled = {h.label for h in hits if h.label in self.rules_join}
                themes[i] = [t for j, t in enumerate(THEME_IDS)
                             if theme_proba[k, j] >= theme_threshold or t in ruled]
            else:
                themes[i] = themes_of(hits)
            off[i] = off_phase(themes[i], phase[i])
            top = AREAS[int(proba[k].argmax())]
            theme_evidence = {}
            for t in themes[i]:
                spans = [h.as_list() for h in hits if h.label == t]
                theme_evidence[t] = spans or [list(e) for e in self.model.theme_evidence(doc, t)]
            evidence[i] = {"area": [list(e) for e in self.model.area_evidence(doc, top)],
                           "themes": theme_evidence}
        out["area"] = area
        out["confidence"] = confidence
        for j, col in enumerate(PROBA_COLUMNS):
            out[col] = probs[:, j]
        out["phase"] = phase
        out["themes"] = themes
        out["off_phase_themes"] = off
        out["evidence"] = evidence
        out["error"] = out["error"].astype(object).where(~ok, None)
        return out


def result_columns(input_columns: Iterable[str]) -> list[str]:
    present = set(input_columns)
    # a stated `phase` is not carried separately: the output `phase` is it when valid
    return list(RESULT_COLUMNS) + [c for c in CARRIED if c in present and c not in RESULT_COLUMNS] \
        + list(TRAILING_COLUMNS)


def tag(df: pd.DataFrame, model: AreaModel | str | None = None, *, text_col: str = "text",
        id_col: str = "note_id", threshold: float | None = None,
        course_length: int = DEFAULT_COURSE_LENGTH) -> pd.DataFrame:
    """Tag a DataFrame of notes: one result row per input row, in order.

    >>> import iptnlp, pandas as pd
    >>> iptnlp.tag(pd.DataFrame({"text": ["Argued with her sister again about money."]}))  # doctest: +SKIP
    """
    from iptnlp.io import _normalise
    from iptnlp.model import load_model

    if not isinstance(model, AreaModel):
        model = load_model(model)
    if text_col not in df.columns:
        from iptnlp.errors import InputError
        from iptnlp.io import describe_columns

        raise InputError(f"DataFrame has no {text_col!r} column (columns found: "
                         f"{describe_columns([str(c) for c in df.columns])})")
    spec = InputSpec(text_col=text_col, id_col=id_col)
    frame = _normalise(df.reset_index(drop=True), "<dataframe>", 1, spec)
    result = Tagger(model, threshold=threshold, course_length=course_length).tag_frame(frame)
    result = result[result_columns(df.columns)].drop(columns=["source"])
    result.index = df.index   # rows line up with the caller's DataFrame
    return result


@dataclass
class RunSummary:
    notes: int = 0
    status: Counter = field(default_factory=Counter)
    areas: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.notes / self.seconds if self.seconds else 0.0
        areas = ", ".join(f"{a} {self.areas.get(a, 0)}" for a in AREAS + ("uncertain",)
                          if self.areas.get(a))
        return (f"{self.notes} notes: {self.status.get('ok', 0)} ok, {self.status.get('error', 0)} error"
                f" ({rate:,.0f} notes/s){'; ' + areas if areas else ''}")


def tag_files(inputs: list[str], output: str | None, model: AreaModel, spec: InputSpec, *,
              force: bool = False, threshold: float | None = None,
              course_length: int = DEFAULT_COURSE_LENGTH,
              progress: Callable[[str], None] | None = None) -> RunSummary:
    """Tag every note of ``inputs`` into ``output`` (None: JSONL on stdout); return counts."""
    columns: set[str] = set()
    for path in inputs:   # every file-level problem surfaces before any output is written
        columns.update(probe(path, spec))
    tagger = Tagger(model, threshold=threshold, course_length=course_length)
    writer = ResultWriter(output, result_columns(columns), force=force, inputs=inputs)
    summary = RunSummary()
    start = time.perf_counter()
    try:
        for path in inputs:
            for frame in read_chunks(path, spec):
                result = tagger.tag_frame(frame)
                writer.write(result)
                summary.notes += len(result)
                summary.status.update(result["status"])
                summary.areas.update(a for a in result["area"] if isinstance(a, str))
                summary.seconds = time.perf_counter() - start
                if progress:
                    progress(f"{summary.notes:,} notes tagged ({summary.notes / summary.seconds:,.0f}/s)")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - start
    return summary


def stderr_progress(message: str) -> None:
    print(f"iptnlp: {message}", file=sys.stderr, flush=True)

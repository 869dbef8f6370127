"""Tagging: note chunks in, one result row per note out (the ``iptnlp tag`` job and its Python API)."""

from __future__ import annotations

import sys
import time
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
from iptnlp.taxonomy import AREAS


def tag_frame(frame: pd.DataFrame, model: AreaModel, threshold: float | None = None) -> pd.DataFrame:
    """Results for one normalised chunk (see ``iptnlp.io``), same rows in the same order."""
    out = frame.drop(columns=["text"]).copy()
    ok = out["error"].isna().to_numpy()
    texts = frame.loc[ok, "text"].tolist()
    proba = model.predict_proba(texts)
    out["status"] = np.where(ok, "ok", "error")
    out["area"] = None
    out["confidence"] = np.nan
    for col in PROBA_COLUMNS:
        out[col] = np.nan
    if len(texts):
        out.loc[ok, "area"] = model.decide(proba, threshold)
        out.loc[ok, "confidence"] = proba.max(axis=1)
        for k, col in enumerate(PROBA_COLUMNS):
            out.loc[ok, col] = proba[:, k]
    out["error"] = out["error"].astype(object).where(~ok, None)
    return out


def result_columns(input_columns: Iterable[str]) -> list[str]:
    present = set(input_columns)
    return list(RESULT_COLUMNS) + [c for c in CARRIED if c in present] + list(TRAILING_COLUMNS)


def tag(df: pd.DataFrame, model: AreaModel | str | None = None, *, text_col: str = "text",
        id_col: str = "note_id", threshold: float | None = None) -> pd.DataFrame:
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

        found = ", ".join(repr(c) for c in df.columns[:20])
        raise InputError(f"DataFrame has no {text_col!r} column (columns found: {found})")
    spec = InputSpec(text_col=text_col, id_col=id_col)
    frame = _normalise(df.reset_index(drop=True), "<dataframe>", 1, spec)
    result = tag_frame(frame, model, threshold)
    return result[result_columns(df.columns)].drop(columns=["source"])


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
              progress: Callable[[str], None] | None = None) -> RunSummary:
    """Tag every note of ``inputs`` into ``output`` (None: JSONL on stdout); return counts."""
    columns: set[str] = set()
    for path in inputs:   # every file-level problem surfaces before any output is written
        columns.update(probe(path, spec))
    writer = ResultWriter(output, result_columns(columns), force=force, inputs=inputs)
    summary = RunSummary()
    start = time.perf_counter()
    try:
        for path in inputs:
            for frame in read_chunks(path, spec):
                result = tag_frame(frame, model, threshold)
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

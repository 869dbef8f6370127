"""Tagging: note chunks in, one result row per note out (the ``iptnlp tag`` job and its Python API)."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iptnlp import phi as _phi
from iptnlp.errors import InputError, IptnlpError, OutputError
from iptnlp.io import (
    CARRIED,
    MAX_NOTE_CHARS,
    PROBA_COLUMNS,
    RESULT_COLUMNS,
    TRAILING_COLUMNS,
    InputSpec,
    ResultWriter,
    probe,
    read_chunks,
)
from iptnlp.model import AreaModel
from iptnlp.taxonomy import AREAS, DEFAULT_COURSE_LENGTH, PHASES, phase_of
from iptnlp.themes import decide_themes, off_phase, themes_of

_DEFAULT_FINDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: what to do with a note holding leftover identifiers (``phi_flags``): flag them and tag the note;
#: redact them (each replaced by the placeholder of its kind) and tag; skip the note (status
#: ``skipped``, not tagged); or fail the run, naming the row
ON_PHI = ("flag", "redact", "skip", "fail")
_GUARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class IdentifierFound(InputError):
    """``--on-phi fail`` met a note with leftover identifiers."""


def _phi_guard(model: AreaModel):
    """The identifier guard on the model's spaCy vocab, built once per model (about a second)."""
    guard = _GUARDS.get(model)
    if guard is None:
        from iptnlp.phi import PhiGuard

        guard = _GUARDS[model] = PhiGuard.from_config(nlp=model.preprocessor.nlp)
    return guard


_GC_LOCK = threading.Lock()
_GC_PAUSES = [0, False]   # chunks being tagged in this process; whether the collector was on before


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while a chunk is tagged, back on (if it was) after.

    Tagging allocates many small lists and tuples per token and keeps a chunk's Docs alive until its
    results are built, so the collector kept scanning them: measured here, 13 % of the tagging
    time (3.75 s of a 28 s run of 20,000 notes). Nothing a chunk allocates needs the collector to
    be freed; whatever cyclic garbage there is waits for the next collection after the chunk. Safe
    across threads (a count of chunks in flight: the collector comes back on when the last one
    ends), so threads that tag chunk after chunk without a gap keep it off between them; and across
    ``fork`` (a child starts with no chunk in flight and the collector as it was before the parent's
    chunks)."""
    with _GC_LOCK:
        if _GC_PAUSES[0] == 0:
            _GC_PAUSES[1] = gc.isenabled()
            gc.disable()
        _GC_PAUSES[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0 and _GC_PAUSES[1]:
                gc.enable()


def _collector_after_fork() -> None:
    global _GC_LOCK
    _GC_LOCK = threading.Lock()
    if _GC_PAUSES[0] and _GC_PAUSES[1]:
        gc.enable()
    _GC_PAUSES[:] = [0, False]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_collector_after_fork)


def _clean(exc: BaseException, what: str) -> RuntimeError:
    """An error for a failure that is not the notes' fault, naming the exception's type and where it
    was raised but not its message (which may quote a note); raise it ``from None``."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    err = RuntimeError(f"{what} ({type(exc).__name__}{where}): a fault of iptnlp or of its model, not of the "
                       f"notes; please report it")
    err.__cause__, err.__suppress_context__ = None, True
    return err


class Tagger:
    """Everything one tagging run applies to each chunk: the area model, the theme rules, phases."""

    def __init__(self, model: AreaModel, *, threshold: float | None = None,
                 course_length: int = DEFAULT_COURSE_LENGTH, theme_rules: str | None = None,
                 on_phi: str = "flag"):
        from iptnlp.themes import ThemeFinder, tagging_rules

        if on_phi not in ON_PHI:
            raise ValueError(f"on_phi must be one of {', '.join(ON_PHI)}")
        self.on_phi = on_phi
        self.guard = _phi_guard(model)
        self.model = model
        self.threshold = threshold
        self.course_length = course_length
        finder = _DEFAULT_FINDERS.get(model) if theme_rules is None else None
        if finder is None:
            # one matcher pass finds the themes and the focus statements (configs/focus.yml)
            finder = ThemeFinder(model.preprocessor.nlp, tagging_rules(theme_rules))
            if theme_rules is None:   # built once per model: tag() may be called for every DataFrame
                _DEFAULT_FINDERS[model] = finder
        self.themes = finder

    def tag_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Results for one normalised chunk (see ``iptnlp.io``), same rows in the same order.

        A note that breaks a step of the pipeline (a bug of ours, not of the input) does not stop the
        run: the chunk is tagged again note by note, and that note alone becomes an error row naming
        the exception's type (never its message, which may quote the note). Our own errors (a model
        that cannot be read, leftover identifiers under ``--on-phi fail``) still stop the run, and so
        does a failure of every note of a chunk (then the fault is not in the notes)."""
        with collector_paused():
            try:
                return self._tag_frame(frame)
            except (IptnlpError, MemoryError):
                raise
            except Exception as exc:   # retried below, outside this block: no traceback quotes a note
                failure = exc
            if len(frame) == 0:
                raise _clean(failure, "tagging an empty chunk")
            rows, failed = [], 0
            for r in range(len(frame)):
                one, exc = self._tag_row(frame, r)
                failed += exc is not None
                rows.append(one)
            if failed == len(frame) > 1:
                raise _clean(failure, f"{frame['source'].iat[0]}: rows {frame['row'].iat[0]}-{frame['row'].iat[-1]}: "
                                      f"tagging failed on every note")
            return pd.concat(rows)

    def _tag_row(self, frame: pd.DataFrame, r: int) -> tuple[pd.DataFrame, Exception | None]:
        try:
            return self._tag_frame(frame.iloc[[r]]), None
        except (IptnlpError, MemoryError):
            raise
        except Exception as exc:
            failure = exc
        one = frame.iloc[[r]].copy()
        one["error"] = (f"row {one['row'].iat[0]}: not tagged: iptnlp failed on this note "
                        f"({type(failure).__name__}); please report it with the note_id")
        return self._tag_frame(one), failure

    def _tag_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.drop(columns=["text"]).copy()
        n = len(out)
        ok = out["error"].isna().to_numpy().copy()
        texts = frame.loc[ok, "text"].tolist()
        # leftover identifiers are looked for first, so that redact replaces them before anything
        # else (the spaCy stage, the evidence) sees the note; each note is tokenized once for both
        nlp = self.model.preprocessor.nlp
        tokenized = [nlp.make_doc(t) for t in texts]
        found = self.guard.find_docs(tokenized, texts)
        phi_flags: list = [None] * n
        status = np.where(ok, "ok", "error").astype(object)
        errors = out["error"].astype(object).tolist()
        keep = []
        for k, i in enumerate(np.flatnonzero(ok)):
            phi_flags[i] = _phi.flags(found[k])
            if not found[k]:
                keep.append(k)
            elif self.on_phi == "fail":
                raise IdentifierFound(f"{out['source'].iat[i]}: row {out['row'].iat[i]} (note_id "
                                      f"{out['note_id'].iat[i]}) holds leftover identifiers ({phi_flags[i]}); "
                                      f"de-identify the input, or choose --on-phi flag, redact or skip")
            elif self.on_phi == "skip":
                ok[i] = False
                status[i] = "skipped"
                errors[i] = (f"row {out['row'].iat[i]}: not tagged: leftover identifiers ({phi_flags[i]}) "
                             f"and --on-phi skip")
            else:
                if self.on_phi == "redact":
                    texts[k] = self.guard.redact(texts[k], found[k])
                    if len(texts[k]) > MAX_NOTE_CHARS:   # placeholders can be longer than what they replace
                        ok[i] = False
                        status[i] = "error"
                        errors[i] = (f"row {out['row'].iat[i]}: text is over {MAX_NOTE_CHARS:,} characters "
                                     f"once redacted; split it")
                        continue
                    tokenized[k] = nlp.make_doc(texts[k])
                keep.append(k)
        docs = list(self.model.preprocessor.pipe([tokenized[k] for k in keep])) if keep else []
        proba = self.model.predict_proba_features([self.model.preprocessor.features(d) for d in docs])
        out["status"] = status
        area: list = [None] * n
        confidence = np.full(n, np.nan)
        probs = np.full((n, len(AREAS)), np.nan)
        phase: list = [None] * n
        themes: list = [None] * n
        off: list = [None] * n
        two_areas: list = [None] * n
        evidence: list = [None] * n
        meta = {c: out[c].tolist() if c in out.columns else [None] * n
                for c in ("session", "total_sessions", "phase")}
        decided = self.model.decide(proba, self.threshold) if len(docs) else []
        learned = self.model.has_themes
        # plain Python floats from here on: a numpy scalar per comparison costs more than the comparison
        theme_proba = self.model.predict_themes(docs).tolist() if learned else None
        theme_cfg = self.model.config.model.themes
        rows_ok = np.flatnonzero(ok)
        if len(docs):
            confidence[rows_ok] = proba.max(axis=1)
            probs[rows_ok] = proba
        tops = proba.argmax(axis=1).tolist() if len(docs) else []
        for k, i in enumerate(rows_ok.tolist()):
            doc = docs[k]
            area[i] = decided[k]
            hits = self.themes.hits(doc)
            phase[i] = self.phase_of(meta["session"][i], meta["total_sessions"][i], meta["phase"][i])
            # the learned theme model decides where the model has one; the rules point at the words
            if learned:
                themes[i] = decide_themes(theme_proba[k], {h.label for h in hits}, phase[i], theme_cfg)
            else:
                themes[i] = themes_of(hits)
            off[i] = off_phase(themes[i], phase[i])
            theme_evidence = {}
            for t in themes[i]:
                spans = [h.as_list() for h in hits if h.label == t]
                theme_evidence[t] = spans or [list(e) for e in self.model.theme_evidence(doc, t)]
            evidence[i] = {"area": [list(e) for e in self.model.area_evidence(doc, AREAS[tops[k]])],
                           "themes": theme_evidence}
            stated = _outermost([h.as_list() for h in hits if h.label == "two_area_focus"])
            two_areas[i] = bool(stated)
            if stated:
                evidence[i]["two_area_focus"] = stated
        out["area"] = area
        out["confidence"] = confidence
        for j, col in enumerate(PROBA_COLUMNS):
            out[col] = probs[:, j]
        out["phase"] = phase
        out["themes"] = themes
        out["off_phase_themes"] = off
        out["two_area_focus"] = two_areas
        out["evidence"] = evidence
        out["phi_flags"] = phi_flags
        out["error"] = [None if good else e for good, e in zip(ok, errors)]
        return out

    def phase_of(self, session, total, stated=None) -> str:
        """A stated phase wins; otherwise from the session number and course length."""
        if isinstance(stated, str) and stated.strip().lower() in PHASES:
            return stated.strip().lower()
        session = None if session is None or session is pd.NA or session != session else int(session)
        total = self.course_length if total is None or total is pd.NA or total != total else int(total)
        return phase_of(session, total)


def _outermost(spans: list[list]) -> list[list]:
    """[start, end, words] spans without those inside another (two patterns can match one phrase)."""
    kept: list[list] = []
    for span in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not kept or span[1] > kept[-1][1]:
            kept.append(span)
    return kept


def result_columns(input_columns: Iterable[str]) -> list[str]:
    present = set(input_columns)
    # a stated `phase` is not carried separately: the output `phase` is it when valid
    return list(RESULT_COLUMNS) + [c for c in CARRIED if c in present and c not in RESULT_COLUMNS] \
        + list(TRAILING_COLUMNS)


def tag(df: pd.DataFrame, model: AreaModel | str | None = None, *, text_col: str = "text",
        id_col: str = "note_id", threshold: float | None = None,
        course_length: int = DEFAULT_COURSE_LENGTH, on_phi: str = "flag") -> pd.DataFrame:
    """Tag a DataFrame of notes: one result row per input row, in order.

    Python's cyclic garbage collector is paused for the call (``collector_paused``: the DataFrame is
    one chunk) and restored as it was after it; tag a very large DataFrame in slices.

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
    result = Tagger(model, threshold=threshold, course_length=course_length, on_phi=on_phi).tag_frame(frame)
    result = result[result_columns(df.columns)].drop(columns=["source"])
    result.index = df.index   # rows line up with the caller's DataFrame
    return result


@dataclass
class RunSummary:
    notes: int = 0
    status: Counter = field(default_factory=Counter)
    areas: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    resumed: int = 0          # rows an interrupted run had already written (not counted above)
    phi_notes: int = 0        # notes with leftover identifiers
    phi: Counter = field(default_factory=Counter)   # identifier kind -> count
    _ids: list = field(default_factory=list, repr=False)   # (hashes, sources, rows) per chunk: 16 B a note

    def add(self, result: pd.DataFrame) -> None:
        """Count one result chunk."""
        from pandas.util import hash_array

        self._ids.append((hash_array(result["note_id"].astype(str).to_numpy(dtype=object)),
                          result["source"].to_numpy(dtype=object) if "source" in result else None,
                          result["row"].to_numpy() if "row" in result else None))
        self.notes += len(result)
        self.status.update(result["status"])
        self.areas.update(a for a in result["area"] if isinstance(a, str))
        for flags in result["phi_flags"]:
            if isinstance(flags, str) and flags:
                self.phi_notes += 1
                for item in flags.split(";"):
                    kind, _, count = item.partition(":")
                    self.phi[kind] += int(count or 1)

    def duplicate_ids(self, show: int = 3) -> str | None:
        """A warning naming rows that share a note_id (every row is kept), or None."""
        if not self._ids:
            return None
        hashes = np.concatenate([h for h, _, _ in self._ids])
        values, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        dup = np.flatnonzero(counts[inverse] > 1)
        if not len(dup):
            return None
        sources = np.concatenate([s if s is not None else np.full(len(h), None, dtype=object)
                                  for h, s, _ in self._ids])
        rows = np.concatenate([r if r is not None else np.zeros(len(h), dtype=int) for h, _, r in self._ids])
        groups: dict[int, list] = {}
        for i in dup:   # only the duplicated positions are looked at
            groups.setdefault(int(inverse[i]), []).append((sources[i], rows[i]))
        shown = "; ".join(" and ".join(f"{Path(str(src)).name} row {row}" if src else f"row {row}"
                                       for src, row in rows[:4]) for rows in list(groups.values())[:show])
        more = f" and {len(groups) - show} more" if len(groups) > show else ""
        return (f"{len(groups)} note_id(s) are used by more than one row ({shown}{more}); every row is kept "
                f"and tagged: tell them apart by source and row")

    def line(self) -> str:
        rate = self.notes / self.seconds if self.seconds else 0.0
        areas = ", ".join(f"{a} {self.areas.get(a, 0)}" for a in AREAS + ("uncertain",)
                          if self.areas.get(a))
        resumed = f" after {self.resumed} rows of the interrupted run" if self.resumed else ""
        skipped = f", {self.status['skipped']} skipped" if self.status.get("skipped") else ""
        phi = (f"; leftover identifiers in {self.phi_notes} notes ("
               + ", ".join(f"{k} {v}" for k, v in sorted(self.phi.items())) + ")") if self.phi_notes else ""
        return (f"{self.notes} notes{resumed}: {self.status.get('ok', 0)} ok, {self.status.get('error', 0)} "
                f"error{skipped} ({rate:,.0f} notes/s){'; ' + areas if areas else ''}{phi}")


def default_workers() -> int:
    """The cores this process may use."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not on Linux
        return max(1, os.cpu_count() or 1)


# one Tagger per worker process, made once by the pool's initializer
_WORKER_TAGGER: Tagger | None = None


def _init_worker(model_dir: str, threshold: float | None, course_length: int,
                 theme_rules: str | None, on_phi: str) -> None:
    global _WORKER_TAGGER
    import signal

    from iptnlp.model import load_model

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and stops the pool
    _WORKER_TAGGER = Tagger(load_model(model_dir), threshold=threshold, course_length=course_length,
                            theme_rules=theme_rules, on_phi=on_phi)


def _tag_in_worker(frame: pd.DataFrame) -> pd.DataFrame:
    assert _WORKER_TAGGER is not None, "worker not initialised"
    return _WORKER_TAGGER.tag_frame(frame)


class TagPool:
    """Tags chunks on ``workers`` processes; each loads the model once and returns only result rows.

    ``map`` yields results in input order and keeps at most two chunks per worker in flight, so
    memory stays flat however long the input is. Workers start from a fork server (never a fork of
    this process, whose library threads may hold locks), so start-up costs one model load per worker.
    """

    def __init__(self, model: AreaModel, workers: int, *, threshold: float | None = None,
                 course_length: int = DEFAULT_COURSE_LENGTH, theme_rules: str | None = None,
                 on_phi: str = "flag"):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if model.path is None:
            raise ValueError("a worker pool needs a model saved in a folder (model.path is None)")
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(["iptnlp.tagger", "iptnlp.model", "iptnlp.phi", "spacy", "sklearn",
                                        "pandas"])
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker,
            initargs=(str(model.path), threshold, course_length, theme_rules, on_phi))

    def map(self, frames: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from collections import deque

        pending: deque = deque()
        for frame in frames:
            pending.append(self.executor.submit(_tag_in_worker, frame))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self, *, cancel: bool = False) -> None:
        self.executor.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> TagPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)


def _chunks(inputs: list[str], spec: InputSpec, skip_rows: int = 0) -> Iterator[pd.DataFrame]:
    """Normalised chunks of all inputs in order, without the first ``skip_rows`` rows (a resumed run)."""
    for path in inputs:
        for frame in read_chunks(path, spec):
            if skip_rows >= len(frame):
                skip_rows -= len(frame)
                continue
            if skip_rows:
                frame = frame.iloc[skip_rows:].reset_index(drop=True)
                skip_rows = 0
            yield frame


def tag_chunks(inputs: list[str], model: AreaModel, spec: InputSpec, *, workers: int = 1,
               threshold: float | None = None, course_length: int = DEFAULT_COURSE_LENGTH,
               theme_rules: str | None = None, skip_rows: int = 0,
               on_phi: str = "flag") -> Iterator[pd.DataFrame]:
    """Result chunks for every note of ``inputs``, in input order, on ``workers`` processes.

    A pool only pays when there is more than one chunk to share out: a smaller input is tagged
    here, so that tagging one note stays quick.
    """
    chunks = _chunks(inputs, spec, skip_rows)
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None) if workers > 1 else None
    if second is None or model.path is None:
        tagger = Tagger(model, threshold=threshold, course_length=course_length, theme_rules=theme_rules,
                        on_phi=on_phi)
        yield tagger.tag_frame(first)
        if second is not None:
            yield tagger.tag_frame(second)
        for frame in chunks:
            yield tagger.tag_frame(frame)
        return

    def all_chunks():
        yield first
        yield second
        yield from chunks

    with TagPool(model, workers, threshold=threshold, course_length=course_length,
                 theme_rules=theme_rules, on_phi=on_phi) as pool:
        yield from pool.map(all_chunks())


def run_fingerprint(inputs: list[str], model: AreaModel, spec: InputSpec, *, threshold: float | None,
                    course_length: int, on_phi: str = "flag") -> dict:
    """What a resumed run must share with the interrupted one: inputs (size, time), model, options."""
    import os

    files = []
    for path in inputs:
        if path == "-":   # stdin cannot be checked: tag_files refuses to resume from it
            files.append(["-"])
            continue
        p = Path(path)
        members = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        for f in members:   # a folder: every file in it, so a note edited in place shows
            st = os.stat(f)
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return {"inputs": files, "model_sha256": model.card.get("model_sha256"), "threshold": threshold,
            "course_length": course_length, "text_col": spec.text_col, "id_col": spec.id_col,
            "encoding": spec.encoding, "on_error": spec.on_error, "on_phi": on_phi}


def tag_files(inputs: list[str], output: str | None, model: AreaModel, spec: InputSpec, *,
              force: bool = False, threshold: float | None = None,
              course_length: int = DEFAULT_COURSE_LENGTH, workers: int = 1, resume: bool = False,
              on_phi: str = "flag", progress: Callable[[str], None] | None = None,
              warn: Callable[[str], None] | None = None) -> RunSummary:
    """Tag every note of ``inputs`` into ``output`` (None: JSONL on stdout); return counts.

    With ``resume``, an interrupted run into ``output`` continues after the rows it already wrote.
    """
    if resume and "-" in inputs:
        raise OutputError("--resume cannot check that stdin holds the same notes as before; write them to "
                          "a file and tag that file")
    columns: set[str] = set()
    for path in inputs:   # every file-level problem surfaces before any output is written
        columns.update(probe(path, spec))
    fingerprint = run_fingerprint(inputs, model, spec, threshold=threshold, course_length=course_length,
                                  on_phi=on_phi)
    writer = ResultWriter(output, result_columns(columns), force=force, inputs=inputs, resume=resume,
                          fingerprint=fingerprint)
    summary = RunSummary(resumed=writer.resume_rows)
    if progress and writer.discarded_partial:
        progress(f"discarded the partial output of an earlier interrupted run into {output} "
                 f"(--resume continues such a run instead)")
    if progress and resume:
        progress(f"resuming after the {writer.resume_rows:,} rows already written")
    return write_results(tag_chunks(inputs, model, spec, workers=workers, threshold=threshold,
                                    course_length=course_length, skip_rows=writer.resume_rows, on_phi=on_phi),
                         writer, summary, progress=progress, warn=warn)


def write_results(results: Iterable[pd.DataFrame], writer: ResultWriter, summary: RunSummary, *,
                  progress: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] | None = None) -> RunSummary:
    """Write result chunks as they come (any engine), counting them; the output is moved into place
    only when all are written, and left out (parts kept for --resume) when anything fails."""
    start = time.perf_counter()
    try:
        for result in results:
            writer.write(result)
            summary.add(result)
            summary.seconds = time.perf_counter() - start
            if progress:
                progress(f"{summary.resumed + summary.notes:,} notes tagged "
                         f"({summary.notes / summary.seconds:,.0f}/s)")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - start
    duplicates = summary.duplicate_ids()
    if duplicates and warn:
        warn(duplicates)
    return summary


def stderr_warning(message: str) -> None:
    print(f"iptnlp: warning: {message}", file=sys.stderr, flush=True)


def stderr_progress(message: str) -> None:
    print(f"iptnlp: {message}", file=sys.stderr, flush=True)

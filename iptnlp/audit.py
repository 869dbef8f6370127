"""The supervisor's focus-adherence audit: tagged notes grouped by case -> a case table and a session table.

Everything here but :func:`tag_inputs` is a pure function over a tagged sessions DataFrame (the
columns ``Tagger.tag_frame`` returns, plus ``case_id``, ``session``, ``total_sessions`` and a given
focus when the input has them), so the rules can be tested, and evaluated on out-of-fold predictions,
without a model. Rules and thresholds are data: ``configs/audit.yml``.

No note text is read or written here: the tagged frame carries none, and evidence words (which are
note text) are left out of both tables; notes are named by ``note_id``, ``source`` and ``row``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iptnlp.config import CONFIG_DIR, _read_yaml, from_dict
from iptnlp.errors import ConfigError, OutputError
from iptnlp.io import fsync_file
from iptnlp.taxonomy import AREAS, DEFAULT_COURSE_LENGTH, PHASES, THEMES, phase_of
from iptnlp.themes import off_phase

DEFAULT_AUDIT_CONFIG = CONFIG_DIR / "audit.yml"
PROBA_COLUMNS = tuple(f"p_{a}" for a in AREAS)
OUTPUT_FILES = ("cases.csv", "sessions.csv", "report.html")

CASE_COLUMNS = ("case_id", "focus", "focus_source", "sessions_present", "missing_sessions", "incomplete",
                "adherence", "drift_sessions", "off_phase", "missing_expected",
                "total_sessions", "notes", "middle_sessions", "error_notes", "unplaced_notes", "problems")
SESSION_COLUMNS = ("case_id", "session", "total_sessions", "note_id", "status", "error", "area",
                   "confidence") + PROBA_COLUMNS + (
                   "phase", "focus", "focus_source", "course_area", "course_confidence", "p_focus",
                   "on_focus", "drift", "themes",
                   "off_phase_themes", "two_area_focus", "placed", "remark", "source", "row")


# --- rules as data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftRule:
    max_focus_probability: float = 0.02   # a middle session under this p(focus) drifts


@dataclass(frozen=True)
class TwoAreaRule:
    min_second_score: float = 0.40
    min_notes: int = 6
    stated_min_second_score: float = 0.05   # when an initial-phase note states a two-area focus


@dataclass(frozen=True)
class FocusInference:
    initial_weight: float = 1.0
    course_weight: float = 1.0
    two_areas: TwoAreaRule = TwoAreaRule()


@dataclass(frozen=True)
class CourseContext:
    weight: float = 1.0           # how much the course's other sessions weigh in a session's course_area
    keep_own_above: float = 0.8   # a note at least this sure of its own area keeps it


@dataclass(frozen=True)
class AuditConfig:
    drift: DriftRule = DriftRule()
    focus_inference: FocusInference = FocusInference()
    course_context: CourseContext = CourseContext()


def load_audit_config(path: str | Path | None = None) -> AuditConfig:
    """``configs/audit.yml`` (or ``path``) as an AuditConfig; unknown keys and bad values are errors."""
    path = Path(path) if path else DEFAULT_AUDIT_CONFIG
    cfg = from_dict(AuditConfig, _read_yaml(path), str(path))
    problems = []
    if not 0.0 < cfg.drift.max_focus_probability <= 1.0:
        problems.append("drift.max_focus_probability must be in (0, 1]")
    fi = cfg.focus_inference
    if fi.initial_weight < 0 or fi.course_weight < 0 or fi.initial_weight + fi.course_weight == 0:
        problems.append("focus_inference: weights must be >= 0 and not both 0")
    if not 0.0 < fi.two_areas.min_second_score <= 0.5:
        problems.append("focus_inference.two_areas.min_second_score must be in (0, 0.5] "
                        "(the second of two scores summing to 1 is at most 0.5)")
    if not 0.0 <= cfg.course_context.weight <= 4.0:
        problems.append("course_context.weight must be in [0, 4]")
    if not 0.0 < cfg.course_context.keep_own_above <= 1.0:
        problems.append("course_context.keep_own_above must be in (0, 1]")
    if not 0.0 < fi.two_areas.stated_min_second_score <= 0.5:
        problems.append("focus_inference.two_areas.stated_min_second_score must be in (0, 0.5]")
    if fi.two_areas.min_notes < 1:
        problems.append("focus_inference.two_areas.min_notes must be at least 1")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return cfg


# --- focus ---------------------------------------------------------------------------------------

def parse_focus(value) -> tuple[tuple[str, ...] | None, str | None]:
    """A given focus (``grief`` or ``role_dispute+role_transition``) -> (areas, None) or (None, problem)."""
    text = str(value).strip()
    parts = [p.strip().lower() for p in text.split("+")]
    bad = [p for p in parts if p not in AREAS]
    if bad or not parts:
        return None, (f"given focus {text!r} is not an area or two areas joined by '+' "
                      f"(areas: {', '.join(AREAS)}); fix the focus column")
    if len(set(parts)) != len(parts) or len(parts) > 2:
        return None, f"given focus {text!r} must name one area or two different areas joined by '+'"
    return tuple(parts), None


def focus_scores(proba: np.ndarray, phases: list, config: AuditConfig) -> np.ndarray:
    """Each area's score (summing to 1) from the case's notes' probabilities and phases."""
    fi = config.focus_inference
    course = proba.mean(axis=0)
    initial = [i for i, p in enumerate(phases) if p == "initial"]
    scores = fi.course_weight * course
    scores = scores + fi.initial_weight * (proba[initial].mean(axis=0) if initial else course)
    return scores / scores.sum()


def infer_focus(proba: np.ndarray, phases: list, config: AuditConfig, *,
                two_stated: bool = False) -> tuple[str, ...]:
    """The focus a case's notes point at: the top area, with a second one under the two-area rule.

    ``two_stated``: an initial-phase note states a focus of two areas (``two_area_focus``); then the
    second area needs only ``stated_min_second_score``, and no minimum number of notes."""
    scores = focus_scores(proba, phases, config)
    order = np.argsort(-scores, kind="stable")
    rule = config.focus_inference.two_areas
    second = scores[order[1]]
    if (second >= rule.min_second_score and len(proba) >= rule.min_notes) or (
            two_stated and second >= rule.stated_min_second_score):
        return tuple(AREAS[k] for k in sorted(order[:2]))
    return (AREAS[order[0]],)


def course_area_proba(proba: np.ndarray, weight: float, *, keep_own_above: float = 1.0,
                      basis: np.ndarray | None = None) -> np.ndarray:
    """Each session's area probabilities read with its course: its own probabilities times the
    geometric mean of the course's OTHER sessions' probabilities (normalised) raised to ``weight``,
    normalised again.

    A note that says little about the area (an ending session, a short progress line) takes the area
    of the course around it. Rows are kept as they are where the note is at least ``keep_own_above``
    sure of its own area, where ``basis`` is False (drift sessions: they neither take the course's
    area nor lend theirs), where no other basis row exists, and with weight 0. Rows with a
    non-finite probability come back as NaN and lend nothing."""
    proba = np.asarray(proba, dtype=float)
    out = proba.copy()
    finite = np.isfinite(proba).all(axis=1)
    out[~finite] = np.nan
    basis = finite if basis is None else (np.asarray(basis, dtype=bool) & finite)
    count = int(basis.sum())
    if weight == 0 or count < 2:
        return out
    logp = np.log(np.clip(np.where(basis[:, None], proba, 1.0), 1e-9, 1.0))
    total = logp.sum(axis=0)
    for j in np.flatnonzero(basis):
        if proba[j].max() >= keep_own_above:
            continue
        others = (total - logp[j]) / (count - 1)    # leave-one-out mean of the log probabilities
        prior = np.exp(others - others.max())
        q = proba[j] * (prior / prior.sum()) ** weight
        out[j] = q / q.sum()
    return out


def focus_label(areas: tuple[str, ...] | None) -> str:
    return "+".join(areas) if areas else ""


# --- the audit -------------------------------------------------------------------------------------

@dataclass
class AuditResult:
    cases: pd.DataFrame
    sessions: pd.DataFrame
    drift_threshold: float
    counts: dict = field(default_factory=dict)


def _blank(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value) or \
        (isinstance(value, str) and not value.strip())


def _int_or_none(value) -> int | None:
    return None if _blank(value) else int(value)


def _as_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return [str(v) for v in value.tolist()]
    if _blank(value):
        return []
    return [t.strip() for t in str(value).split(";") if t.strip()]


def _truthy(value) -> bool:
    """A ``two_area_focus`` cell (bool, or text read back from a CSV) as a bool; blank is False."""
    if _blank(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _join(items) -> str:
    return ";".join(str(i) for i in items)


def audit(tagged: pd.DataFrame, config: AuditConfig | None = None, *, focus_col: str | None = "focus",
          course_length: int = DEFAULT_COURSE_LENGTH) -> AuditResult:
    """Audit every case of a tagged sessions frame; notes without a case_id get a session row only."""
    config = config or AuditConfig()
    frame = tagged.reset_index(drop=True)
    n = len(frame)

    def col(name, default=None):
        return frame[name].tolist() if name in frame else [default] * n

    given = col(focus_col) if focus_col else [None] * n
    sessions = pd.DataFrame({
        "case_id": pd.Series([None if _blank(c) else str(c) for c in col("case_id")], dtype=object),
        "session": pd.Series([_int_or_none(s) for s in col("session")], dtype=object),
        "total_sessions": pd.Series([_int_or_none(t) for t in col("total_sessions")], dtype=object),
        "note_id": col("note_id"),
        "status": col("status", "ok"),
        "error": [None if _blank(e) else str(e) for e in col("error")],
        "area": col("area"),
        "confidence": col("confidence", np.nan),
        **{c: col(c, np.nan) for c in PROBA_COLUMNS},
        "phase": col("phase"),
        "themes": [_as_list(t) for t in col("themes")],
        "two_area_focus": [_truthy(v) if s == "ok" else None
                           for v, s in zip(col("two_area_focus"), col("status", "ok"))],
        "source": col("source"),
        "row": col("row"),
    })
    for i in range(n):   # a row that could not be tagged still has a place in its course
        if _blank(sessions.at[i, "phase"]):
            total = sessions.at[i, "total_sessions"] or course_length
            sessions.at[i, "phase"] = phase_of(sessions.at[i, "session"], total)
    if "off_phase_themes" in frame:
        sessions["off_phase_themes"] = [_as_list(t) for t in frame["off_phase_themes"]]
    else:
        sessions["off_phase_themes"] = [off_phase(t, p) for t, p in zip(sessions["themes"], sessions["phase"])]
    ok = sessions["status"].eq("ok")
    sessions["placed"] = sessions["session"].notna()
    for name in ("focus", "focus_source", "course_area", "course_confidence", "p_focus", "on_focus", "drift",
                 "remark"):
        sessions[name] = pd.Series([None] * n, dtype=object)

    cases = []
    threshold = config.drift.max_focus_probability
    case_order = list(dict.fromkeys(c for c in sessions["case_id"] if c is not None))
    for case_id in case_order:
        idx = sessions.index[sessions["case_id"] == case_id].tolist()
        record, updates = _audit_case(case_id, sessions.loc[idx], [given[i] for i in idx], config,
                                      course_length)
        cases.append(record)
        for i, values in updates.items():
            for k, v in values.items():
                sessions.at[i, k] = v
    for i in range(n):
        remarks = []
        if sessions.at[i, "case_id"] is None:
            remarks.append("no case_id: not part of any case")
        elif not sessions.at[i, "placed"]:
            remarks.append("no session number: listed, but not placed in the timeline")
        if not ok[i]:
            remarks.append("could not be tagged (see error)")
        if sessions.at[i, "remark"]:
            remarks.insert(0, sessions.at[i, "remark"])
        sessions.at[i, "remark"] = "; ".join(remarks) or None

    # one case's notes together, in session order; notes without a number last; no-case notes at the end
    order_key = pd.DataFrame({
        "case": [case_order.index(c) if c is not None else len(case_order) for c in sessions["case_id"]],
        "unplaced": ~sessions["placed"],
        "session": sessions["session"].fillna(0).astype(int),
        "input": range(n)})
    sessions = sessions.loc[order_key.sort_values(["case", "unplaced", "session", "input"]).index]
    sessions = sessions[list(SESSION_COLUMNS)].reset_index(drop=True)
    cases_df = pd.DataFrame(cases, columns=list(CASE_COLUMNS))
    counts = {"notes": n, "ok": int(ok.sum()), "error": int((~ok).sum()),
              "without_case": int(sessions["case_id"].isna().sum()), "cases": len(cases_df),
              "unplaced_in_cases": int((sessions["case_id"].notna() & ~sessions["placed"]).sum())}
    return AuditResult(cases_df, sessions, threshold, counts)


def _audit_case(case_id: str, notes: pd.DataFrame, given: list, config: AuditConfig,
                course_length: int) -> tuple[dict, dict[int, dict]]:
    problems: list[str] = []
    ok = notes[notes["status"].eq("ok")]
    totals = Counter(t for t in notes["total_sessions"] if t is not None)
    total = totals.most_common(1)[0][0] if totals else course_length   # as the phases were computed
    if len(totals) > 1:
        problems.append(f"notes disagree on total_sessions ({', '.join(str(t) for t in sorted(totals))}); "
                        f"{total} used")
    numbers = [int(s) for s in notes["session"] if s is not None]
    present = sorted(set(numbers))
    repeated = sorted(s for s, k in Counter(numbers).items() if k > 1)
    if repeated:
        problems.append(f"more than one note for session {', '.join(map(str, repeated))}")
    missing = [s for s in range(1, present[-1] + 1) if s not in set(present)] if present else []
    known_phases = [p for p in notes["phase"] if p in PHASES]
    incomplete = None if not known_phases else "termination" not in known_phases
    errors = int((~notes["status"].eq("ok")).sum())
    if errors:
        problems.append(f"{errors} note(s) could not be tagged and are not judged")
    unplaced = int((~notes["placed"]).sum())
    if unplaced:
        problems.append(f"{unplaced} note(s) have no session number and are not placed in the timeline")

    proba = ok[list(PROBA_COLUMNS)].to_numpy(dtype=float)
    finite = np.isfinite(proba).all(axis=1)   # rows from the tagger always are; an API caller's may not be
    two_stated = any(bool(t) and p == "initial" for t, p in zip(ok["two_area_focus"], ok["phase"]))
    inferred = infer_focus(proba[finite], [p for p, f in zip(ok["phase"], finite) if f], config,
                           two_stated=two_stated) if finite.any() else None
    values = Counter(str(v).strip() for v in given if not _blank(v))
    focus: tuple[str, ...] | None
    if values:
        raw = values.most_common(1)[0][0]
        if len(values) > 1:
            problems.append(f"notes disagree on the given focus ({', '.join(sorted(values))}); "
                            f"{raw!r} used")
        focus, problem = parse_focus(raw)
        source = "given"
        if problem:
            problems.append(problem + (f"; the notes point at {focus_label(inferred)}" if inferred else "")
                            + "; drift and adherence not judged")
        shown = focus_label(focus) if focus else raw
    else:
        focus, source, shown = inferred, "inferred", focus_label(inferred)
        if inferred is None:
            problems.append("no note of the case could be tagged, so no focus could be inferred")

    updates: dict[int, dict] = {i: {"focus": shown or None, "focus_source": source} for i in notes.index}
    drift_marks, on_focus_count, middle = [], 0, 0
    off_marks: list[str] = []
    for i, row in ok.iterrows():
        where = str(row["session"]) if row["session"] is not None else str(row["note_id"])
        off_marks += [f"{where}:{t}" for t in row["off_phase_themes"]]
        if focus is None:
            continue
        p_focus = float(sum(row[f"p_{a}"] for a in focus))
        updates[i]["p_focus"] = round(p_focus, 4)
        if row["phase"] == "middle":
            middle += 1
            drifts = p_focus < config.drift.max_focus_probability
            updates[i]["drift"] = drifts
            updates[i]["on_focus"] = not drifts
            on_focus_count += not drifts
            if drifts:
                drift_marks.append(where)
    if len(ok):
        cc = config.course_context
        not_drift = np.array([updates[i].get("drift") is not True for i in ok.index])
        for i, q in zip(ok.index, course_area_proba(proba, cc.weight, keep_own_above=cc.keep_own_above,
                                                    basis=not_drift)):
            if np.isfinite(q).all():
                k = int(q.argmax())
                updates[i].update(course_area=AREAS[k], course_confidence=round(float(q[k]), 4))
    missing_expected = []
    for phase in PHASES:
        in_phase = ok[ok["phase"] == phase]
        if in_phase.empty:   # a phase the case did not reach (or whose notes could not be read)
            continue
        shown_themes = {t for ts in in_phase["themes"] for t in ts}
        missing_expected += [f"{phase}:{t}" for t, (_, expected) in THEMES.items()
                             if expected == phase and t not in shown_themes]
    record = {
        "case_id": case_id, "focus": shown, "focus_source": source,
        "sessions_present": _join(present), "missing_sessions": _join(missing),
        "incomplete": incomplete,
        "adherence": round(on_focus_count / middle, 3) if middle and focus else None,
        "drift_sessions": _join(drift_marks) if focus else "",
        "off_phase": _join(off_marks), "missing_expected": _join(missing_expected),
        "total_sessions": total, "notes": len(notes), "middle_sessions": middle,
        "error_notes": errors, "unplaced_notes": unplaced, "problems": "; ".join(problems),
    }
    return record, updates


# --- tagging and writing ---------------------------------------------------------------------------

def tag_inputs(inputs: list[str], model, spec, *, course_length: int = DEFAULT_COURSE_LENGTH,
               focus_col: str | None = None, workers: int = 1,
               progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Tag every note of ``inputs`` into one DataFrame (the tagging step of the audit, in one place).

    A ``focus_col`` other than ``focus`` is kept from the input and returned as ``focus``.
    """
    from dataclasses import replace

    from iptnlp.errors import InputError
    from iptnlp.io import probe
    from iptnlp.tagger import tag_chunks

    columns: set[str] = set()
    for path in inputs:   # every file-level problem surfaces before any tagging
        columns.update(probe(path, spec))
    if focus_col and focus_col not in columns:
        raise InputError(f"no {focus_col!r} column in the input; name the focus column with --focus-col, "
                         f"or leave it out to infer each case's focus")
    if focus_col and focus_col != "focus":
        spec = replace(spec, keep=tuple(spec.keep) + (focus_col,))
    frames = []
    done = 0
    for chunk in tag_chunks(inputs, model, spec, workers=workers, course_length=course_length):
        frames.append(chunk)
        done += len(chunk)
        if progress:
            progress(f"{done:,} notes tagged")
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if focus_col and focus_col != "focus":
        result["focus"] = result.pop(f"_keep_{focus_col}")
    return result


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    # built cell by cell: Series.map would turn a column of whole numbers with gaps into floats
    return pd.DataFrame({name: pd.Series([_join(v) if isinstance(v, (list, tuple)) else v for v in c],
                                         index=c.index, dtype=object) for name, c in df.items()})


def write_audit(result: AuditResult, out_dir: str | Path, html: str, *, force: bool = False) -> list[Path]:
    """cases.csv, sessions.csv and report.html into ``out_dir``, each written whole then renamed."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; -o needs a folder")
    targets = [out / name for name in OUTPUT_FILES]
    existing = [p.name for p in targets if p.exists()]
    if existing and not force:
        raise OutputError(f"{out} already holds {', '.join(existing)}; pass --force to overwrite or "
                          f"choose another -o folder")
    out.mkdir(parents=True, exist_ok=True)
    contents = {
        "cases.csv": _csv_frame(result.cases).to_csv(index=False, lineterminator="\n"),
        "sessions.csv": _csv_frame(result.sessions).to_csv(index=False, lineterminator="\n"),
        "report.html": html,
    }
    for path in targets:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(contents[path.name], encoding="utf-8")
            fsync_file(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return targets

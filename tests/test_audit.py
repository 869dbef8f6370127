"""The focus-adherence audit: rules on hand-made tagged frames, the HTML report, the CLI end to end."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from iptnlp.audit import (
    CASE_COLUMNS,
    SESSION_COLUMNS,
    AuditConfig,
    CourseContext,
    DriftRule,
    audit,
    course_area_proba,
    load_audit_config,
    parse_focus,
)
from iptnlp.errors import ConfigError
from iptnlp.report import render_report
from iptnlp.taxonomy import AREAS, phase_of

CANARY = "ZQXCANARYWORD"


def probs(**p):
    """A probability row: the named areas get their values, the rest share what is left."""
    rest = [a for a in AREAS if a not in p]
    left = (1.0 - sum(p.values())) / len(rest) if rest else 0.0
    return {f"p_{a}": p.get(a, left) for a in AREAS}


def note(case, session, total=12, themes=(), status="ok", focus=None, note_id=None, **p):
    p = p or {"grief": 0.97}
    row = {"note_id": note_id or f"{case}-{session}", "case_id": case, "session": session,
           "total_sessions": total, "status": status, "error": None if status == "ok" else "row 9: text is empty",
           **probs(**p), "phase": phase_of(session, total) if status == "ok" else None,
           "themes": list(themes) if status == "ok" else None, "focus": focus}
    if status != "ok":
        row.update({f"p_{a}": float("nan") for a in AREAS})
    row["area"] = max(AREAS, key=lambda a: row[f"p_{a}"]) if status == "ok" else None
    return row


def frame(rows):
    return pd.DataFrame(rows)


def case_of(result, case_id):
    return result.cases.set_index("case_id").loc[case_id]


FULL_INITIAL = ("symptom_review", "sick_role", "interpersonal_inventory", "formulation", "treatment_contract")


# --- focus ------------------------------------------------------------------------------------------

def test_focus_inferred_from_initial_sessions_and_course():
    # the initial sessions are about grief; two of four middle sessions look like a dispute
    rows = [note("k", s, grief=0.9) for s in (1, 2, 3)] + \
           [note("k", s, grief=0.9) for s in (4, 5)] + [note("k", s, role_dispute=0.8) for s in (6, 7)]
    c = case_of(audit(frame(rows)), "k")
    assert (c["focus"], c["focus_source"]) == ("grief", "inferred")


def test_initial_sessions_weigh_as_the_config_says():
    from iptnlp.audit import FocusInference

    rows = [note("k", 1, grief=0.9)] + [note("k", s, role_dispute=0.9) for s in (4, 5)]
    assert case_of(audit(frame(rows)), "k")["focus"] == "grief"
    course_only = AuditConfig(focus_inference=FocusInference(initial_weight=0.0))
    assert case_of(audit(frame(rows), course_only), "k")["focus"] == "role_dispute"


def test_two_area_focus_needs_a_strong_second_area_and_enough_notes():
    rows = [note("k", s, grief=0.9) if s % 2 else note("k", s, role_dispute=0.9) for s in (1, 2, 4, 5, 6, 7)]
    rows += [note("k", s, grief=0.48, role_dispute=0.48) for s in (3, 8)]
    assert case_of(audit(frame(rows)), "k")["focus"] == "grief+role_dispute"
    short = [r for r in rows if r["session"] <= 4]
    assert case_of(audit(frame(short)), "k")["focus"] in ("grief", "role_dispute")


def test_a_stated_two_area_focus_needs_only_a_trace_of_the_second_area():
    # the probabilities alone point at grief; an initial note says both areas were agreed
    rows = [note("k", s, grief=0.9) for s in (1, 2, 3, 5, 6, 7, 8)] + [note("k", 4, role_transition=0.9)]
    assert case_of(audit(frame(rows)), "k")["focus"] == "grief"
    stated = [dict(r, two_area_focus=r["session"] == 3) for r in rows]
    c = case_of(audit(frame(stated)), "k")
    assert (c["focus"], c["focus_source"]) == ("grief+role_transition", "inferred")
    # read back from a CSV the flag is text; a statement outside the initial phase does not count
    as_text = [dict(r, two_area_focus="True" if r["session"] == 3 else "False") for r in rows]
    assert case_of(audit(frame(as_text)), "k")["focus"] == "grief+role_transition"
    late = [dict(r, two_area_focus=r["session"] == 6) for r in rows]
    assert case_of(audit(frame(late)), "k")["focus"] == "grief"
    # a statement in a course that never touches a second area does not make one up
    flat = [dict(note("k", s, grief=0.995), two_area_focus=s == 2) for s in range(1, 9)]
    assert case_of(audit(frame(flat)), "k")["focus"] == "grief"


def test_given_focus_wins_over_the_notes():
    rows = [note("k", s, grief=0.9, focus="role_transition") for s in (1, 2, 3, 4)]
    c = case_of(audit(frame(rows)), "k")
    assert (c["focus"], c["focus_source"]) == ("role_transition", "given")
    assert case_of(audit(frame(rows), focus_col=None), "k")["focus"] == "grief"


def test_given_focus_of_two_areas_and_blank_cells():
    rows = [note("k", 1, focus="role_dispute + grief"), note("k", 2, focus=None),
            note("k", 5, role_dispute=0.9, focus=None)]
    c = case_of(audit(frame(rows)), "k")
    assert c["focus"] == "role_dispute+grief" and c["focus_source"] == "given"
    assert c["drift_sessions"] == ""   # a dispute session is on a dispute+grief focus


@pytest.mark.parametrize("value", ["grif", "grief+grief", "grief+role_dispute+role_transition", "+"])
def test_bad_focus_is_a_case_problem_not_a_crash(value):
    rows = [note("bad", s, focus=value) for s in (1, 4, 5)] + [note("good", s, focus="grief") for s in (1, 4)]
    result = audit(frame(rows))
    bad = case_of(result, "bad")
    assert bad["focus_source"] == "given"
    assert repr(value) in bad["problems"] and "drift and adherence not judged" in bad["problems"]
    assert "the notes point at grief" in bad["problems"]
    assert pd.isna(bad["adherence"]) and bad["drift_sessions"] == ""
    assert case_of(result, "good")["adherence"] == 1.0


def test_parse_focus():
    assert parse_focus(" Grief ") == (("grief",), None)
    assert parse_focus("grief+role_dispute")[0] == ("grief", "role_dispute")
    assert parse_focus("loss")[0] is None and "not an area" in parse_focus("loss")[1]


def test_notes_disagreeing_on_focus_are_reported():
    rows = [note("k", 1, focus="grief"), note("k", 2, focus="grief"), note("k", 4, focus="role_dispute")]
    c = case_of(audit(frame(rows)), "k")
    assert c["focus"] == "grief" and "notes disagree on the given focus" in c["problems"]


# --- drift and adherence ------------------------------------------------------------------------

def test_drift_rule_uses_the_configured_threshold_on_middle_sessions_only():
    rows = [note("k", 1, focus="grief", role_dispute=0.99),              # initial: never drift
            note("k", 5, focus="grief", grief=0.01, role_dispute=0.98),   # p(focus) 0.01
            note("k", 6, focus="grief", grief=0.03, role_dispute=0.96),   # p(focus) 0.03
            note("k", 7, focus="grief", grief=0.9)]
    c = case_of(audit(frame(rows), AuditConfig(drift=DriftRule(0.02))), "k")
    assert c["drift_sessions"] == "5" and c["adherence"] == round(2 / 3, 3)
    c = case_of(audit(frame(rows), AuditConfig(drift=DriftRule(0.05))), "k")
    assert c["drift_sessions"] == "5;6" and c["adherence"] == round(1 / 3, 3)
    s = audit(frame(rows)).sessions.set_index("session")
    assert s.loc[5, "drift"] is True and s.loc[5, "on_focus"] is False
    assert s.loc[7, "drift"] is False and s.loc[7, "on_focus"] is True
    assert s.loc[1, "drift"] is None and s.loc[5, "p_focus"] == pytest.approx(0.01)


def test_adherence_counts_middle_sessions_present():
    rows = [note("k", s, focus="grief") for s in (1, 2, 3, 4, 5, 7, 10, 11, 12)]
    rows.append(note("k", 8, focus="grief", grief=0.001, role_transition=0.99))
    c = case_of(audit(frame(rows)), "k")
    assert c["middle_sessions"] == 4 and c["adherence"] == 0.75 and c["drift_sessions"] == "8"


def test_two_area_focus_sums_both_areas():
    rows = [note("k", 5, focus="grief+role_dispute", grief=0.015, role_dispute=0.015, role_transition=0.97)]
    assert case_of(audit(frame(rows)), "k")["drift_sessions"] == ""   # p(focus) 0.03


def test_course_area_reads_a_vague_note_with_its_course_and_keeps_a_clear_one():
    rows = [note("k", s, focus="grief", grief=0.9) for s in (1, 2, 3, 4, 6)]
    rows.append(note("k", 14, focus="grief", grief=0.3, interpersonal_deficits=0.4))   # an ending note, vague
    rows.append(note("k", 7, focus="grief", grief=0.1, role_dispute=0.85))             # clear, not a drift at 0.02
    rows.append(note("k", 5, focus="grief", grief=0.001, role_dispute=0.99))           # a drift session
    s = audit(frame(rows)).sessions.set_index("session")
    assert s.loc[14, "area"] == "interpersonal_deficits" and s.loc[14, "course_area"] == "grief"
    assert s.loc[7, "course_area"] == "role_dispute"
    assert s.loc[5, "drift"] is True and s.loc[5, "course_area"] == "role_dispute"
    assert s.loc[5, "course_confidence"] == pytest.approx(0.99)
    assert s.loc[1, "course_area"] == "grief" and s.loc[1, "course_confidence"] == pytest.approx(0.9)  # sure: kept
    off = audit(frame(rows), AuditConfig(course_context=CourseContext(0.0))).sessions
    assert list(off["course_area"]) == list(off["area"])


def test_course_area_leaves_out_drift_sessions_and_unreadable_probabilities():
    # a grief course whose notes mostly read as disputes: the drift sessions must not pull the others
    rows = [note("k", s, 16, focus="grief", grief=0.001, role_dispute=0.99) for s in (5, 6, 7, 8)]
    rows.append(note("k", 9, 16, focus="grief", grief=0.6, role_dispute=0.3))
    rows.append(note("k", 1, 16, focus="grief", grief=0.7))
    bad = note("k", 10, 16, focus="grief")
    bad["p_grief"] = float("nan")
    rows.append(bad)
    s = audit(frame(rows)).sessions.set_index("session")
    assert s.loc[[5, 6, 7, 8], "drift"].tolist() == [True] * 4
    assert s.loc[9, "course_area"] == "grief" and s.loc[1, "course_area"] == "grief"
    assert s.loc[10, "course_area"] is None and s.loc[10, "course_confidence"] is None
    # with the drift sessions as evidence, session 9 would have been read as a dispute
    q = course_area_proba(np.array([[0.001, 0.99, 0.0045, 0.0045]] * 4 + [[0.6, 0.3, 0.05, 0.05]]), 1.0)
    assert AREAS[int(q[4].argmax())] == "role_dispute"


def test_focus_is_inferred_from_the_readable_probabilities_only():
    rows = [note("k", 1, role_transition=0.9), note("k", 2, role_transition=0.9)]
    rows[1]["p_grief"] = float("nan")   # one NaN used to make every area's score NaN (and grief won)
    c = case_of(audit(frame(rows)), "k")
    assert c["focus"] == "role_transition" and c["focus_source"] == "inferred"


def test_shipped_course_context_is_the_documented_default():
    assert load_audit_config().course_context == CourseContext()


def test_course_area_does_not_overrule_a_note_the_model_is_sure_of():
    # a sure course around a sure note of another area that just misses the drift threshold
    rows = [note("k", s, 16, focus="grief", grief=0.99) for s in (1, 2, 3, 5, 6, 7, 9, 12, 14, 15, 16)]
    rows.append(note("k", 10, 16, focus="grief", grief=0.0235, role_dispute=0.96))
    s = audit(frame(rows), AuditConfig(drift=DriftRule(0.02))).sessions.set_index("session")
    assert s.loc[10, "drift"] is False and s.loc[10, "course_area"] == "role_dispute"


def test_course_area_proba_is_the_leave_one_out_product():
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    q = course_area_proba(p, 1.0)
    others = np.exp(np.log(p[[0, 1]]).mean(axis=0))
    expected = p[2] * others / others.sum()
    assert q[2] == pytest.approx(expected / expected.sum())
    assert np.allclose(q.sum(axis=1), 1.0)
    assert np.array_equal(course_area_proba(p[:1], 1.0), p[:1])          # one note: nothing to read it with
    assert np.array_equal(course_area_proba(p, 0.0), p)


# --- sessions, phases, themes ---------------------------------------------------------------------

def test_missing_sessions_and_incomplete_course():
    rows = [note("drop", s) for s in (1, 2, 3, 5, 7)] + [note("full", s) for s in (1, 2, 4, 10, 12)]
    result = audit(frame(rows))
    drop, full = case_of(result, "drop"), case_of(result, "full")
    assert drop["sessions_present"] == "1;2;3;5;7" and drop["missing_sessions"] == "4;6"
    assert bool(drop["incomplete"]) is True
    assert full["missing_sessions"] == "3;5;6;7;8;9;11" and bool(full["incomplete"]) is False


def test_off_phase_items_name_session_and_theme():
    rows = [note("k", 2, themes=["termination_discussion"]), note("k", 8, themes=["interpersonal_inventory",
                                                                                  "role_play"])]
    result = audit(frame(rows))
    assert case_of(result, "k")["off_phase"] == "2:termination_discussion;8:interpersonal_inventory"


def test_missing_expected_only_for_phases_reached():
    rows = [note("k", 1, themes=["symptom_review", "sick_role"]), note("k", 2, themes=["formulation"]),
            note("k", 5, themes=["role_play"]), note("k", 6, themes=["progress_review"])]
    c = case_of(audit(frame(rows)), "k")
    assert c["missing_expected"] == ("initial:interpersonal_inventory;initial:treatment_contract;"
                                     "middle:communication_analysis")
    assert "termination:" not in c["missing_expected"]
    ended = rows + [note("k", 11, themes=["termination_discussion", "relapse_prevention"])]
    c = case_of(audit(frame(ended)), "k")
    assert c["missing_expected"].endswith("termination:progress_review;termination:future_planning")


def test_theme_seen_in_another_phase_does_not_count_for_the_expected_one():
    rows = [note("k", 1, themes=FULL_INITIAL), note("k", 5, themes=["communication_analysis", "role_play"]),
            note("k", 12, themes=["termination_discussion", "progress_review", "relapse_prevention"]),
            note("k", 6, themes=["future_planning"])]
    assert case_of(audit(frame(rows)), "k")["missing_expected"] == "termination:future_planning"


def test_error_rows_stay_in_sessions_with_their_error_and_are_not_judged():
    rows = [note("k", 1, focus="grief", themes=FULL_INITIAL), note("k", 5, status="error", focus="grief"),
            note("k", 6, focus="grief")]
    result = audit(frame(rows))
    s = result.sessions.set_index("session")
    assert s.loc[5, "status"] == "error" and s.loc[5, "error"] == "row 9: text is empty"
    assert s.loc[5, "phase"] == "middle" and s.loc[5, "drift"] is None
    assert "could not be tagged" in s.loc[5, "remark"]
    c = case_of(result, "k")
    assert c["middle_sessions"] == 1 and c["error_notes"] == 1 and "1 note(s) could not be tagged" in c["problems"]
    assert c["sessions_present"] == "1;5;6" and c["missing_sessions"] == "2;3;4"
    assert result.counts["error"] == 1


def test_note_without_session_is_listed_but_not_placed():
    rows = [note("k", 1), note("k", 4), {**note("k", 1, note_id="loose"), "session": None, "phase": "unknown"}]
    result = audit(frame(rows))
    s = result.sessions
    loose = s[s["note_id"] == "loose"].iloc[0]
    assert not loose["placed"] and "not placed in the timeline" in loose["remark"]
    assert s["note_id"].tolist()[-1] == "loose"   # after the case's numbered sessions
    c = case_of(result, "k")
    assert c["unplaced_notes"] == 1 and c["sessions_present"] == "1;4"


def test_notes_without_case_id_get_a_session_row_but_no_case():
    rows = [note("k", 1), {**note(None, 3, note_id="solo")}]
    result = audit(frame(rows))
    assert result.cases["case_id"].tolist() == ["k"]
    assert len(result.sessions) == 2 and result.counts["without_case"] == 1
    solo = result.sessions[result.sessions["note_id"] == "solo"].iloc[0]
    assert solo["remark"].startswith("no case_id")


def test_sessions_are_grouped_by_case_and_ordered_by_session():
    rows = [note("b", 5), note("a", 3), note("b", 1), note("a", 1)]
    s = audit(frame(rows)).sessions
    assert list(zip(s["case_id"], s["session"])) == [("b", 1), ("b", 5), ("a", 1), ("a", 3)]
    assert s.columns.tolist() == list(SESSION_COLUMNS)


# --- config ---------------------------------------------------------------------------------------

def test_shipped_audit_config_loads():
    cfg = load_audit_config()
    assert 0 < cfg.drift.max_focus_probability < 0.5


@pytest.mark.parametrize("text, message", [
    ("drift:\n  max_focus_probability: 2.0\n  treshold: 1\n", "unknown key 'treshold'"),
    ("drift:\n  max_focus_probability: 2.0\n", "max_focus_probability must be in"),
    ("course_context:\n  weight: -1\n", "course_context.weight must be in"),
    ("course_context:\n  keep_own_above: 0\n", "keep_own_above must be in"),
    ("focus_inference:\n  two_areas:\n    stated_min_second_score: 0\n", "stated_min_second_score must be in"),
])
def test_audit_config_unknown_keys_and_bad_values_are_errors(tmp_path, text, message):
    path = tmp_path / "audit.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_audit_config(path)


# --- the HTML report --------------------------------------------------------------------------------

def test_report_is_self_contained_and_escapes_values():
    rows = [note("<b>x&y</b>", s, focus="grief") for s in (1, 2, 3, 4, 5)]
    rows.append(note("<b>x&y</b>", 6, focus="grief", grief=0.001, role_dispute=0.99))
    html = render_report(audit(frame(rows)))
    assert "<b>x&y</b>" not in html and "&lt;b&gt;x&amp;y&lt;/b&gt;" in html
    for bad in ("http://", "https://", "src=", "<script", "<link", "@import", "url(http"):
        assert bad not in html
    assert "DRIFT" in html and "How to read this report" in html
    assert len(re.findall(r"<svg", html)) >= 2   # patterns + one timeline


def test_report_lists_sessions_read_with_their_course():
    rows = [note("k", s, 16, focus="grief", grief=0.95) for s in (1, 2, 3, 5)]
    plain = render_report(audit(frame(rows)))
    assert "Sessions read with their course" not in plain
    rows.append(note("k", 15, 16, focus="grief", grief=0.3, interpersonal_deficits=0.4))
    html = render_report(audit(frame(rows)))
    assert "Sessions read with their course" in html
    assert "session 15: Grief (the note alone: Interpersonal deficits)" in html


def test_report_says_when_a_case_has_no_numbered_session():
    rows = [{**note("k", 1), "session": None, "phase": "unknown"}]
    html = render_report(audit(frame(rows)))
    assert "no timeline to draw" in html


# --- end to end ------------------------------------------------------------------------------------

def _courses_csv(path):
    rows = []
    texts = {"g": "Pt tearful about her late mother; reviewed the funeral and the guilt. " + CANARY,
             "d": "Argued again with her husband about money; role-played the talk. " + CANARY}
    for s in (1, 2, 3, 4, 6, 7):
        rows.append({"note_id": f"g{s}", "case_id": "G", "session": s, "total_sessions": 12,
                     "focus": "grief", "text": texts["g"]})
    rows.append({"note_id": "g5", "case_id": "G", "session": 5, "total_sessions": 12, "focus": "grief",
                 "text": texts["d"]})
    for s in (1, 2, 3, 5):
        rows.append({"note_id": f"d{s}", "case_id": "D", "session": s, "total_sessions": 12, "focus": "",
                     "text": texts["d"]})
    rows.append({"note_id": "blank", "case_id": "D", "session": 6, "total_sessions": 12, "focus": "",
                 "text": ""})
    rows.append({"note_id": "solo", "case_id": "", "session": "", "total_sessions": "", "focus": "",
                 "text": texts["g"]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return len(rows)


def test_cli_audit_end_to_end(tmp_path, small_model_dir):
    from iptnlp.cli import main

    src = tmp_path / "courses.csv"
    n = _courses_csv(src)
    out = tmp_path / "audit"
    runner = CliRunner()
    result = runner.invoke(main, ["audit", str(src), "-o", str(out), "--model", str(small_model_dir)])
    assert result.exit_code == 0, result.output
    cases = pd.read_csv(out / "cases.csv", keep_default_na=False)
    sessions = pd.read_csv(out / "sessions.csv", keep_default_na=False)
    assert cases.columns.tolist() == list(CASE_COLUMNS)
    assert cases["case_id"].tolist() == ["G", "D"]
    assert cases["focus_source"].tolist() == ["given", "inferred"]
    assert len(sessions) == n and set(sessions["note_id"]) >= {"blank", "solo"}
    blank = sessions[sessions["note_id"] == "blank"].iloc[0]
    assert blank["status"] == "error" and blank["error"] == "row 12: text is missing or not a string"
    assert sessions[sessions["case_id"] == "G"]["session"].tolist() == ["1", "2", "3", "4", "5", "6", "7"]
    for name in ("cases.csv", "sessions.csv", "report.html"):
        assert CANARY not in (out / name).read_text(encoding="utf-8")
    assert CANARY not in result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "src=" not in html
    assert "13 notes: 2 cases; 1 note(s) could not be read; 1 note(s) have no case_id" in html

    again = runner.invoke(main, ["audit", str(src), "-o", str(out), "--model", str(small_model_dir)])
    assert again.exit_code == 1
    assert "already holds cases.csv, sessions.csv, report.html; pass --force" in again.output
    forced = runner.invoke(main, ["audit", str(src), "-o", str(out), "--model", str(small_model_dir),
                                  "--force", "-q"])
    assert forced.exit_code == 0 and forced.output == ""


def test_cli_audit_named_focus_column_and_missing_one(tmp_path, small_model_dir):
    from iptnlp.cli import main

    src = tmp_path / "c.csv"
    pd.DataFrame({"case_id": ["k", "k"], "session": [1, 5], "agreed": ["role_dispute", "role_dispute"],
                  "text": ["Tearful about her late father.", "Misses her father; visited the grave."]}
                 ).to_csv(src, index=False)
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", str(src), "-o", str(tmp_path / "a"), "--model", str(small_model_dir),
                              "--focus-col", "agreed", "-q"])
    assert ok.exit_code == 0, ok.output
    cases = pd.read_csv(tmp_path / "a" / "cases.csv")
    assert cases.loc[0, "focus"] == "role_dispute" and cases.loc[0, "focus_source"] == "given"
    bad = runner.invoke(main, ["audit", str(src), "-o", str(tmp_path / "b"), "--model", str(small_model_dir),
                               "--focus-col", "nope"])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: no 'nope' column in the input; name the focus column with --focus-col")
    assert not (tmp_path / "b" / "cases.csv").exists()


def test_cli_audit_help_has_an_example():
    from iptnlp.cli import main

    result = CliRunner().invoke(main, ["audit", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "iptnlp audit" in result.output


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, small_model_dir):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    from iptnlp.cli import main

    src = tmp_path / "courses.csv"
    _courses_csv(src)
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["audit", str(src), "-o", str(out), "--model", str(small_model_dir), "-q"])
    assert result.exit_code == 0, result.output
    png = out / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", f"--screenshot={png}", "--window-size=1280,2400",
                    (out / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


# --- the evaluation of themes and the audit ----------------------------------------------------------

def _gold_courses():
    def rec(case, s, area, themes, total=12, focus="grief"):
        return {"note_id": f"{case}-{s}", "case_id": case, "session": s, "total_sessions": total,
                "phase": phase_of(s, total), "area": area, "themes": list(themes), "focus": focus}
    return [rec("a", 1, "grief", FULL_INITIAL), rec("a", 5, "grief", ["role_play"]),
            rec("a", 6, "role_dispute", ["communication_analysis"]), rec("a", 7, "grief", []),
            rec("b", 1, "role_dispute", ["symptom_review"], focus="role_dispute"),
            rec("b", 4, "role_dispute", ["interpersonal_inventory"], focus="role_dispute")]


def test_audit_check_is_perfect_on_gold_predictions_and_counts_errors():
    from iptnlp.evaluate import audit_check

    recs = _gold_courses()
    onehot = np.array([[0.98 if r["area"] == a else 0.02 / 3 for a in AREAS] for r in recs])
    m = audit_check(recs, onehot, [r["themes"] for r in recs])
    assert m["focus_exact"]["right"] == 2 and m["missing_expected_exact"]["rate"] == 1.0
    assert m["gold_drift_sessions"] == 1 and m["drift_given_focus"]["f1"] == 1.0
    themes = [r["themes"] for r in recs]
    themes[1] = []                         # role play not found in course a: middle:role_play missing
    onehot[3] = [0.01, 0.99, 0.0, 0.0]     # session 7 of course a now looks like a dispute
    m = audit_check(recs, onehot, themes)
    assert m["missing_expected_exact"]["right"] == 1
    assert m["drift_given_focus"]["precision"] == 0.5 and m["drift_given_focus"]["recall"] == 1.0


def test_theme_flag_metrics_off_phase_precision():
    from iptnlp.evaluate import combine_themes, theme_flag_metrics

    gold = [["interpersonal_inventory"], ["role_play"], []]
    pred = [["interpersonal_inventory"], ["role_play", "termination_discussion"], ["sick_role"]]
    m = theme_flag_metrics(gold, pred, ["middle", "initial", "initial"])
    # flags raised: inventory in a middle session (right), role play and a goodbye talk in initial (one wrong)
    assert (m["off_phase"]["tp"], m["off_phase"]["fp"]) == (2, 1)
    assert m["micro"]["tp"] == 2 and m["micro"]["fp"] == 2
    from iptnlp.config import ThemeModelConfig
    from iptnlp.taxonomy import THEME_IDS

    cfg = ThemeModelConfig(threshold=0.5, rules_join=("role_play", "interpersonal_inventory"),
                           off_phase_threshold=0.7, off_phase_rule_threshold=0.2)
    proba = np.zeros((4, 13))
    proba[:, 0] = 0.6                                       # symptom_review: fits every phase
    inv = THEME_IDS.index("interpersonal_inventory")
    proba[1, inv], proba[2, inv], proba[3, inv] = 0.1, 0.75, 0.3
    ruled = [{"role_play", "formulation"}, {"interpersonal_inventory"}, set(), {"interpersonal_inventory"}]
    # a rule hit joins in its phase; off-phase (an inventory in the middle) the learned model at 0.7,
    # or a rule hit backed by at least 0.2
    assert combine_themes(proba, ruled, ["middle"] * 4, cfg) == [
        ["symptom_review", "role_play"], ["symptom_review"], ["symptom_review", "interpersonal_inventory"],
        ["symptom_review", "interpersonal_inventory"]]

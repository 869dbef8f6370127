"""The audit as one self-contained HTML page for a clinical supervisor.

Inline CSS and inline SVG only: no JavaScript, no fonts, images or styles fetched from anywhere, so the
page works offline and can be mailed as one file. Every value is escaped with ``html.escape``. The page
shows no note text (not even evidence words): notes are named by note_id and input row. Areas are told
apart by pattern as well as colour, so the page reads in greyscale too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

import pandas as pd

from iptnlp.audit import PROBA_COLUMNS, AuditResult
from iptnlp.taxonomy import AREAS, PHASES, THEMES

AREA_NAMES = {"grief": "Grief", "role_dispute": "Role dispute", "role_transition": "Role transition",
              "interpersonal_deficits": "Interpersonal deficits"}
# Okabe-Ito colours (safe for colour-blind readers), each with its own pattern for greyscale
AREA_COLOURS = {"grief": "#0072B2", "role_dispute": "#D55E00", "role_transition": "#009E73",
                "interpersonal_deficits": "#E69F00"}
THEME_NAMES = {
    "symptom_review": "Symptom review", "sick_role": "Sick role", "interpersonal_inventory":
    "Interpersonal inventory", "formulation": "Formulation (focus agreed)", "treatment_contract":
    "Treatment contract", "communication_analysis": "Communication analysis", "role_play": "Role play",
    "decision_analysis": "Decision analysis", "encouragement_of_affect": "Encouragement of affect",
    "termination_discussion": "Discussing the ending", "progress_review": "Progress review",
    "relapse_prevention": "Relapse prevention", "future_planning": "Planning after the course"}
PHASE_NAMES = {"initial": "Initial", "middle": "Middle", "termination": "Termination"}

CSS = """
body{font-family:Arial,Helvetica,sans-serif;color:#111;margin:24px 32px;max-width:1220px;line-height:1.4}
h1{font-size:26px;margin:0 0 4px} h2{font-size:21px;margin:32px 0 8px;border-bottom:2px solid #333}
h3{font-size:16px;margin:18px 0 6px}
.meta{color:#444;font-size:13px;margin:0 0 12px}
.note{background:#f3f3f3;border-left:4px solid #555;padding:8px 12px;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #999;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#e6e6e6}
td.num{text-align:right}
td.id{white-space:nowrap}
.flag{font-weight:bold}
.ok{color:#1a5e1a}
.legend{display:flex;flex-wrap:wrap;gap:8px 22px;font-size:13px;align-items:center}
.legend span{display:inline-flex;align-items:center;gap:6px}
.facts{font-size:14px;margin:4px 0 8px}
.facts b{margin-right:3px}
td.na{background:repeating-linear-gradient(45deg,#eee,#eee 4px,#fff 4px,#fff 8px);color:#333}
td.missing{font-weight:bold;border:2px solid #000}
td.off{font-weight:bold;border:2px dashed #000}
td.unreached{color:#777}
ul{margin:4px 0 4px 20px;padding:0;font-size:14px}
.case{page-break-before:always}
"""

SLOT_MAX = 58
CHART_LEFT = 64
CHART_WIDTH = 1060
BAR_TOP = 58
BAR_HEIGHT = 170


def _patterns_svg() -> str:
    """Fill patterns for the four areas, defined once and referenced by every chart."""
    defs = []
    for area, colour in AREA_COLOURS.items():
        pid = f"pat-{area}"
        if area == "grief":
            body = f'<rect width="8" height="8" fill="{colour}"/>'
        elif area == "role_dispute":
            body = (f'<rect width="8" height="8" fill="{colour}"/>'
                    f'<path d="M-2,2 l4,-4 M0,8 l8,-8 M6,10 l4,-4" stroke="#fff" stroke-width="2"/>')
        elif area == "role_transition":
            body = (f'<rect width="8" height="8" fill="{colour}"/>'
                    f'<circle cx="2" cy="2" r="1.6" fill="#fff"/><circle cx="6" cy="6" r="1.6" fill="#fff"/>')
        else:
            body = (f'<rect width="8" height="8" fill="#fff"/>'
                    f'<rect width="8" height="5" fill="{colour}"/>')
        defs.append(f'<pattern id="{pid}" width="8" height="8" patternUnits="userSpaceOnUse">{body}</pattern>')
    return ('<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
            + "".join(defs) + "</defs></svg>")


def _swatch(area: str) -> str:
    return (f'<svg width="26" height="16" role="img" aria-label="{escape(AREA_NAMES[area])}">'
            f'<rect x="0.5" y="0.5" width="25" height="15" fill="url(#pat-{area})" stroke="#000"/></svg>')


def _pct(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * float(value):.0f}%"


def _yes_no(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "unknown"
    return "yes" if bool(value) else "no"


def _items(value) -> list[str]:
    return [v for v in str(value or "").split(";") if v]


def _case_anchor(case_id: str) -> str:
    return "case-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(case_id))


def legend(drift_threshold: float) -> str:
    areas = "".join(f"<span>{_swatch(a)}{escape(AREA_NAMES[a])}</span>" for a in AREAS)
    marks = ("<span><b>&#9660; DRIFT</b> middle session mainly about another area</span>"
             "<span><b>&#10005;</b> session missing from the notes</span>"
             "<span><b>!</b> note could not be read</span>"
             "<span><b>&#9644;</b> thick line: top of the focus part of a bar</span>"
             "<span><b>dashed box</b> sessions after the course ended</span>")
    return (
        '<div class="note">'
        f'<div class="legend">{areas}</div><div class="legend" style="margin-top:6px">{marks}</div>'
        "<p style='margin:8px 0 0'>Each session's bar shows how likely the model thinks the session's work "
        "was about each problem area (full height = 100%). The focus area sits at the bottom, so a short "
        "bottom part means the session was about something else. A <b>middle-phase</b> session counts as "
        f"<b>drift</b> when the chance that its work was on the focus is under {100 * drift_threshold:g}%. "
        "<b>On focus</b> = middle sessions on focus / middle sessions present. Phases: initial = sessions "
        "1-3, termination = the last 3, middle in between (a phase stated in the note wins). A theme is "
        "<b>off-phase</b> when it appears in a phase where it does not belong, and <b>missing</b> when it is "
        "expected in a phase the case reached but no session of that phase shows it.</p></div>")


def summary_table(result: AuditResult) -> str:
    head = ("<tr><th>Case</th><th>Focus</th><th>Sessions seen</th><th>Missing sessions</th>"
            "<th>Ended early</th><th>On focus (middle)</th><th>Drift sessions</th><th>Off-phase items</th>"
            "<th>Missing expected themes</th><th>Problems</th></tr>")
    rows = []
    for c in result.cases.to_dict(orient="records"):
        total = c["total_sessions"]
        seen = len(_items(c["sessions_present"]))
        off, miss = len(_items(c["off_phase"])), len(_items(c["missing_expected"]))
        drift = _items(c["drift_sessions"])
        rows.append(
            f'<tr><td class="id"><a href="#{_case_anchor(c["case_id"])}">{escape(str(c["case_id"]))}</a></td>'
            f'<td>{escape(_focus_text(c["focus"]))} <small>({escape(str(c["focus_source"]))})</small></td>'
            f'<td class="num">{seen}{" of " + escape(str(total)) if total else ""}</td>'
            f'<td>{escape(", ".join(_items(c["missing_sessions"])) or "none")}</td>'
            f'<td class="{"flag" if c["incomplete"] is True else ""}">{escape(_yes_no(c["incomplete"]))}</td>'
            f'<td class="num">{escape(_adherence_text(c))}</td>'
            f'<td class="{"flag" if drift else ""}">{escape(", ".join(drift) or "none")}</td>'
            f'<td class="num">{off}</td><td class="num">{miss}</td>'
            f'<td>{escape(str(c["problems"] or ""))}</td></tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def _focus_text(focus) -> str:
    if not focus:
        return "unknown"
    return " + ".join(AREA_NAMES.get(a, a) for a in str(focus).split("+")) \
        if all(a in AREA_NAMES for a in str(focus).split("+")) else f"{focus} (not valid)"


def _adherence_text(c: dict) -> str:
    if c["adherence"] is None or pd.isna(c["adherence"]):
        return "not judged" if c["middle_sessions"] else "no middle sessions"
    on = round(float(c["adherence"]) * c["middle_sessions"])
    return f"{on} of {c['middle_sessions']} ({_pct(c['adherence'])})"


def timeline_svg(case: dict, notes: pd.DataFrame) -> str:
    """Sessions along the course: stacked area probabilities, phases, drift, missing and unread notes."""
    placed = notes[notes["placed"]]
    last = int(placed["session"].max()) if len(placed) else 0
    planned = case["total_sessions"]
    total = max(0 if planned is None or pd.isna(planned) else int(planned), last)
    if placed.empty:
        return "<p>No note of this case has a session number, so there is no timeline to draw.</p>"
    slot = min(SLOT_MAX, CHART_WIDTH / total)
    width = CHART_LEFT + slot * total + 20
    height = BAR_TOP + BAR_HEIGHT + 60
    focus = [a for a in str(case["focus"] or "").split("+") if a in AREAS]
    stack = focus + [a for a in AREAS if a not in focus]
    parts = [f'<svg width="{width:.0f}" height="{height}" role="img" '
             f'aria-label="timeline of case {escape(str(case["case_id"]))}" '
             f'style="font-family:Arial,Helvetica,sans-serif;font-size:12px">']

    def x_of(session: int) -> float:
        return CHART_LEFT + slot * (session - 1)

    bottom = BAR_TOP + BAR_HEIGHT
    # phase bands (initial 1-3, termination the last 3), shaded in greys
    bands = [("initial", 1, min(3, total)), ("middle", 4, total - 3), ("termination", max(total - 2, 4), total)]
    for k, (phase, first, end) in enumerate(bands):
        if end < first:
            continue
        x0, x1 = x_of(first), x_of(end) + slot
        parts.append(f'<rect x="{x0:.1f}" y="{BAR_TOP - 38}" width="{x1 - x0:.1f}" height="{BAR_HEIGHT + 38}" '
                     f'fill="{["#f1f1f1", "#ffffff", "#e4e4e4"][k]}" stroke="#bbb"/>')
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{BAR_TOP - 26}" text-anchor="middle" '
                     f'font-weight="bold">{escape(PHASE_NAMES[phase])}</text>')
    for frac in (0.0, 0.5, 1.0):
        y = bottom - frac * BAR_HEIGHT
        parts.append(f'<line x1="{CHART_LEFT - 4}" x2="{x_of(total) + slot:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#999" stroke-dasharray="{"" if frac == 0 else "2,3"}"/>')
        parts.append(f'<text x="{CHART_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{frac * 100:.0f}%</text>')
    parts.append(f'<text x="14" y="{BAR_TOP + BAR_HEIGHT / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {BAR_TOP + BAR_HEIGHT / 2:.0f})">area probability</text>')
    present = set(int(s) for s in placed["session"])
    for s in range(1, total + 1):
        cx = x_of(s) + slot / 2
        parts.append(f'<text x="{cx:.1f}" y="{bottom + 16}" text-anchor="middle">{s}</text>')
        if s not in present and s < last:
            parts.append(f'<text x="{cx:.1f}" y="{bottom - 8}" text-anchor="middle" font-size="16" '
                         f'font-weight="bold">&#10005;</text>')
    if last < total and case.get("incomplete"):
        x0 = x_of(last + 1)
        parts.append(f'<rect x="{x0:.1f}" y="{BAR_TOP}" width="{x_of(total) + slot - x0:.1f}" '
                     f'height="{BAR_HEIGHT}" fill="#fff" fill-opacity="0.7" stroke="#333" stroke-dasharray="5,4"/>')
        parts.append(f'<text x="{(x0 + x_of(total) + slot) / 2:.1f}" y="{BAR_TOP + BAR_HEIGHT / 2:.0f}" '
                     f'text-anchor="middle" font-weight="bold">course ended after session {last}</text>')
    parts.append(f'<text x="{CHART_LEFT}" y="{bottom + 36}">session number</text>')
    for s, group in placed.groupby("session", sort=True):
        s = int(s)
        width_each = (slot - 6) / len(group)
        for k, (_, note) in enumerate(group.iterrows()):
            x = x_of(s) + 3 + k * width_each
            if note["status"] != "ok":
                parts.append(f'<rect x="{x:.1f}" y="{BAR_TOP}" width="{width_each:.1f}" height="{BAR_HEIGHT}" '
                             f'fill="#fff" stroke="#000" stroke-dasharray="3,2"/>')
                parts.append(f'<text x="{x + width_each / 2:.1f}" y="{BAR_TOP + BAR_HEIGHT / 2:.0f}" '
                             f'text-anchor="middle" font-size="20" font-weight="bold">!</text>')
                continue
            y = bottom
            for a in stack:
                p = float(note[f"p_{a}"])
                h = p * BAR_HEIGHT
                if h <= 0:
                    continue
                y -= h
                parts.append(f'<rect x="{x:.1f}" y="{y:.2f}" width="{width_each:.1f}" height="{h:.2f}" '
                             f'fill="url(#pat-{a})"><title>session {s}: {escape(AREA_NAMES[a])} '
                             f'{p:.0%}</title></rect>')
            if focus:   # a line at the top of the focus part
                p_focus = sum(float(note[f"p_{a}"]) for a in focus)
                fy = bottom - p_focus * BAR_HEIGHT
                parts.append(f'<line x1="{x:.1f}" x2="{x + width_each:.1f}" y1="{fy:.1f}" y2="{fy:.1f}" '
                             f'stroke="#000" stroke-width="2"/>')
            drift = note.get("drift") is True
            dash = ' stroke-dasharray="6,3"' if drift else ""
            parts.append(f'<rect x="{x:.1f}" y="{BAR_TOP}" width="{width_each:.1f}" height="{BAR_HEIGHT}" '
                         f'fill="none" stroke="#000" stroke-width="{3 if drift else 1}"{dash}/>')
            if drift:
                parts.append(f'<text x="{x + width_each / 2:.1f}" y="{BAR_TOP - 6}" text-anchor="middle" '
                             f'font-weight="bold" font-size="12">&#9660;DRIFT</text>')
    parts.append("</svg>")
    return "".join(parts)


def themes_table(case: dict, notes: pd.DataFrame) -> str:
    ok = notes[notes["status"].eq("ok")]
    reached = {p for p in PHASES if (ok["phase"] == p).any()}
    missing = set(_items(case["missing_expected"]))
    head = "<tr><th>Theme</th>" + "".join(
        f"<th>{escape(PHASE_NAMES[p])}{'' if p in reached else ' <small>(not reached)</small>'}</th>"
        for p in PHASES) + "</tr>"
    rows = []
    for theme, (appropriate, expected) in THEMES.items():
        cells = []
        for phase in PHASES:
            where = [_where(n) for _, n in ok[ok["phase"] == phase].iterrows() if theme in n["themes"]]
            text = ", ".join(where)
            if f"{phase}:{theme}" in missing:
                cells.append('<td class="missing">&#10005; missing (expected here)</td>')
            elif where and phase not in appropriate:
                cells.append(f'<td class="off">&#9888; off-phase: session {escape(text)}</td>')
            elif phase not in appropriate:
                cells.append('<td class="na">not this phase</td>')
            elif where:
                mark = "&#10003; " if expected == phase else ""
                cells.append(f'<td>{mark}session {escape(text)}</td>')
            else:
                cells.append(f'<td class="{"unreached" if phase not in reached else ""}">'
                             f'{"expected" if expected == phase and phase not in reached else ""}</td>')
        rows.append(f"<tr><th>{escape(THEME_NAMES[theme])}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _where(note) -> str:
    return str(note["session"]) if note["session"] is not None else f"(note {note['note_id']})"


def _note_ref(note) -> str:
    return f"note {note['note_id']} (row {note['row']} of {note['source']})"


def case_section(case: dict, notes: pd.DataFrame) -> str:
    cid = str(case["case_id"])
    drift = _items(case["drift_sessions"])
    facts = [
        f"<b>Focus:</b> {escape(_focus_text(case['focus']))} ({escape(str(case['focus_source']))})",
        f"<b>Sessions seen:</b> {escape(', '.join(_items(case['sessions_present'])) or 'none')}"
        + (f" of {escape(str(case['total_sessions']))} planned" if case["total_sessions"] else ""),
        f"<b>Missing sessions:</b> {escape(', '.join(_items(case['missing_sessions'])) or 'none')}",
        f"<b>Ended before the termination phase:</b> {escape(_yes_no(case['incomplete']))}",
        f"<b>On focus in the middle phase:</b> {escape(_adherence_text(case))}",
        f"<b>Drift:</b> {escape(', '.join('session ' + d for d in drift) or 'none')}",
    ]
    lists = []
    off = _items(case["off_phase"])
    lists.append("<h3>Work outside its phase</h3>" + (
        "<ul>" + "".join(f"<li>session {escape(o.rsplit(':', 1)[0])}: "
                         f"{escape(THEME_NAMES.get(o.rsplit(':', 1)[1], o))}</li>" for o in off) + "</ul>"
        if off else "<p>None found.</p>"))
    miss = _items(case["missing_expected"])
    lists.append("<h3>Expected work not seen</h3>" + (
        "<ul>" + "".join(f"<li>{escape(PHASE_NAMES.get(m.split(':')[0], m))} phase: "
                         f"{escape(THEME_NAMES.get(m.split(':', 1)[1], m))}</li>" for m in miss) + "</ul>"
        if miss else "<p>None: every expected theme of the phases reached was seen.</p>"))
    reread = [n for _, n in notes.iterrows() if n["status"] == "ok" and isinstance(n.get("course_area"), str)
              and isinstance(n.get("area"), str) and n["course_area"] != n["area"]]
    if reread:
        lists.append("<h3>Sessions read with their course</h3><p class='meta'>The note alone says little "
                     "about the area; read with the rest of the course it is most likely about:</p><ul>" + "".join(
                         f"<li>session {escape(_where(n))}: {escape(AREA_NAMES.get(n['course_area'], n['course_area']))}"
                         f" (the note alone: {escape(AREA_NAMES.get(n['area'], n['area']))})</li>" for n in reread)
                     + "</ul>")
    odd = [n for _, n in notes.iterrows() if n["status"] != "ok" or not n["placed"]]
    if odd:
        items = []
        for n in odd:
            what = []
            if not n["placed"]:
                what.append("no session number, so not placed in the timeline")
            if n["status"] != "ok":
                what.append(f"could not be read: {n['error']}")
            items.append(f"<li>{escape(_note_ref(n))}: {escape('; '.join(what))}</li>")
        lists.append("<h3>Notes to check</h3><ul>" + "".join(items) + "</ul>")
    if case["problems"]:
        lists.append(f"<h3>Problems with this case's data</h3><p>{escape(str(case['problems']))}</p>")
    return (f'<section class="case" id="{_case_anchor(cid)}"><h2>Case {escape(cid)}</h2>'
            f'<p class="facts">{" &middot; ".join(facts)}</p>'
            f"<h3>Sessions across the course</h3>"
            f"<p class='meta'>Bottom part of each bar (up to the thick line) = the focus: "
            f"{escape(_focus_text(case['focus']))}. &#10005; = session missing from the notes.</p>"
            f"{timeline_svg(case, notes)}"
            f"<h3>Themes by phase</h3>{themes_table(case, notes)}{''.join(lists)}"
            f'<p><a href="#summary">back to all cases</a></p></section>')


def render_report(result: AuditResult, *, inputs: list[str] = (), model_name: str = "",
                  title: str = "IPT focus-adherence audit") -> str:
    """The whole page as a string."""
    from pathlib import Path

    from iptnlp import __version__

    counts = result.counts
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    src = ", ".join(Path(i).name for i in inputs) or "a DataFrame"
    intro = (f"<p class='meta'>Made {escape(when)} by iptnlp {escape(__version__)} from {escape(src)}"
             + (f" with the model {escape(model_name)}" if model_name else "") + ". "
             "A research and supervision aid: areas and themes are a model's reading of the notes, "
             "to be checked against the notes by a clinician. No note text is shown here.</p>")
    totals = (f"<p>{counts.get('notes', 0)} notes: {counts.get('cases', 0)} cases; "
              f"{counts.get('error', 0)} note(s) could not be read; "
              f"{counts.get('without_case', 0)} note(s) have no case_id and belong to no case "
              f"(they are listed in sessions.csv); "
              f"{counts.get('unplaced_in_cases', 0)} note(s) of cases have no session number.</p>")
    sections = []
    for case in result.cases.to_dict(orient="records"):
        notes = result.sessions[result.sessions["case_id"] == case["case_id"]]
        sections.append(case_section(case, notes))
    body = (f"<h1>{escape(title)}</h1>{intro}<h2>How to read this report</h2>{legend(result.drift_threshold)}"
            f'<h2 id="summary">All cases</h2>{totals}'
            + (summary_table(result) if len(result.cases) else "<p>No note has a case_id.</p>")
            + "".join(sections))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{_patterns_svg()}{body}</body></html>\n")


__all__ = ["render_report", "PROBA_COLUMNS"]

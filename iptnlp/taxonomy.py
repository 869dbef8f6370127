"""The IPT vocabulary the whole project shares: problem areas, phases, themes.

The ids here are the ids of ``shared/IPT.md``; every other module takes them from here.
"""

from __future__ import annotations

AREAS: tuple[str, ...] = (
    "grief",
    "role_dispute",
    "role_transition",
    "interpersonal_deficits",
)
UNCERTAIN = "uncertain"

PHASES: tuple[str, ...] = ("initial", "middle", "termination")
UNKNOWN_PHASE = "unknown"

DEFAULT_COURSE_LENGTH = 16

#: theme id -> (phases where it is appropriate, phase where it is expected at least once or None)
THEMES: dict[str, tuple[frozenset[str], str | None]] = {
    "symptom_review": (frozenset(PHASES), "initial"),
    "sick_role": (frozenset({"initial", "middle"}), "initial"),
    "interpersonal_inventory": (frozenset({"initial"}), "initial"),
    "formulation": (frozenset({"initial", "middle"}), "initial"),
    "treatment_contract": (frozenset({"initial"}), "initial"),
    "communication_analysis": (frozenset({"middle", "termination"}), "middle"),
    "role_play": (frozenset({"middle", "termination"}), "middle"),
    "decision_analysis": (frozenset({"middle"}), None),
    "encouragement_of_affect": (frozenset(PHASES), None),
    "termination_discussion": (frozenset({"termination"}), "termination"),
    "progress_review": (frozenset({"middle", "termination"}), "termination"),
    "relapse_prevention": (frozenset({"termination"}), "termination"),
    "future_planning": (frozenset({"termination"}), "termination"),
}
THEME_IDS: tuple[str, ...] = tuple(THEMES)


def phase_of(session: int | None, total_sessions: int | None = None) -> str:
    """Phase of a session: initial = 1-3, termination = the last 3, middle between.

    ``total_sessions`` defaults to the default course length; a session number that is
    missing, not positive, or past the end of the course gives ``"unknown"``.
    """
    if session is None:
        return UNKNOWN_PHASE
    total = DEFAULT_COURSE_LENGTH if total_sessions is None else total_sessions
    if session < 1 or total < 1 or session > total:
        return UNKNOWN_PHASE
    if session <= 3:
        return "initial"
    if session >= total - 2:
        return "termination"
    return "middle"


def is_off_phase(theme: str, phase: str) -> bool:
    """True when ``theme`` is seen in a known phase where it does not belong."""
    if phase not in PHASES:
        return False
    return phase not in THEMES[theme][0]

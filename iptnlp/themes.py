"""Phase themes: which of the 13 IPT themes a note shows as done, with evidence, and which are off-phase.

Rules are data (``configs/themes.yml``): phrases matched on lemmas by a spaCy ``PhraseMatcher`` and
optional token patterns for a ``Matcher``. A match counts only when none of its tokens is negated or
hypothetical (as marked by the preprocessing stage), so "we did not role-play" and "will try a role
play next week" are not a role play performed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iptnlp.config import CONFIG_DIR, _read_yaml
from iptnlp.errors import ConfigError
from iptnlp.preprocess import ext
from iptnlp.taxonomy import PHASES, THEME_IDS, THEMES, is_off_phase

DEFAULT_THEMES = CONFIG_DIR / "themes.yml"
DEFAULT_FOCUS_CUES = CONFIG_DIR / "focus.yml"
#: what ``configs/focus.yml`` may name: a note stating that the agreed focus is two problem areas
#: ("we agreed to work on both: ...", "two linked areas"); the audit reads it (``two_area_focus``)
FOCUS_CUES = ("two_area_focus",)


@dataclass(frozen=True)
class ThemeHit:
    """One piece of evidence: a theme (or area), and where in the note it was found."""

    label: str
    start: int
    end: int
    text: str

    def as_list(self) -> list:
        return [self.start, self.end, self.text]


def load_theme_rules(path: str | Path | None = None) -> dict[str, dict]:
    """theme -> {"phrases": [...], "patterns": [...]}; every problem reported at once."""
    return _load_rules(Path(path) if path else DEFAULT_THEMES, THEME_IDS, "theme")


def load_focus_cues(path: str | Path | None = None) -> dict[str, dict]:
    """``configs/focus.yml``: the words by which a note states its agreed focus, as theme-like rules
    (``two_area_focus`` -> {"phrases": [...], "patterns": [...]})."""
    return _load_rules(Path(path) if path else DEFAULT_FOCUS_CUES, FOCUS_CUES, "cue")


def tagging_rules(theme_rules: str | Path | None = None) -> dict[str, dict]:
    """The theme rules and the focus statements together, as ``iptnlp tag`` matches them in one pass."""
    return {**load_theme_rules(theme_rules), **load_focus_cues()}


def _load_rules(path: Path, known: tuple[str, ...], what: str) -> dict[str, dict]:
    data = _read_yaml(path)
    problems = [f"unknown {what} {k!r} (known: {', '.join(known)})" for k in data if k not in known]
    rules: dict[str, dict] = {}
    for theme, spec in data.items():
        if not isinstance(spec, dict):
            problems.append(f"{theme}: expected a mapping with phrases/patterns")
            continue
        problems += [f"{theme}: unknown key {k!r} (known: phrases, patterns)" for k in spec
                     if k not in ("phrases", "patterns")]
        phrases = spec.get("phrases") or []
        patterns = spec.get("patterns") or []
        if not isinstance(phrases, list) or not all(isinstance(p, (str, int, float)) for p in phrases):
            problems.append(f"{theme}.phrases: expected a list of strings")
        if not isinstance(patterns, list) or not all(isinstance(p, list) for p in patterns):
            problems.append(f"{theme}.patterns: expected a list of token-pattern lists")
        rules[theme] = {"phrases": [str(p).lower() for p in phrases], "patterns": patterns}
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return rules


class ThemeFinder:
    """Finds the themes done in Docs made by one preprocessing pipeline."""

    def __init__(self, nlp, rules: dict[str, dict]):
        from spacy.matcher import Matcher, PhraseMatcher

        self.phrase_matcher = PhraseMatcher(nlp.vocab, attr="LEMMA")
        self.matcher = Matcher(nlp.vocab)
        for theme, spec in rules.items():
            if spec["phrases"]:
                # patterns need lemmas, so they go through the same pipeline as the notes
                self.phrase_matcher.add(theme, list(nlp.pipe(spec["phrases"])))
            if spec["patterns"]:
                self.matcher.add(theme, spec["patterns"])
        self.strings = nlp.vocab.strings

    def hits(self, doc) -> list[ThemeHit]:
        """Theme matches done in this session (not negated, not hypothetical), in text order."""
        neg, hyp = ext(doc, "iptnlp_neg"), ext(doc, "iptnlp_hyp")
        found: list[ThemeHit] = []
        matches = list(self.phrase_matcher(doc)) + (list(self.matcher(doc)) if len(self.matcher) else [])
        for match_id, start, end in matches:
            if any(neg[i] or hyp[i] for i in range(start, end)):
                continue
            span = doc[start:end]
            found.append(ThemeHit(self.strings[match_id], span.start_char, span.end_char, span.text))
        found.sort(key=lambda h: (h.start, h.label))
        return found


def decide_themes(proba, ruled: set[str], phase: str, cfg) -> list[str]:
    """The themes a note shows, from the learned model's probabilities (``THEME_IDS`` order) and the
    rule hits, given the note's phase and a ``ThemeModelConfig``: a theme is found at its threshold
    (``thresholds``, else ``threshold``; in the phase where it is expected, ``expected_phase_thresholds``
    when lower), or by a rule hit for the themes in ``rules_join``; outside its phases it needs
    ``off_phase_threshold`` from the learned model, or a rule hit with ``off_phase_rule_threshold``
    (off-phase work is rare, and a false flag costs a supervisor's time)."""
    join = set(cfg.rules_join)
    own = cfg.thresholds
    expected = cfg.expected_phase_thresholds
    found = []
    for j, t in enumerate(THEME_IDS):
        if phase in PHASES and is_off_phase(t, phase):
            if proba[j] >= cfg.off_phase_threshold or (
                    t in ruled and t in join and proba[j] >= cfg.off_phase_rule_threshold):
                found.append(t)
        elif proba[j] >= theme_threshold(t, phase, own.get(t, cfg.threshold), expected) or (
                t in ruled and t in join):
            found.append(t)
    return found


def theme_threshold(theme: str, phase: str, threshold: float, expected: dict[str, float]) -> float:
    """``threshold``, or the theme's ``expected_phase_thresholds`` value when lower and ``phase`` is
    the one where the theme is expected."""
    if theme in expected and THEMES[theme][1] == phase:
        return min(threshold, expected[theme])
    return threshold


def themes_of(hits: list[ThemeHit]) -> list[str]:
    """The distinct themes of some hits, in the taxonomy's order."""
    present = {h.label for h in hits}
    return [t for t in THEME_IDS if t in present]


def off_phase(themes: list[str], phase: str) -> list[str]:
    """Themes not appropriate in ``phase`` (none when the phase is unknown)."""
    return [t for t in themes if phase in PHASES and is_off_phase(t, phase)]

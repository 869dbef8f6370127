import json

import pytest

from iptnlp.errors import ConfigError
from iptnlp.themes import ThemeFinder, load_focus_cues, load_theme_rules, off_phase, themes_of


@pytest.fixture(scope="module")
def finder(shipped_preprocessor):
    return ThemeFinder(shipped_preprocessor.nlp, load_theme_rules())


def found(finder, shipped_preprocessor, text):
    doc = next(iter(shipped_preprocessor.pipe([text])))
    return themes_of(finder.hits(doc))


@pytest.mark.parametrize("text,theme", [
    ("We role-played asking her sister for help; I played the sister.", "role_play"),
    ("PHQ-9 = 14 today.", "symptom_review"),
    ("Warning signs listed: skipping meals, not calling friends.", "relapse_prevention"),
    ("Agreed on 12 sessions, weekly, with goals written together.", "treatment_contract"),
    ("Two sessions left; we talked about ending and what she will miss.", "termination_discussion"),
    ("Generated options and weighed the pros and cons of moving out.", "decision_analysis"),
])
def test_theme_found(finder, shipped_preprocessor, text, theme):
    assert theme in found(finder, shipped_preprocessor, text)


@pytest.mark.parametrize("text", [
    "We did not role-play today.",
    "Will try a role play next week.",
    "P: role-play the conversation with her boss.",
    "If she is ready we could role-play it.",
])
def test_negated_or_planned_role_play_is_not_done(finder, shipped_preprocessor, text):
    assert "role_play" not in found(finder, shipped_preprocessor, text)


def test_off_phase():
    assert off_phase(["interpersonal_inventory", "role_play"], "middle") == ["interpersonal_inventory"]
    assert off_phase(["termination_discussion"], "initial") == ["termination_discussion"]
    assert off_phase(["termination_discussion"], "unknown") == []


def test_rules_file_problems_listed(tmp_path):
    p = tmp_path / "t.yml"
    p.write_text("role_play:\n  phrase: [x]\nmagic:\n  phrases: [y]\n")
    with pytest.raises(ConfigError) as err:
        load_theme_rules(p)
    assert "unknown theme 'magic'" in str(err.value)
    assert "role_play: unknown key 'phrase'" in str(err.value)


@pytest.mark.parametrize("text,stated", [
    ("Formulation shared. We agreed to work on both: the row with her brother, and becoming a carer.", True),
    ("Agreed two linked areas: the move, and the fights with her husband about it.", True),
    ("She said both belong in the work.", True),
    ("Two things meet here: the move and the loneliness. Agreed both as focus.", True),
    ("Named the sadness and the anger. Accepted both; she apologised for the anger.", False),
    ("Explained to both that depression is an illness, not laziness.", False),
    ("Focus = dispute with son; both expect different things from the flat.", False),
    ("We may work on both: the move and the marriage, if she wants.", False),
])
def test_a_stated_two_area_focus(shipped_preprocessor, text, stated):
    cues = ThemeFinder(shipped_preprocessor.nlp, load_focus_cues())
    doc = next(iter(shipped_preprocessor.pipe([text])))
    assert any(h.label == "two_area_focus" for h in cues.hits(doc)) is stated


def test_focus_cues_file_problems_listed(tmp_path):
    p = tmp_path / "f.yml"
    p.write_text("two_area_focus:\n  phrases: [x]\none_area_focus:\n  phrases: [y]\n")
    with pytest.raises(ConfigError, match="unknown cue 'one_area_focus'"):
        load_focus_cues(p)


@pytest.fixture(scope="module")
def shipped():
    from iptnlp.config import REPO_ROOT
    from iptnlp.model import load_model

    return load_model(REPO_ROOT / "models" / "ipt-area")


@pytest.mark.parametrize("text,theme,present", [
    ("Role-played asking her boss for a later shift; I took the boss's part.", "role_play", True),
    ("Will try a role play next week.", "role_play", False),
    ("We did not role-play today.", "role_play", False),
    ("Talked about ending therapy in two weeks and how she feels about finishing.", "termination_discussion", True),
])
def test_shipped_theme_model_reads_done_work_only(shipped, text, theme, present):
    import pandas as pd

    from iptnlp.tagger import tag

    assert (theme in tag(pd.DataFrame({"text": [text]}), shipped).loc[0, "themes"]) is present


def test_tag_output_has_phase_themes_and_evidence_inside_the_note(shipped):
    import pandas as pd

    from iptnlp.tagger import tag

    texts = ["PHQ-9 = 12. Completed the interpersonal inventory of her important people.",
             "Redid the interpersonal inventory; then role-played the talk with her brother.",
             "Said goodbye early; talked about ending therapy."]
    df = pd.DataFrame({"text": texts, "session": [2, 9, 2], "total_sessions": [16, 16, 16],
                       "phase": [None, None, "termination"]})
    out = tag(df, shipped)
    assert out["phase"].tolist() == ["initial", "middle", "termination"]
    assert "interpersonal_inventory" in out.loc[0, "themes"] and out.loc[0, "off_phase_themes"] == []
    assert out.loc[1, "off_phase_themes"] == ["interpersonal_inventory"]
    assert out.loc[2, "off_phase_themes"] == []          # the stated phase wins
    for text, ev in zip(texts, out["evidence"]):
        json.dumps(ev)
        spans = ev["area"] + [s for hits in ev["themes"].values() for s in hits]
        assert spans
        assert all(0 <= s < e <= len(text) and text[s:e] == w for s, e, w in spans)


def test_tag_reports_a_stated_two_area_focus_with_its_words(shipped):
    import pandas as pd

    from iptnlp.tagger import tag

    texts = ["Formulation: mood fell after the move and the rows with her husband. We agreed to work "
             "on both: the new role first, then the rows.", "Agreed the focus: the rows with her husband.",
             "Agreed to work on both of these, the move and the rows.", ""]
    out = tag(pd.DataFrame({"text": texts}), shipped)
    assert out["two_area_focus"].tolist() == [True, False, True, None]   # blank: the row was not tagged
    (s, e, w), = out.loc[0, "evidence"]["two_area_focus"]
    assert texts[0][s:e] == w == "work on both:"
    assert "two_area_focus" not in out.loc[1, "evidence"]
    # "work on both of" inside "work on both of these": one span, the longer
    assert [w for _s, _e, w in out.loc[2, "evidence"]["two_area_focus"]] == ["work on both of these"]


def test_per_theme_thresholds_decide_their_theme_only():
    import numpy as np

    from iptnlp.config import ThemeModelConfig
    from iptnlp.taxonomy import THEME_IDS
    from iptnlp.themes import decide_themes

    proba = np.full(len(THEME_IDS), 0.4)
    cfg = ThemeModelConfig(threshold=0.5, thresholds={"progress_review": 0.35})
    assert decide_themes(proba, set(), "termination", cfg) == ["progress_review"]
    assert decide_themes(proba, set(), "termination", ThemeModelConfig(threshold=0.5)) == []
    # outside its phases a theme still needs off_phase_threshold, whatever its own threshold
    assert decide_themes(proba, set(), "initial", cfg) == []


def test_expected_phase_thresholds_lower_the_bar_in_that_phase_only():
    import numpy as np

    from iptnlp.config import ThemeModelConfig
    from iptnlp.taxonomy import THEME_IDS
    from iptnlp.themes import decide_themes

    proba = np.zeros(len(THEME_IDS))
    proba[THEME_IDS.index("progress_review")] = 0.35
    cfg = ThemeModelConfig(threshold=0.5, expected_phase_thresholds={"progress_review": 0.3})
    assert decide_themes(proba, set(), "termination", cfg) == ["progress_review"]   # its expected phase
    assert decide_themes(proba, set(), "middle", cfg) == []          # allowed there, but not expected
    assert decide_themes(proba, set(), "unknown", cfg) == []
    # a lower threshold of its own still wins in the expected phase: the value only ever lowers the bar
    low = ThemeModelConfig(threshold=0.5, thresholds={"progress_review": 0.2},
                           expected_phase_thresholds={"progress_review": 0.4})
    assert decide_themes(proba, set(), "termination", low) == ["progress_review"]


def test_threshold_choice_decides_as_the_tagger_with_expected_phase_thresholds():
    from dataclasses import replace

    import numpy as np

    from iptnlp.config import ThemeModelConfig
    from iptnlp.evaluate import choose_theme_thresholds, combine_themes
    from iptnlp.taxonomy import THEME_IDS

    rng = np.random.default_rng(1)
    n = 400
    proba = rng.uniform(0, 1, (n, len(THEME_IDS)))
    phases = rng.choice(["initial", "middle", "termination", "unknown"], n).tolist()
    ruled = [set() for _ in range(n)]
    j = THEME_IDS.index("treatment_contract")
    # gold: a contract in the initial phase whenever p >= 0.25; elsewhere whenever p >= 0.65
    gold = [["treatment_contract"] if proba[i, j] >= (0.25 if phases[i] == "initial" else 0.65) else []
            for i in range(n)]
    cfg = ThemeModelConfig(threshold=0.5, expected_phase_thresholds={"treatment_contract": 0.25},
                           off_phase_threshold=0.65)
    chosen = choose_theme_thresholds(proba, ruled, gold, phases, cfg)
    assert chosen["treatment_contract"] == 0.65
    tagged = combine_themes(proba, ruled, phases, replace(cfg, thresholds=chosen))
    assert [("treatment_contract" in t) for t in tagged] == [bool(g) for g in gold]


def test_theme_thresholds_config_is_checked(tmp_path):
    from iptnlp.config import CONFIG_DIR, load_model_config

    text = (CONFIG_DIR / "model.yml").read_text()
    bad = tmp_path / "model.yml"
    assert text.count("thresholds: {") == 1
    bad.write_text(text.replace("thresholds: {", "thresholds: {progres_review: 0.4, "))
    with pytest.raises(ConfigError, match="unknown themes.*progres_review"):
        load_model_config(bad)
    bad.write_text(text.replace("thresholds: {", "thresholds: {progress_review: 1.5, "))
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        load_model_config(bad)
    assert text.count("expected_phase_thresholds:\n") == 1
    bad.write_text(text.replace("expected_phase_thresholds:\n", "expected_phase_thresholds:\n    decision_analysis: 0.3\n"))
    with pytest.raises(ConfigError, match="not expected in any one phase.*decision_analysis"):
        load_model_config(bad)


def test_threshold_choice_finds_the_best_f1_and_cross_fits():
    import numpy as np

    from iptnlp.config import ThemeModelConfig
    from iptnlp.evaluate import choose_theme_thresholds, cross_fitted_thresholds
    from iptnlp.taxonomy import THEME_IDS

    rng = np.random.default_rng(0)
    n = 400
    gold = [["progress_review"] if i % 2 else [] for i in range(n)]
    proba = np.full((n, len(THEME_IDS)), 0.05)
    j = THEME_IDS.index("progress_review")
    # the theme's true notes score 0.3-0.45, the others 0.1-0.25: only a threshold near 0.3 separates them
    proba[:, j] = [rng.uniform(0.3, 0.45) if g else rng.uniform(0.1, 0.25) for g in gold]
    phases = ["termination"] * n
    cfg = ThemeModelConfig(threshold=0.5)
    chosen = choose_theme_thresholds(proba, [set()] * n, gold, phases, cfg)
    assert chosen["progress_review"] == 0.3
    assert chosen["sick_role"] == 0.5   # no gold and nothing found at any threshold: the default stays
    result = cross_fitted_thresholds(proba, [set()] * n, gold, phases, [f"c{i % 40}" for i in range(n)], cfg)
    assert result["cross_fitted"]["per_theme"]["progress_review"]["f1"] == 1.0

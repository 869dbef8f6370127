from hypothesis import given
from hypothesis import strategies as st

from iptnlp.taxonomy import AREAS, PHASES, THEME_IDS, THEMES, UNKNOWN_PHASE, is_off_phase, phase_of


def test_ids_match_ipt_md():
    assert AREAS == ("grief", "role_dispute", "role_transition", "interpersonal_deficits")
    assert len(THEME_IDS) == 13


def test_phase_of_default_course():
    assert [phase_of(s) for s in (1, 3, 4, 13, 14, 16)] == [
        "initial", "initial", "middle", "middle", "termination", "termination"]


def test_phase_of_other_lengths_and_unknowns():
    assert phase_of(10, 12) == "termination"
    assert phase_of(9, 12) == "middle"
    assert phase_of(None) == UNKNOWN_PHASE
    assert phase_of(0, 12) == UNKNOWN_PHASE
    assert phase_of(13, 12) == UNKNOWN_PHASE


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=4, max_value=40))
def test_phase_of_is_a_phase_and_monotone(session, total):
    phase = phase_of(session, total)
    if session > total:
        assert phase == UNKNOWN_PHASE
    else:
        assert phase in PHASES
        if session > 1:
            assert PHASES.index(phase_of(session - 1, total)) <= PHASES.index(phase)


def test_off_phase_follows_the_table():
    assert is_off_phase("interpersonal_inventory", "middle")
    assert is_off_phase("termination_discussion", "initial")
    assert not is_off_phase("encouragement_of_affect", "termination")
    assert not is_off_phase("role_play", UNKNOWN_PHASE)
    assert all(THEMES[t][1] in PHASES + (None,) for t in THEME_IDS)

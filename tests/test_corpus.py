import json
from collections import Counter

import pytest

from iptnlp.config import REPO_ROOT
from iptnlp.corpus import CorpusError, load_corpus, parse_notes
from iptnlp.taxonomy import AREAS, THEME_IDS

NOTES = sorted((REPO_ROOT / "data" / "notes").glob("*.txt"))


def test_authored_files_parse_and_match_the_built_corpus(corpus_records):
    records = load_corpus(NOTES)
    assert [r["note_id"] for r in records] == [r["note_id"] for r in corpus_records]
    assert [r["text"] for r in records] == [r["text"] for r in corpus_records]


def test_corpus_labels_are_valid(corpus_records):
    assert {r["area"] for r in corpus_records} == set(AREAS)
    assert all(set(r["themes"]) <= set(THEME_IDS) for r in corpus_records)
    assert min(Counter(r["area"] for r in corpus_records).values()) >= 100


def test_parser_names_file_and_line(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("### note_id=a area=grief format=soap population=adult\ntext\n"
                 "### note_id=b area=sadness format=soap population=adult\ntext\n")
    with pytest.raises(CorpusError, match=r"w.txt:3: area 'sadness' is not one of"):
        parse_notes(p)


def test_parser_computes_phase_unless_stated(tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("### note_id=a area=grief session=15 total_sessions=16 format=soap population=adult\nx\n"
                 "### note_id=b area=grief session=2 phase=middle format=soap population=adult\ny\n")
    a, b = parse_notes(p)
    assert (a["phase"], a["phase_stated"]) == ("termination", False)
    assert (b["phase"], b["phase_stated"]) == ("middle", True)


def test_corpus_file_is_jsonl_with_all_columns(corpus_records):
    from iptnlp.corpus import COLUMNS

    assert all(list(r) == list(COLUMNS) for r in corpus_records)
    json.dumps(corpus_records[0])

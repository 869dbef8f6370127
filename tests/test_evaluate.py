"""make evaluate's report on a small corpus: baselines, the shipped config, and folds of whole writers."""

import json

import pytest


@pytest.fixture(scope="module")
def writers_corpus(tmp_path_factory, corpus_records):
    """Notes of six writers, 40 each (the corpus's ``source`` names the writer)."""
    by_writer: dict[str, list] = {}
    for r in corpus_records:
        if r.get("source", "").startswith("written:") and len(by_writer.get(r["source"], [])) < 40:
            by_writer.setdefault(r["source"], []).append(r)
        if len(by_writer) == 6 and all(len(v) == 40 for v in by_writer.values()):
            break
    picked = [r for notes in list(by_writer.values())[:6] for r in notes]
    path = tmp_path_factory.mktemp("eval") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path, picked


def test_writers_of_needs_several_named_writers():
    from iptnlp.evaluate import writers_of

    assert writers_of([{"source": f"written:w{i % 3}"} for i in range(9)]) == [f"written:w{i % 3}" for i in range(9)]
    assert writers_of([{"source": "written:w1"}, {"source": "written:w2"}]) is None   # two writers
    assert writers_of([{"source": "written:w1"}, {}, {"source": "written:w3"}]) is None  # one unnamed
    notes = [{"source": f"written:w{i % 3}", "area": "grief" if i % 3 == 0 else "role_dispute"} for i in range(9)]
    assert writers_of(notes) is None          # grief from one writer only: its fold would teach no grief
    notes[1]["area"] = "grief"
    assert writers_of(notes) is not None
    notes[2]["source"] = "augmented:w1"
    assert writers_of(notes) is None          # an augmented copy would stay in training beside its held-out original


def test_theme_probabilities_by_writer_cover_every_note(writers_corpus):
    import numpy as np

    from iptnlp.evaluate import theme_proba_by_writer
    from iptnlp.model import ResolvedConfig
    from iptnlp.taxonomy import THEME_IDS

    _path, picked = writers_corpus
    said = []
    proba = theme_proba_by_writer(picked, ResolvedConfig.from_file(None), say=said.append)
    if proba is None:   # a theme missing from some fold's training writers: skipped, and said so
        assert any("skipped" in s for s in said)
    else:
        assert proba.shape == (len(picked), len(THEME_IDS)) and np.isfinite(proba).all()
        assert ((proba > 0) & (proba < 1)).all()
    assert theme_proba_by_writer(picked[:40], ResolvedConfig.from_file(None), say=said.append) is None
    assert "skipped" in said[-1]


def test_evaluation_reports_folds_of_whole_writers_and_says_when_external_is_absent(tmp_path, writers_corpus):
    from iptnlp.evaluate import run_evaluation, writers_of

    path, picked = writers_corpus
    said = []
    report = run_evaluation(path, tmp_path / "absent.jsonl", tmp_path / "out", ablation=False, say=said.append)
    assert any("not found" in s for s in said) and not report["external"]["present"]
    entry = report["systems"]["shipped config, cross-validated by writer"]
    assert entry["writers"] == len(set(writers_of(picked))) >= 3
    assert entry["grouped_cv"]["n"] == len(picked)
    # a model that saw none of a writer's notes still reads them better than the majority class
    assert entry["grouped_cv"]["macro_f1"] > report["systems"]["baseline: majority class"]["grouped_cv"]["macro_f1"]
    md = (tmp_path / "out" / "evaluation.md").read_text(encoding="utf-8")
    assert "cross-validated by writer" in md and "External dev set: not found" in md

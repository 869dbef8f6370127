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


def test_evaluation_reports_folds_of_whole_writers_and_says_when_external_is_absent(tmp_path, writers_corpus):
    from iptnlp.evaluate import run_evaluation, writers_of

    path, picked = writers_corpus
    said = []
    report = run_evaluation(path, tmp_path / "absent.jsonl", tmp_path / "out", ablation=False, say=said.append)
    assert any("not found" in s for s in said) and not report["external"]["present"]
    entry = report["systems"]["shipped config, cross-validated by writer"]
    assert entry["writers"] == len(set(writers_of(picked))) >= 3
    assert entry["grouped_cv"]["n"] == len(picked)
    # a model that saw none of a writer's notes reads them worse than the majority class would not
    assert entry["grouped_cv"]["macro_f1"] > report["systems"]["baseline: majority class"]["grouped_cv"]["macro_f1"]
    md = (tmp_path / "out" / "evaluation.md").read_text(encoding="utf-8")
    assert "cross-validated by writer" in md and "External dev set: not found" in md

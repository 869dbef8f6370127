"""Shared fixtures: a small model trained once per session on a slice of the corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iptnlp.config import REPO_ROOT

CORPUS = REPO_ROOT / "data" / "corpus.jsonl"
EXAMPLES = REPO_ROOT / "data" / "examples" / "notes.csv"
SHIPPED = REPO_ROOT / "models" / "ipt-area"


@pytest.fixture(scope="session")
def corpus_records() -> list[dict]:
    with open(CORPUS, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, corpus_records) -> Path:
    """240 corpus notes, 60 per area, as JSONL."""
    picked, per_area = [], {}
    for r in corpus_records:
        if per_area.get(r["area"], 0) < 60:
            per_area[r["area"]] = per_area.get(r["area"], 0) + 1
            picked.append(r)
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, small_corpus) -> Path:
    from iptnlp.train import train_model

    out = tmp_path_factory.mktemp("models") / "small"
    train_model([str(small_corpus)], out, cv_folds=0)
    return out


@pytest.fixture(scope="session")
def small_model(small_model_dir):
    from iptnlp.model import load_model

    return load_model(small_model_dir)


@pytest.fixture(scope="session")
def preprocessor():
    """The shipped preprocessing rules, with the plain feature set (words, negation marks)."""
    from iptnlp.config import FeatureConfig
    from iptnlp.model import ResolvedConfig

    return ResolvedConfig.from_file().preprocessor(FeatureConfig(negation=True, speaker=False, lexicon=None))


@pytest.fixture(scope="session")
def shipped_preprocessor():
    """The preprocessing and features exactly as configs/model.yml sets them."""
    from iptnlp.model import ResolvedConfig

    return ResolvedConfig.from_file().preprocessor()


@pytest.fixture()
def copy_model(tmp_path, small_model_dir):
    """A fresh copy of the small model folder a test may damage."""
    import shutil

    dest = tmp_path / "model"
    shutil.copytree(small_model_dir, dest)
    return dest

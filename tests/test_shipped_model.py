"""The model that ships in models/ipt-area: it loads, it matches the data, it reads plain cases."""

import numpy as np
import pytest

from iptnlp.config import REPO_ROOT
from iptnlp.model import library_versions, load_model, read_card, sha256_files
from iptnlp.taxonomy import AREAS

CORPUS = REPO_ROOT / "data" / "corpus.jsonl"
SHIPPED = REPO_ROOT / "models" / "ipt-area"


@pytest.fixture(scope="module")
def shipped():
    return load_model(SHIPPED)


def test_shipped_model_verifies_and_loads(shipped):
    assert shipped.card["labels"] == list(AREAS)
    assert shipped.card["versions"] == library_versions()


def test_data_unchanged_since_the_shipped_model_was_trained():
    card = read_card(SHIPPED)
    assert card["training_data"]["files"] == ["data/corpus.jsonl"]
    assert card["training_data"]["sha256"] == sha256_files([CORPUS]), (
        "data/corpus.jsonl changed after models/ipt-area was trained: run `make train` and commit the model")


def test_shipped_card_has_grouped_cv_metrics():
    m = read_card(SHIPPED)["metrics"]["grouped_cv"]
    assert set(m) >= {"macro_f1", "accuracy", "kappa", "per_class", "confusion", "brier", "ece"}
    assert m["n"] == read_card(SHIPPED)["training_data"]["n_notes"]


@pytest.mark.parametrize("text,area", [
    ("Since her husband died she keeps his coat on the hook and cannot open his letters.", "grief"),
    ("Another shouting match with her teenage son about curfew; each waits for the other to apologise.",
     "role_dispute"),
    ("Started a new job after the move and feels like an impostor in the new role.", "role_transition"),
    ("Has never had a friend to call; weekends pass without a word to anyone.", "interpersonal_deficits"),
])
def test_plain_cases(shipped, text, area):
    assert shipped.decide(shipped.predict_proba([text])) == [area]


def test_demo_examples_tag(shipped):
    import pandas as pd

    from iptnlp.tagger import tag

    df = pd.read_csv(REPO_ROOT / "data" / "examples" / "notes.csv")
    out = tag(df, shipped)
    assert len(out) == len(df)
    assert out["status"].tolist().count("error") == 1
    ok = out[out["status"] == "ok"]
    assert np.allclose(ok[[f"p_{a}" for a in AREAS]].sum(axis=1), 1.0)

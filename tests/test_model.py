import json

import numpy as np
import pytest

from iptnlp.errors import ModelError
from iptnlp.model import CARD_FILE, MODEL_FILE, TRUSTED_TYPES, library_versions, load_model, sha256_file
from iptnlp.taxonomy import AREAS

TEXTS = [
    "Since her husband died she keeps his coat on the hook and cannot open his letters.",
    "Another shouting match with her teenage son about curfew; neither backs down.",
    "Started a new job after the move and feels like an impostor in the new role.",
    "Has never had a friend to call; weekends pass without a word to anyone.",
]


def test_probabilities_are_valid(small_model):
    proba = small_model.predict_proba(TEXTS)
    assert proba.shape == (4, 4)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()


def test_save_load_identical_probabilities(small_model, small_model_dir):
    again = load_model(small_model_dir)
    assert np.array_equal(again.predict_proba(TEXTS), small_model.predict_proba(TEXTS))


def test_batch_equals_one_by_one(small_model, corpus_records):
    texts = [r["text"] for r in corpus_records[:30]]
    batch = small_model.predict_proba(texts)
    single = np.vstack([small_model.predict_proba([t]) for t in texts])
    assert np.allclose(batch, single, atol=1e-12)


def test_training_is_deterministic(tmp_path, small_corpus, small_model):
    from iptnlp.train import train_model

    train_model([str(small_corpus)], tmp_path / "again", cv_folds=0)
    again = load_model(tmp_path / "again")
    assert np.array_equal(again.predict_proba(TEXTS), small_model.predict_proba(TEXTS))


def test_abstain_threshold(small_model):
    proba = np.array([[0.4, 0.3, 0.2, 0.1], [0.9, 0.05, 0.03, 0.02]])
    assert small_model.decide(proba, threshold=0.5) == ["uncertain", "grief"]


def test_card_records_hashes_versions_and_labels(small_model_dir, small_corpus):
    card = json.loads((small_model_dir / CARD_FILE).read_text())
    assert card["labels"] == list(AREAS)
    assert card["model_sha256"] == sha256_file(small_model_dir / MODEL_FILE)
    assert card["versions"] == library_versions()
    assert card["training_data"]["n_notes"] == 240
    assert card["config"]["model"]["name"] == "ipt-area"


def test_one_changed_byte_is_refused(copy_model):
    path = copy_model / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        load_model(copy_model)
    assert str(err.value) == (
        f"{path} does not match the SHA-256 in its model card (the file changed after training or was "
        f"corrupted); refusing to load it. Restore the file or rebuild the model with `make train`")


def test_other_library_versions_are_refused(copy_model):
    card = json.loads((copy_model / CARD_FILE).read_text())
    card["versions"]["scikit-learn"] = "0.24.2"
    (copy_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError) as err:
        load_model(copy_model)
    installed = library_versions()["scikit-learn"]
    assert str(err.value) == (
        f"model {copy_model} was built with other library versions: scikit-learn 0.24.2 (installed: "
        f"{installed}). Install the pinned versions (`make setup`) or rebuild the model (`make train`)")


def test_untrusted_types_are_refused(copy_model):
    import skops.io as sio

    path = copy_model / MODEL_FILE
    from sklearn.tree import DecisionTreeClassifier

    sio.dump(DecisionTreeClassifier(), path)   # not on the trusted list
    card = json.loads((copy_model / CARD_FILE).read_text())
    card["model_sha256"] = sha256_file(path)
    (copy_model / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="contains types outside the trusted list"):
        load_model(copy_model)


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match="the folder does not exist; build one with `make train`"):
        load_model(tmp_path / "nothing")


def test_trusted_list_is_explicit():
    assert all("." in t for t in TRUSTED_TYPES)
    assert not any(t.startswith(("builtins.eval", "builtins.exec", "os.", "subprocess.")) for t in TRUSTED_TYPES)

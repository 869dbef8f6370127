"""The numpy scorer (``linear.npz``) predicts what the scikit-learn pipelines predict."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from iptnlp.linear import INFERENCE_FILE, Buckets, LinearScorer, NotExportable, export
from iptnlp.model import CARD_FILE, load_model


@pytest.fixture(scope="module")
def sample_features(small_model, corpus_records):
    texts = [r["text"] for r in corpus_records[::25]] + ["", "   ", "[NAME] [DATE]", "ok.\n\nT: hi\nC: hi"]
    docs = list(small_model.preprocessor.pipe(texts))
    return ([small_model.preprocessor.features(d) for d in docs], [small_model.theme_features(d) for d in docs])


def test_training_writes_the_inference_file_and_its_hash(small_model_dir):
    card = json.loads((small_model_dir / CARD_FILE).read_text())
    assert card["inference_file"] == INFERENCE_FILE
    assert (small_model_dir / INFERENCE_FILE).is_file() and len(card["inference_sha256"]) == 64


def test_scorer_equals_the_pipelines(small_model, sample_features):
    area_feats, theme_feats = sample_features
    scorer = LinearScorer.load(small_model.path / INFERENCE_FILE)
    expected = small_model.estimator.predict_proba(area_feats)
    assert np.allclose(scorer.area_proba(area_feats), expected, rtol=0, atol=1e-12)
    assert (scorer.area_proba(area_feats).argmax(1) == expected.argmax(1)).all()
    expected_themes = small_model.theme_estimator.predict_proba(theme_feats)
    assert np.allclose(scorer.theme_proba(theme_feats), expected_themes, rtol=0, atol=1e-12)


def test_buckets_equal_sklearn_hashing():
    from sklearn.feature_extraction.text import HashingVectorizer

    rng = random.Random(0)
    alphabet = "abcxyz_ éü漢🙂-'’0"
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))).replace(" ", "") or "a"
             for _ in range(3000)]
    for n in (2 ** 10, 2 ** 15, 2 ** 16, 7):
        vec = HashingVectorizer(token_pattern=r"\S+", lowercase=False, n_features=n, alternate_sign=False,
                                norm=None)
        expected = [int(vec.transform([w]).indices[0]) for w in words]
        buckets = Buckets(n)
        assert [buckets[w] for w in words] == expected
        # a batch with features seen and not seen before, repeated: the same columns in order
        fresh = Buckets(n)
        assert [fresh[w] for w in words[:100]] == expected[:100]
        batch = words[50:] + words[:60]
        assert fresh.columns(batch).tolist() == expected[50:] + expected[:60]
        assert fresh.columns(batch).tolist() == expected[50:] + expected[:60]
        assert fresh.columns([]).tolist() == []


def test_sparse_scores_equal_the_dense_product():
    from iptnlp.linear import _scores

    rng = np.random.default_rng(0)
    coef = rng.normal(size=(5, 40))
    dense = np.zeros((6, 40))
    dense[[0, 0, 2, 5, 5, 5], [3, 7, 3, 0, 39, 7]] = rng.uniform(0.1, 1, size=6)   # rows 1, 3, 4 empty
    rows, cols = np.nonzero(dense)
    got = _scores(coef, 6, rows, cols, dense[rows, cols])
    np.testing.assert_allclose(got, dense @ coef.T, rtol=1e-12, atol=1e-12)
    assert _scores(coef, 3, rows[:0], cols[:0], np.zeros(0)).shape == (3, 5)


def test_loading_for_tagging_does_not_import_sklearn(small_model_dir):
    """Cold start: tagging predicts from linear.npz, so neither scikit-learn nor skops is imported."""
    code = (f"import sys; from iptnlp.model import load_model; import pandas as pd; from iptnlp.tagger import tag; "
            f"m = load_model({str(small_model_dir)!r}); r = tag(pd.DataFrame({{'text': ['Argued with her "
            f"sister.']}}), m); assert r['status'][0] == 'ok', r; "
            f"print(sorted(k for k in ('sklearn', 'skops', 'scipy') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unexportable_config_predicts_through_sklearn(tmp_path, small_corpus):
    """A configuration the scorer cannot express (sigmoid calibration) writes no inference file and
    still tags, through scikit-learn."""
    from iptnlp.train import train_model

    cfg = (tmp_path / "model.yml")
    from iptnlp.config import CONFIG_DIR

    text = (CONFIG_DIR / "model.yml").read_text().replace("method: temperature", "method: sigmoid")
    text = text.replace("preprocess: preprocess.yml", f"preprocess: {CONFIG_DIR / 'preprocess.yml'}")
    text = text.replace("lexicon: lexicon.yml", f"lexicon: {CONFIG_DIR / 'lexicon.yml'}")
    cfg.write_text(text)
    out = tmp_path / "m"
    train_model([str(small_corpus)], out, config_path=str(cfg), cv_folds=0)
    assert not (out / INFERENCE_FILE).exists()
    assert json.loads((out / CARD_FILE).read_text())["inference_file"] is None
    model = load_model(out)
    assert model.scorer is None
    proba = model.predict_proba(["We argued again about the chores and who does what."])
    assert proba.shape == (1, 4) and abs(proba.sum() - 1) < 1e-9
    with pytest.raises(NotExportable):
        export(model.estimator)


def test_a_changed_inference_file_is_refused(copy_model):
    from iptnlp.errors import ModelError

    path = copy_model / INFERENCE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the SHA-256"):
        load_model(copy_model)


def test_scorer_runs_in_a_fresh_interpreter_without_pickle(small_model_dir):
    """The file holds plain arrays: it loads with allow_pickle=False."""
    code = (f"import numpy as np; f = np.load({str(small_model_dir / INFERENCE_FILE)!r}, allow_pickle=False); "
            f"print(all(f[k].dtype != object for k in f.files))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"


def test_the_one_hash_abs_cannot_take_goes_where_sklearn_puts_it(monkeypatch):
    """murmurhash can return -2**31, whose abs() overflows in C; scikit-learn gives it its own column."""
    for n in (2 ** 16, 1000, 7):
        buckets = Buckets(n)
        monkeypatch.setattr(buckets, "murmur", lambda feat: -(2 ** 31))
        # sklearn/feature_extraction/_hashing_fast.pyx: "equal to abs(-2**31) % n_features"
        assert buckets["anything"] == 2 ** 31 % n


def test_a_skops_file_changed_after_loading_is_refused_when_first_used(copy_model):
    from iptnlp.errors import ModelError

    model = load_model(copy_model)              # predicts from linear.npz; skops not read yet
    path = copy_model / "model.skops"
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the SHA-256"):
        _ = model.estimator


def test_inference_arrays_that_do_not_fit_are_refused(copy_model):
    """A linear.npz whose arrays do not fit together is a model error, not a crash at prediction."""
    arrays = dict(np.load(copy_model / INFERENCE_FILE, allow_pickle=False))
    arrays["theme_idf"] = arrays["theme_idf"][:-1]
    np.savez(copy_model / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="do not fit"):
        LinearScorer.load(copy_model / "bad.npz")

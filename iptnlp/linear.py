"""Prediction without scikit-learn: the fitted pipelines' arithmetic as plain numpy arrays.

The area and theme models are scikit-learn pipelines (hashed words -> TF-IDF -> logistic regression,
with temperature calibration for the area). Predicting with them costs little arithmetic but a large
import (scikit-learn and scipy.stats, about a second, plus skops to load them). At save time we export
what prediction needs -- hash sizes, IDF weights, coefficients, intercepts and the temperature -- to
``linear.npz`` (arrays only, loaded with ``allow_pickle=False``); tagging predicts from it with numpy.
A test checks its probabilities equal the scikit-learn pipelines' on the corpus.

Configurations this module cannot express (a vocabulary TF-IDF, character n-grams, sigmoid or
isotonic calibration) are not exported; such a model predicts through scikit-learn as before.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path

import numpy as np

INFERENCE_FILE = "linear.npz"
FORMAT = 1


class NotExportable(ValueError):
    """The estimator uses a step this module does not implement; predict through scikit-learn."""


_LEXICON_TOKEN = "(?:neg_)?lex_\\w+"
_LEX_WORD = re.compile(r"lex_\w+")


def _lexicon_tokens(text: str) -> list[str]:
    """``re.findall(_LEXICON_TOKEN, text)``, five times faster: a pattern that opens with a literal
    lets ``re`` jump from one "lex_" to the next, where the optional "neg_" makes it try every
    position. A "neg_" right before a match belongs to it (it cannot be inside the match before:
    that one ends where the word characters end)."""
    if "lex_" not in text:
        return []
    out = []
    for m in _LEX_WORD.finditer(text):
        start = m.start()
        if start >= 4 and text.startswith("neg_", start - 4):
            start -= 4
        out.append(text[start:m.end()])
    return out
_MIN_INT32 = -(2 ** 31)


def _hash():
    from murmurhash.mrmr import hash as murmur  # spaCy's dependency; equals sklearn's murmurhash3_32

    return murmur


def memo_lookup(table: dict, keys: list, compute, dtype, bound: int) -> np.ndarray:
    """``table[key]`` for each key, as an array of ``dtype``; a key not in the table is computed once
    and kept (the table is emptied first when it holds over ``bound`` keys). One ``map`` of the plain
    dict's ``get`` does the common case, where every key was seen before."""
    values = list(map(table.get, keys))
    try:
        return np.fromiter(values, dtype=dtype, count=len(values))
    except TypeError:   # a None: a key not seen yet
        if len(table) > bound:
            table.clear()
        for k, key in enumerate(keys):
            if values[k] is None:
                values[k] = table[key] = compute(key)
        return np.fromiter(values, dtype=dtype, count=len(values))


class Buckets:
    """Feature string -> hashed column, exactly as scikit-learn's ``HashingVectorizer``
    (``alternate_sign=False``), memoised in a plain dict: the same words come back note after note,
    and a plain dict's own lookup (``map(table.get, ...)``) is twice as fast as a dict subclass's."""

    BOUND = 200_000   # about 30 MB however many distinct words and pairs arrive

    def __init__(self, n_features: int):
        self.n = n_features
        self.murmur = _hash()
        self.table: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, feat: str) -> int:
        return int(self.columns([feat])[0])

    def columns(self, feats: list[str]) -> np.ndarray:
        """The column of each feature, in order (int64)."""
        return memo_lookup(self.table, feats, self._column, np.int64, self.BOUND)

    def _column(self, feat: str) -> int:
        h = self.murmur(feat)
        # sklearn/_hashing_fast.pyx: abs() of INT32_MIN overflows, so it has its own column
        return (2 ** 31 - 1 - (self.n - 1)) % self.n if h == _MIN_INT32 else abs(h) % self.n


def _ngrams(tokens: list[str], lo: int, hi: int) -> list[str]:
    """scikit-learn's ``_word_ngrams``: unigrams, then bigrams joined by a space, and so on."""
    if (lo, hi) == (1, 1):
        return tokens
    out = list(tokens) if lo == 1 else []
    for k in range(max(lo, 2), min(hi, len(tokens)) + 1):
        out += map(" ".join, zip(*(tokens[j:] for j in range(k))))
    return out


class _HashedTfidf:
    """``HashingVectorizer(norm=None)`` + ``TfidfTransformer`` as one sparse row per note."""

    def __init__(self, n_features: int, ngram: tuple[int, int], idf: np.ndarray | None, sublinear: bool,
                 norm: bool, pattern: str | None = None, weight: float = 1.0):
        self.buckets = Buckets(n_features)
        self.ngram = ngram
        self.idf = idf
        self.sublinear = sublinear
        self.norm = norm
        self.split = str.split if not pattern else _lexicon_tokens if pattern == _LEXICON_TOKEN \
            else re.compile(pattern).findall
        self.weight = weight

    def rows(self, feature_strings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, value) of every non-zero feature of the notes, sorted by row then column."""
        split = self.split
        lo, hi = self.ngram
        per_row = [_ngrams(split(s), lo, hi) for s in feature_strings]
        lengths = np.fromiter(map(len, per_row), dtype=np.int64, count=len(per_row))
        n = self.buckets.n
        cols = self.buckets.columns(list(chain.from_iterable(per_row)))
        keys = np.repeat(np.arange(len(per_row), dtype=np.int64), lengths) * n + cols
        keys, counts = np.unique(keys, return_counts=True)
        rows, cols = np.divmod(keys, n)
        vals = counts.astype(np.float64)
        if self.sublinear:
            vals = np.log(vals) + 1.0
        if self.idf is not None:
            vals *= self.idf[cols]
        if self.norm and len(vals):
            norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=len(per_row)))
            vals /= norms[rows]
        if self.weight != 1.0:
            vals *= self.weight
        return rows, cols, vals


def _scores(coef: np.ndarray, n_rows: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
    """``X @ coef.T`` (classes as columns) for the sparse X given as (row, column, value) triples: one
    weighted ``bincount`` per class, a gather from one contiguous coefficient row each (measured: half
    the time of gathering whole coefficient columns and summing them per row with ``reduceat``)."""
    out = np.zeros((n_rows, coef.shape[0])) if out is None else out
    if len(rows):
        for k in range(coef.shape[0]):
            out[:, k] += np.bincount(rows, weights=vals * coef[k, cols], minlength=n_rows)
    return out


class LinearScorer:
    """Area and theme probabilities from ``linear.npz``; see the module docstring."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        if int(arrays["format"]) != FORMAT:
            raise ValueError(f"inference file format {int(arrays['format'])}, expected {FORMAT}")
        self.classes = [str(c) for c in arrays["area_classes"]]
        words_n = int(arrays["area_words_n"])
        self.words = _HashedTfidf(words_n, tuple(arrays["area_ngram"]), arrays["area_idf"],
                                  bool(arrays["area_sublinear"]), True)
        lex_n = int(arrays["area_lexicon_n"])
        self.lexicon = _HashedTfidf(lex_n, (1, 1), None, False, True, _LEXICON_TOKEN,
                                    float(arrays["area_lexicon_weight"])) if lex_n else None
        self.offset = words_n
        self.coef = np.ascontiguousarray(arrays["area_coef"])
        self.intercept = arrays["area_intercept"]
        self.beta = float(arrays["area_beta"]) if "area_beta" in arrays else None
        n_classes = len(self.classes)
        if self.coef.shape != (n_classes, words_n + lex_n) or self.intercept.shape != (n_classes,) \
                or arrays["area_idf"].shape != (words_n,):
            raise ValueError("area arrays do not fit together")
        self.has_themes = "theme_coef" in arrays
        if self.has_themes:
            self.theme_words = _HashedTfidf(int(arrays["theme_words_n"]), tuple(arrays["theme_ngram"]),
                                            arrays["theme_idf"], bool(arrays["theme_sublinear"]), True)
            self.theme_coef = np.ascontiguousarray(arrays["theme_coef"])
            n_words = int(arrays["theme_words_n"])
            if self.theme_coef.ndim != 2 or self.theme_coef.shape[1] != n_words \
                    or arrays["theme_idf"].shape != (n_words,) \
                    or arrays["theme_intercept"].shape != (self.theme_coef.shape[0],):
                raise ValueError("theme arrays do not fit together")
            self.theme_intercept = arrays["theme_intercept"]

    # -- area -------------------------------------------------------------------------------------
    def area_decision(self, feature_strings: list[str]) -> np.ndarray:
        n = len(feature_strings)
        out = _scores(self.coef, n, *self.words.rows(feature_strings))
        if self.lexicon is not None:
            rows, cols, vals = self.lexicon.rows(feature_strings)
            _scores(self.coef, n, rows, cols + self.offset, vals, out)
        return out + self.intercept

    def area_proba(self, feature_strings: list[str]) -> np.ndarray:
        """Probabilities in ``self.classes`` order (as the pipeline's ``predict_proba``)."""
        d = self.area_decision(feature_strings)
        if self.beta is not None:
            d = self.beta * d
        return _softmax(d)

    def area_word_weights(self) -> tuple[np.ndarray, int]:
        """(weights, classes x hashed word features; number of hashed word features)."""
        return self.coef[:, :self.offset], self.offset

    # -- themes -----------------------------------------------------------------------------------
    def theme_proba(self, feature_strings: list[str]) -> np.ndarray:
        out = _scores(self.theme_coef, len(feature_strings), *self.theme_words.rows(feature_strings))
        return 1.0 / (1.0 + np.exp(-(out + self.theme_intercept)))

    @property
    def theme_words_n(self) -> int:
        return self.theme_words.buckets.n

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LinearScorer:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        coef = np.zeros((len(arrays["area_classes"]), int(arrays["area_n_columns"])))
        columns, values = arrays.pop("area_columns"), arrays.pop("area_values")
        if values.shape != (coef.shape[0], len(columns)) or (len(columns) and not (
                0 <= columns.min() and columns.max() < coef.shape[1])):
            raise ValueError("area coefficients do not fit their columns")
        coef[:, columns] = values
        arrays["area_coef"] = coef
        return cls(arrays)

    @staticmethod
    def save(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
        """Write the arrays (area coefficients stored by their non-zero columns) via a temp file."""
        path = Path(path)
        stored = dict(arrays)
        coef = stored.pop("area_coef")
        used = np.flatnonzero((coef != 0).any(axis=0))
        stored.update(area_columns=used, area_values=coef[:, used], area_n_columns=np.int64(coef.shape[1]))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **stored)
        tmp.replace(path)
        return path


def _softmax(d: np.ndarray) -> np.ndarray:
    e = np.exp(d - d.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def export(estimator, theme_estimator=None) -> dict[str, np.ndarray]:
    """The arrays of ``linear.npz`` for fitted pipelines, or ``NotExportable``."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline

    arrays: dict[str, np.ndarray] = {"format": np.int64(FORMAT)}
    vec = estimator.named_steps["vectorizer"]
    blocks = dict(vec.transformer_list) if isinstance(vec, FeatureUnion) else {"words": vec}
    weights = (vec.transformer_weights or {}) if isinstance(vec, FeatureUnion) else {}
    if set(blocks) - {"words", "lexicon"} or list(blocks)[0] != "words" or weights.get("words", 1.0) != 1.0:
        raise NotExportable("only hashed words and the lexicon block are exported")
    words = blocks["words"]
    if not isinstance(words, Pipeline):
        raise NotExportable("a vocabulary TF-IDF is not exported")
    hashing, tfidf = words.named_steps["hash"], words.named_steps["tfidf"]
    _check_hashing(hashing, r"\S+", norm=None)
    if tfidf.norm != "l2" or not tfidf.use_idf:
        raise NotExportable("TF-IDF must use IDF and l2 norm")
    arrays.update(area_words_n=np.int64(hashing.n_features), area_ngram=np.array(hashing.ngram_range),
                  area_idf=tfidf.idf_.astype(np.float64), area_sublinear=np.bool_(tfidf.sublinear_tf))
    lexicon = blocks.get("lexicon")
    if lexicon is not None:
        if not isinstance(lexicon, HashingVectorizer):
            raise NotExportable("lexicon block must be a HashingVectorizer")
        _check_hashing(lexicon, _LEXICON_TOKEN, norm="l2")
        if lexicon.ngram_range != (1, 1):
            raise NotExportable("lexicon block must be unigrams")
        arrays.update(area_lexicon_n=np.int64(lexicon.n_features),
                      area_lexicon_weight=np.float64(weights.get("lexicon", 1.0)))
    else:
        arrays.update(area_lexicon_n=np.int64(0), area_lexicon_weight=np.float64(1.0))
    clf = estimator.named_steps["classifier"]
    if hasattr(clf, "calibrated_classifiers_"):
        if clf.method != "temperature" or len(clf.calibrated_classifiers_) != 1:
            raise NotExportable("only one temperature-calibrated classifier is exported")
        inner = clf.calibrated_classifiers_[0]
        linear = inner.estimator
        # the calibrator's logistic regression was fitted on encoded labels (0..k-1)
        if list(linear.classes_) != list(range(len(clf.classes_))):
            raise NotExportable("unexpected class encoding inside the calibrated classifier")
        arrays["area_beta"] = np.float64(inner.calibrators[0].beta_)
    else:
        linear = clf
    if linear.coef_.shape[0] != len(clf.classes_) or len(clf.classes_) < 3:
        raise NotExportable("a multinomial logistic regression over the areas is expected")
    arrays.update(area_classes=np.array([str(c) for c in clf.classes_]),
                  area_coef=linear.coef_.astype(np.float64), area_intercept=linear.intercept_.astype(np.float64))
    if theme_estimator is not None:
        hashing = theme_estimator.named_steps["hash"]
        tfidf = theme_estimator.named_steps["tfidf"]
        ovr = theme_estimator.named_steps["classifier"]
        _check_hashing(hashing, r"\S+", norm=None)
        if tfidf.norm != "l2" or not tfidf.use_idf:
            raise NotExportable("theme TF-IDF must use IDF and l2 norm")
        if getattr(ovr.label_binarizer_, "y_type_", None) != "multilabel-indicator" or any(
                not hasattr(e, "coef_") for e in ovr.estimators_):
            raise NotExportable("a one-vs-rest logistic regression per theme is expected")
        arrays.update(theme_words_n=np.int64(hashing.n_features), theme_ngram=np.array(hashing.ngram_range),
                      theme_idf=tfidf.idf_.astype(np.float64), theme_sublinear=np.bool_(tfidf.sublinear_tf),
                      theme_coef=np.vstack([e.coef_[0] for e in ovr.estimators_]).astype(np.float64),
                      theme_intercept=np.array([e.intercept_[0] for e in ovr.estimators_], dtype=np.float64))
    return arrays


def _check_hashing(hashing, pattern: str, norm) -> None:
    if (hashing.analyzer != "word" or hashing.token_pattern != pattern or hashing.lowercase
            or hashing.alternate_sign or hashing.norm != norm or hashing.binary
            or hashing.preprocessor is not None or hashing.tokenizer is not None
            or hashing.stop_words is not None or hashing.strip_accents is not None):
        raise NotExportable("hashing vectorizer settings differ from the exported kind")

"""The area classifier: a scikit-learn Pipeline over preprocessed feature strings, and its artefacts.

``models/<name>/`` holds ``model.skops`` (the fitted estimator, only sklearn/numpy/scipy types) and
``model.json`` (the model card: labels, resolved config, library versions, SHA-256 of the training
data and of the model files, metrics), and ``linear.npz`` (the same models' arithmetic as numpy
arrays, which tagging predicts from: see ``iptnlp.linear``). Loading verifies the hashes and the
versions first and refuses skops files holding types outside an explicit trusted list; the skops
pipelines themselves are loaded (hash checked again, against that list) only when asked for, so
loading never runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from itertools import compress
from pathlib import Path

import numpy as np

from iptnlp.config import (
    REPO_ROOT,
    FeatureConfig,
    ModelConfig,
    PreprocessConfig,
    from_dict,
    load_lexicon,
    load_model_config,
    load_preprocess_config,
    resolve_path,
    to_dict,
)
from iptnlp.errors import ModelError
from iptnlp.preprocess import Preprocessor, features
from iptnlp.taxonomy import AREAS, THEME_IDS, UNCERTAIN

DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "ipt-area"
MODEL_FILE = "model.skops"
THEMES_FILE = "themes.skops"
CARD_FILE = "model.json"
#: libraries whose version must match the card's exactly for the model to load
PINNED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "skops", "spacy", "spacy-lookups-data")
#: every type a saved area model may contain; anything else is refused at save and at load
TRUSTED_TYPES = [
    "builtins.bool", "builtins.dict", "builtins.float", "builtins.int", "builtins.list",
    "builtins.NoneType", "builtins.slice", "builtins.str", "builtins.tuple", "builtins.type",
    "numpy.dtype", "numpy.float64", "numpy.int64", "numpy.ndarray",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.multiclass.OneVsRestClassifier",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.pipeline.FeatureUnion",
    "sklearn.pipeline.Pipeline",
]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("iptnlp",) + PINNED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[str | Path]) -> str:
    """One digest over several files' contents, in the order given (paths themselves excluded)."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_file(p).encode())
    return digest.hexdigest()


def build_estimator(cfg: ModelConfig):
    """The unfitted scikit-learn Pipeline the config describes."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    v = cfg.vectorizer
    if v.kind == "hashing":
        # No vocabulary is stored: the model file holds no words of the training notes, and it stays
        # small (a vocabulary dict costs skops ~600 bytes a term).
        words = Pipeline([
            ("hash", HashingVectorizer(token_pattern=r"\S+", lowercase=False,
                                       ngram_range=tuple(v.ngram_range), n_features=2 ** v.hash_bits,
                                       alternate_sign=False, norm=None, dtype=np.float64)),
            ("tfidf", TfidfTransformer(sublinear_tf=v.sublinear_tf)),
        ])
    else:
        words = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=tuple(v.ngram_range),
                                min_df=v.min_df, max_df=v.max_df, sublinear_tf=v.sublinear_tf,
                                max_features=v.max_features, dtype=np.float64)
    blocks = [("words", words)]
    if v.lexicon_weight:
        # lexicon hits as a block of their own, so a handful of category tokens is not drowned by
        # hundreds of word n-grams (weight = how much they count next to the words)
        blocks.append(("lexicon", HashingVectorizer(token_pattern=r"(?:neg_)?lex_\w+", lowercase=False,
                                                    n_features=2 ** 10, alternate_sign=False,
                                                    norm="l2", dtype=np.float64)))
    if v.char_ngrams:
        chars = Pipeline([
            ("hash", HashingVectorizer(analyzer="char_wb", ngram_range=tuple(v.char_ngrams),
                                       n_features=2 ** v.hash_bits, alternate_sign=False, norm=None,
                                       lowercase=False, dtype=np.float64)),
            ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ])
        blocks.append(("chars", chars))
    weights = {"lexicon": v.lexicon_weight} if v.lexicon_weight else None
    vectorizer = FeatureUnion(blocks, transformer_weights=weights) if len(blocks) > 1 else words
    c = cfg.classifier
    clf = LogisticRegression(C=c.C, class_weight=c.class_weight, max_iter=c.max_iter)
    if cfg.calibration.method != "none":
        clf = CalibratedClassifierCV(clf, method=cfg.calibration.method, cv=cfg.calibration.cv,
                                     ensemble=False)  # one classifier: a model a fifth the size
    return Pipeline([("vectorizer", vectorizer), ("classifier", clf)])


@dataclass(frozen=True)
class ResolvedConfig:
    """A model config with everything it refers to read in, as stored in the model card."""

    model: ModelConfig
    preprocess: PreprocessConfig
    lexicon: dict[str, tuple[str, ...]] | None

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> ResolvedConfig:
        model = load_model_config(path)
        pre = load_preprocess_config(resolve_path(path, model.preprocess))
        lexicon = load_lexicon(resolve_path(path, model.features.lexicon)) if model.features.lexicon else None
        return cls(model, pre, lexicon)

    @classmethod
    def from_card(cls, data: dict) -> ResolvedConfig:
        lexicon = data.get("lexicon")
        return cls(from_dict(ModelConfig, data["model"], "model card config.model"),
                   from_dict(PreprocessConfig, data["preprocess"], "model card config.preprocess"),
                   {k: tuple(v) for k, v in lexicon.items()} if lexicon else None)

    def to_card(self) -> dict:
        return {"model": to_dict(self.model), "preprocess": to_dict(self.preprocess),
                "lexicon": {k: list(v) for k, v in self.lexicon.items()} if self.lexicon else None}

    def theme_features(self) -> FeatureConfig:
        """Features of the theme model: as the area model's, with plans marked and no turn copies."""
        from dataclasses import replace

        return replace(self.model.features, hypothetical=self.model.themes.hypothetical, speaker=False)

    def preprocessor(self, features: FeatureConfig | None = None) -> Preprocessor:
        return Preprocessor(self.preprocess, features or self.model.features, self.lexicon,
                            batch_size=self.model.batch_size)


class AreaModel:
    """A fitted area classifier with its preprocessing; ``predict_proba`` takes raw note texts.

    Prediction runs on ``scorer`` (``iptnlp.linear``: numpy only) where the model could be exported
    to it; the scikit-learn pipelines themselves are loaded from the model folder only when
    something asks for ``estimator`` or ``theme_estimator`` (evaluation, retraining, inspection).
    """

    def __init__(self, estimator, config: ResolvedConfig, card: dict | None = None,
                 path: Path | None = None, theme_estimator=None, *, scorer=None, has_themes: bool | None = None):
        self._estimator = estimator
        self._theme_estimator = theme_estimator
        self.config = config
        self.card = card or {}
        self.path = path
        self.preprocessor = config.preprocessor()
        if scorer is None and estimator is not None:
            scorer = _scorer_of(estimator, theme_estimator)
        self.scorer = scorer
        self.has_themes = theme_estimator is not None if has_themes is None else has_themes
        classes = list(scorer.classes if scorer is not None else estimator.classes_)
        if sorted(classes) != sorted(AREAS):
            raise ModelError(f"model labels {classes} are not the four IPT areas {list(AREAS)}")
        self._order = [classes.index(a) for a in AREAS]
        self._coef = None
        self._theme_config: tuple | None = None   # (config it was made from, theme FeatureConfig)

    @property
    def estimator(self):
        """The scikit-learn area pipeline (loaded from the model folder on first use)."""
        if self._estimator is None:
            self._estimator = _load_trusted(Path(self.path) / self.card.get("model_file", MODEL_FILE),
                                            self.card.get("model_sha256"))
        return self._estimator

    @property
    def theme_estimator(self):
        """The scikit-learn theme pipeline, or None without a theme model."""
        if self._theme_estimator is None and self.has_themes:
            self._theme_estimator = _load_trusted(Path(self.path) / self.card["themes_file"],
                                                  self.card.get("themes_sha256"))
        return self._theme_estimator

    @property
    def abstain_threshold(self) -> float:
        return self.config.model.abstain_threshold

    def predict_proba_features(self, feature_strings: list[str]) -> np.ndarray:
        """Probabilities (rows sum to 1) in ``AREAS`` order, from preprocessed feature strings."""
        if not feature_strings:
            return np.zeros((0, len(AREAS)))
        if self.scorer is not None:
            proba = self.scorer.area_proba(feature_strings)[:, self._order]
        else:
            proba = self.estimator.predict_proba(feature_strings)[:, self._order]
        return proba / proba.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.predict_proba_features(self.preprocessor.transform(texts))

    @property
    def theme_config(self) -> FeatureConfig:
        """``config.theme_features()``, made once (``dataclasses.replace`` costs more per note than
        reading the note's cached features)."""
        if self._theme_config is None or self._theme_config[0] is not self.config:
            self._theme_config = (self.config, self.config.theme_features())
        return self._theme_config[1]

    def theme_features(self, doc) -> str:
        return features(doc, self.theme_config)

    def predict_themes(self, docs: list) -> np.ndarray:
        """Theme probabilities (rows: docs, columns: THEME_IDS); empty without a theme model."""
        if not self.has_themes or not docs:
            return np.zeros((len(docs), len(THEME_IDS)))
        feats = [self.theme_features(d) for d in docs]
        if self.scorer is not None and self.scorer.has_themes:
            return self.scorer.theme_proba(feats)
        return self.theme_estimator.predict_proba(feats)

    def area_evidence(self, doc, area: str, top: int = 5) -> list[tuple[int, int, str]]:
        """The note's words that push most towards ``area``: (start, end, text), in text order.

        Reads the linear model's weight of each word's hashed feature, so it needs no vocabulary.
        """
        if self._coef is None:
            if self.scorer is not None:
                weights, n = self.scorer.area_word_weights()
                self._coef = weights[self._order], n
            else:
                self._coef = _word_weights(self.estimator)
        weights, n_features = self._coef
        return _top_words(doc, self.preprocessor.features_config, weights[AREAS.index(area)], n_features, top)

    def theme_evidence(self, doc, theme: str, top: int = 3) -> list[tuple[int, int, str]]:
        """The note's words that push most towards ``theme`` in the learned theme model."""
        if not self.has_themes:
            return []
        if self.scorer is not None and self.scorer.has_themes:
            row, n_features = self.scorer.theme_coef[THEME_IDS.index(theme)], self.scorer.theme_words_n
        else:
            ovr = self.theme_estimator.named_steps["classifier"].estimators_[THEME_IDS.index(theme)]
            row, n_features = ovr.coef_[0], self.theme_estimator.named_steps["hash"].n_features
        return _top_words(doc, self.theme_config, row, n_features, top)

    def decide(self, proba: np.ndarray, threshold: float | None = None) -> list[str]:
        """The area of each row, or ``uncertain`` when its top probability is under the threshold."""
        threshold = self.abstain_threshold if threshold is None else threshold
        top = proba.argmax(axis=1)
        return [AREAS[k] if proba[i, k] >= threshold else UNCERTAIN for i, k in enumerate(top)]


_PLACEHOLDER_FEATURES = tuple(f"ph_{k}" for k in ("person", "date", "location", "age", "redacted", "other",
                                                   "contact", "id"))


_BUCKETS: dict = {}   # n_features -> Buckets (hashed column of a feature, as HashingVectorizer)


def _buckets(n_features: int):
    buckets = _BUCKETS.get(n_features)
    if buckets is None:
        from iptnlp.linear import Buckets

        buckets = _BUCKETS[n_features] = Buckets(n_features)
    return buckets


def _scorer_of(estimator, theme_estimator):
    """The numpy scorer of fitted pipelines, or None where their configuration is not exportable."""
    from iptnlp.linear import LinearScorer, NotExportable, export

    try:
        return LinearScorer(export(estimator, theme_estimator))
    except NotExportable:
        return None


class _EvidenceColumns:
    """Feature string -> its hashed column, or -1 for a placeholder feature (not evidence a reader can
    use); memoised per hash size, like ``Buckets``."""

    def __init__(self, n_features: int):
        self.buckets = _buckets(n_features)
        self.table: dict[str, int] = {}

    def columns(self, feats: list[str]) -> np.ndarray:
        from iptnlp.linear import memo_lookup

        return memo_lookup(self.table, feats, self._column, np.int64, self.buckets.BOUND)

    def _column(self, feat: str) -> int:
        return -1 if feat.endswith(_PLACEHOLDER_FEATURES) else self.buckets[feat]


_EVIDENCE_COLUMNS: dict[int, _EvidenceColumns] = {}


def _top_words(doc, cfg, row: np.ndarray, n_features: int, top: int) -> list[tuple[int, int, str]]:
    """Tokens whose hashed features (under feature config ``cfg``) weigh most (positively) in ``row``;
    function words and placeholders are not evidence a reader can use."""
    # the candidate tokens and their hashed columns depend only on the Doc and the feature config:
    # kept on the Doc, so each theme's evidence reuses them
    key = ("iptnlp_evidence", cfg, n_features)
    cached = doc.user_data.get(key)
    if cached is None:
        from iptnlp.preprocess import token_features, word_table

        columns_of = _EVIDENCE_COLUMNS.get(n_features)
        if columns_of is None:
            columns_of = _EVIDENCE_COLUMNS[n_features] = _EvidenceColumns(n_features)
        index, feats = token_features(doc, cfg)
        table = word_table(doc)
        content = table.content if index is table.index else \
            list(map(dict(zip(table.index, table.content)).__getitem__, index))
        tokens = np.fromiter(compress(index, content), dtype=np.int64)
        cols = columns_of.columns(list(compress(feats, content)))
        candidate = cols >= 0
        cached = doc.user_data[key] = (tokens[candidate].tolist(), cols[candidate])
    tokens, cols = cached
    weights = row[cols]
    # each token by its heaviest feature, heaviest first (ties: in text order), positive weights only:
    # one stable sort of all the weights, read until the first that is not positive (the positive
    # ones sort first)
    order = np.argsort(-weights, kind="stable").tolist()
    weights = weights.tolist()
    best: list[int] = []
    for k in order:
        if weights[k] <= 0:
            break
        i = tokens[k]
        if i not in best:
            best.append(i)
            if len(best) == top:
                break
    spans = []
    for i in best:
        tok = doc[i]
        text, start = tok.text, tok.idx
        spans.append((start, start + len(text), text))
    return sorted(spans)


def build_theme_estimator(cfg: ModelConfig):
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import Pipeline

    t = cfg.themes
    return Pipeline([
        ("hash", HashingVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=tuple(t.ngram_range),
                                   n_features=2 ** t.hash_bits, alternate_sign=False, norm=None,
                                   dtype=np.float64)),
        ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ("classifier", OneVsRestClassifier(LogisticRegression(C=t.C, class_weight="balanced",
                                                              max_iter=cfg.classifier.max_iter))),
    ])


def fit_themes(features: list[str], themes: list[list[str]], config: ResolvedConfig):
    """Fit the multi-label theme model on theme feature strings and per-note theme lists."""
    y = np.array([[t in row for t in THEME_IDS] for row in themes], dtype=int)
    missing = [t for j, t in enumerate(THEME_IDS) if not y[:, j].any() or y[:, j].all()]
    if missing:
        raise ModelError(f"training data never (or always) shows themes {missing}; the theme model "
                         f"needs examples with and without each theme (or set themes.enabled: false)")
    return build_theme_estimator(config.model).fit(features, y)


def _word_weights(estimator) -> tuple[np.ndarray, int]:
    """(weights in AREAS order x hashed word features, number of hashed word features)."""
    clf = estimator.named_steps["classifier"]
    linear = clf.calibrated_classifiers_[0].estimator if hasattr(clf, "calibrated_classifiers_") else clf
    vec = estimator.named_steps["vectorizer"]
    words = vec.transformer_list[0][1] if hasattr(vec, "transformer_list") else vec
    n = words.named_steps["hash"].n_features if hasattr(words, "named_steps") else len(words.vocabulary_)
    # the calibrator fits its inner model on encoded labels; the outer classes_ give their order
    order = [list(clf.classes_).index(a) for a in AREAS]
    return linear.coef_[order, :n], n


def fit(features: list[str], labels: list[str], config: ResolvedConfig, groups: list[str] | None = None):
    """Fit the configured estimator on feature strings; deterministic for the same inputs.

    With ``groups`` (course ids), the calibration's internal folds keep each course on one side, so
    the calibrator learns from notes of courses the classifier has not seen, as in real use.
    """
    unknown = sorted(set(labels) - set(AREAS))
    if unknown:
        raise ModelError(f"unknown area labels {unknown}; expected {list(AREAS)}")
    missing = [a for a in AREAS if a not in set(labels)]
    if missing:
        raise ModelError(f"training data has no notes labelled {missing}; every area needs examples")
    estimator = build_estimator(config.model)
    calibrated = estimator.named_steps["classifier"]
    n_folds = getattr(calibrated, "cv", None)
    if groups is not None and isinstance(n_folds, int):
        from sklearn.model_selection import StratifiedGroupKFold

        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=config.model.seed)
        calibrated.cv = list(splitter.split(features, labels, groups))
    estimator.fit(features, labels)
    if n_folds is not None:
        calibrated.cv = n_folds   # the folds were for fitting; the saved model keeps only their number
    _drop_stop_words(estimator)
    return estimator


def _drop_stop_words(estimator) -> None:
    """Forget the terms the vectorizers pruned: not needed to predict, and they are raw note words."""
    for step in estimator.named_steps.values():
        parts = [p for _, p in step.transformer_list] if hasattr(step, "transformer_list") else [step]
        for part in parts:
            if hasattr(part, "stop_words_"):
                delattr(part, "stop_words_")


def save_model(model_dir: str | Path, estimator, config: ResolvedConfig, *, data_files: list[Path],
               n_notes: int, label_counts: dict[str, int], metrics: dict | None,
               theme_estimator=None) -> dict:
    """Write ``model.skops`` (and ``themes.skops``), ``linear.npz`` where the config can be exported,
    and the model card; only trusted types."""

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = _dump_trusted(estimator, model_dir / MODEL_FILE)
    themes_path = _dump_trusted(theme_estimator, model_dir / THEMES_FILE) if theme_estimator else None
    inference_path = _save_inference(model_dir, estimator, theme_estimator)
    card = {
        "name": config.model.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": list(AREAS),
        "config": config.to_card(),
        "versions": library_versions(),
        "training_data": {
            "files": [_display_path(p) for p in data_files],
            "sha256": sha256_files(data_files),
            "n_notes": n_notes,
            "label_counts": label_counts,
        },
        "model_file": MODEL_FILE,
        "model_sha256": sha256_file(model_path),
        "themes_file": THEMES_FILE if themes_path else None,
        "themes_sha256": sha256_file(themes_path) if themes_path else None,
        "theme_labels": list(THEME_IDS) if themes_path else None,
        # what tagging predicts from (numpy only; see iptnlp.linear), when the config can be exported
        "inference_file": inference_path.name if inference_path else None,
        "inference_sha256": sha256_file(inference_path) if inference_path else None,
        "metrics": metrics or {},
    }
    if not themes_path and (model_dir / THEMES_FILE).exists():
        (model_dir / THEMES_FILE).unlink()
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return card


def _save_inference(model_dir: Path, estimator, theme_estimator) -> Path | None:
    from iptnlp.linear import INFERENCE_FILE, LinearScorer, NotExportable, export

    path = model_dir / INFERENCE_FILE
    try:
        return LinearScorer.save(path, export(estimator, theme_estimator))
    except NotExportable:
        if path.exists():
            path.unlink()
        return None


def _skops_io():
    """``skops.io``, imported without its import-time scan of every scikit-learn estimator (about
    1 s of cold start). The scan only builds skops' own default trust list; we never rely on it:
    every file is checked against ``TRUSTED_TYPES`` before loading and loaded with that explicit
    list, so skipping the scan leaves skops' defaults empty, which is stricter, not looser."""
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    scan = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        import skops.io as sio
    finally:
        sklearn.utils.all_estimators = scan
    return sio


def _dump_trusted(obj, path: Path) -> Path:
    """Save with skops, refusing any type outside ``TRUSTED_TYPES``; written via a temp file."""
    sio = _skops_io()

    blob = sio.dumps(obj, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    untrusted = sorted(set(sio.get_untrusted_types(data=blob)) - set(TRUSTED_TYPES))
    if untrusted or not _only_trusted(blob):
        raise ModelError(f"the estimator holds types outside the trusted list: {untrusted}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return path


def _only_trusted(blob: bytes) -> bool:
    import io

    return types_in_file(io.BytesIO(blob)) <= set(TRUSTED_TYPES)


def _display_path(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return Path(p).name


def read_card(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_FILE
    if not model_dir.is_dir():
        raise ModelError(f"no model at {model_dir}: the folder does not exist; build one with `make train`")
    if not card_path.is_file():
        raise ModelError(f"{model_dir} has no {CARD_FILE} model card; rebuild it with `make train`")
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{card_path} is not valid JSON; restore it or rebuild with `make train`") from None


def _changed(path: Path) -> ModelError:
    return ModelError(f"{path} does not match the SHA-256 in its model card (the file changed after training "
                      f"or was corrupted); refusing to load it. Restore the file or rebuild the model with "
                      f"`make train`")


def verify(model_dir: str | Path, card: dict) -> Path:
    """Check the model file's hash and the library versions against the card."""
    model_path = Path(model_dir) / card.get("model_file", MODEL_FILE)
    files = [(model_path, card.get("model_sha256"))]
    if card.get("themes_file"):
        files.append((Path(model_dir) / card["themes_file"], card.get("themes_sha256")))
    if card.get("inference_file"):
        files.append((Path(model_dir) / card["inference_file"], card.get("inference_sha256")))
    for path, expected in files:
        if not path.is_file():
            raise ModelError(f"{path} is missing; rebuild the model with `make train`")
        if sha256_file(path) != expected:
            raise _changed(path)
    installed = library_versions()
    wrong = [f"{lib} {card['versions'].get(lib)} (installed: {installed[lib]})"
             for lib in PINNED_LIBRARIES if card.get("versions", {}).get(lib) != installed[lib]]
    if wrong:
        raise ModelError(f"model {model_dir} was built with other library versions: {', '.join(wrong)}. "
                         f"Install the pinned versions (`make setup`) or rebuild the model (`make train`)")
    return model_path


def types_in_file(model_path: str | Path) -> set[str]:
    """Every ``module.Class`` named in a skops file's schema, read without loading anything."""
    try:
        with zipfile.ZipFile(model_path) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{model_path} is not a readable skops file; rebuild the model with "
                         f"`make train`") from None
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node and "__module__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load_model(model_dir: str | Path | None = None) -> AreaModel:
    """Load and verify a model folder (default: the shipped ``models/ipt-area``)."""
    model_dir = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    card = read_card(model_dir)
    model_path = verify(model_dir, card)
    config = ResolvedConfig.from_card(card["config"])
    has_themes = bool(card.get("themes_file"))
    if card.get("inference_file"):
        # predicting needs only the exported arrays: no scikit-learn or skops import (cold start)
        from iptnlp.linear import LinearScorer

        # the skops files are loaded only if asked for, but a model holding untrusted types is
        # refused now, as before (their schema is read without loading anything)
        for skops_file in [model_path] + ([Path(model_dir) / card["themes_file"]] if has_themes else []):
            _refuse_untrusted(skops_file)
        path = Path(model_dir) / card["inference_file"]
        try:
            scorer = LinearScorer.load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path} cannot be read ({exc.__class__.__name__}); rebuild the model with "
                             f"`make train`") from None
        if scorer.has_themes != has_themes:
            raise ModelError(f"{path} does not match its model card (theme model); rebuild the model "
                             f"with `make train`")
        return AreaModel(None, config, card, model_dir, scorer=scorer, has_themes=has_themes)
    estimator = _load_trusted(model_path)
    themes = _load_trusted(Path(model_dir) / card["themes_file"]) if has_themes else None
    return AreaModel(estimator, config, card, model_dir, themes)


def _refuse_untrusted(path: Path, blob: bytes | None = None) -> None:
    """Refuse a skops file (or its bytes, already read) naming types outside ``TRUSTED_TYPES``."""
    import io

    untrusted = sorted(types_in_file(path if blob is None else io.BytesIO(blob)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelError(f"{path} contains types outside the trusted list ({', '.join(untrusted)}); "
                         f"refusing to load it. Rebuild the model with `make train`")


def _load_trusted(path: Path, sha256: str | None = None):
    """Load a skops file whose every type is on ``TRUSTED_TYPES`` (skops alone trusts all of sklearn).
    With ``sha256``, the bytes loaded are the bytes checked: a file changed since ``load_model``
    verified it is refused."""
    from sklearn.pipeline import Pipeline

    sio = _skops_io()
    from skops.io.exceptions import UntrustedTypesFoundException

    blob = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise _changed(path)
    _refuse_untrusted(path, blob)
    try:
        estimator = sio.loads(blob, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise ModelError(f"{path} contains types outside the trusted list ({exc}); refusing to "
                         f"load it. Rebuild the model with `make train`") from None
    except Exception as exc:  # a corrupt archive surfaces as zip/key errors
        raise ModelError(f"{path} cannot be read ({exc.__class__.__name__}); "
                         f"rebuild the model with `make train`") from None
    if not isinstance(estimator, Pipeline):
        raise ModelError(f"{path} does not hold a classifier pipeline; rebuild the model with `make train`")
    return estimator

"""Configuration files -> frozen dataclasses, with every problem reported at once.

``configs/model.yml`` holds the classifier's hyperparameters and names the preprocessing rules
(``configs/preprocess.yml``); paths inside a config are relative to the config file. Unknown keys and
wrong types are errors, all of them listed with their location (``file: key.subkey``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iptnlp.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_MODEL_CONFIG = CONFIG_DIR / "model.yml"


@dataclass(frozen=True)
class NegationRules:
    window: int = 6
    pre_cues: tuple[str, ...] = ()
    post_cues: tuple[str, ...] = ()
    terminators: tuple[str, ...] = ()


@dataclass(frozen=True)
class HypotheticalRules:
    cues: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpeakerRules:
    therapist: tuple[str, ...] = ()
    client: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreprocessConfig:
    placeholder_kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)
    bare_mask_kind: str = "redacted"
    lemma_overrides: dict[str, str] = field(default_factory=dict)
    negation: NegationRules = NegationRules()
    hypothetical: HypotheticalRules = HypotheticalRules()
    speakers: SpeakerRules = SpeakerRules()
    sections: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureConfig:
    negation: bool = True          # negated lemmas become neg_<lemma>
    hypothetical: bool = False     # hypothetical lemmas become hyp_<lemma>
    speaker: bool = False          # client-turn lemmas also emitted as c_<lemma>
    lexicon: str | None = None     # path of a domain lexicon (category -> terms); None = off
    numbers: bool = False          # keep digits; False maps every number to one token


@dataclass(frozen=True)
class VectorizerConfig:
    kind: str = "hashing"          # hashing (no stored vocabulary) | tfidf (vocabulary kept)
    hash_bits: int = 18            # hashing: 2**hash_bits feature columns
    ngram_range: tuple[int, int] = (1, 2)
    min_df: int = 2
    max_df: float = 0.95
    sublinear_tf: bool = True
    max_features: int | None = 60000
    char_ngrams: tuple[int, int] | None = None   # e.g. (3, 5) adds character n-grams of lemmas
    lexicon_weight: float | None = None          # lexicon hits as their own block, with this weight


@dataclass(frozen=True)
class ClassifierConfig:
    C: float = 4.0
    class_weight: str | None = "balanced"
    max_iter: int = 3000


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "temperature"   # temperature | sigmoid | isotonic | none
    cv: int = 5


@dataclass(frozen=True)
class ThemeModelConfig:
    """The learned multi-label theme model (one logistic regression per theme)."""

    enabled: bool = True
    threshold: float = 0.5          # a theme is found when its probability reaches this
    # per-theme thresholds where one differs from ``threshold`` (chosen out-of-fold: make evaluate-audit)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict, hash=False)
    # in the phase where a theme is EXPECTED (``taxonomy.THEMES``: a contract in the initial phase,
    # a progress review in termination) it is found at this probability when lower than its threshold:
    # there the supervisor asks whether it was done at all, and the prior is high
    expected_phase_thresholds: dict[str, float] = dataclasses.field(default_factory=dict, hash=False)
    C: float = 8.0
    ngram_range: tuple[int, int] = (1, 2)
    hash_bits: int = 16
    hypothetical: bool = True       # planned work ("will role-play") kept apart from work done
    rules_join: tuple[str, ...] = ()  # themes whose rule hits are found too (where rules are precise)
    # a theme outside the phases where it belongs is rare, so it needs more evidence: this probability
    # from the learned model, or a rule hit (rules_join) with at least off_phase_rule_threshold
    off_phase_threshold: float = 0.8
    off_phase_rule_threshold: float = 0.2


@dataclass(frozen=True)
class ModelConfig:
    name: str = "ipt-area"
    preprocess: str = "preprocess.yml"
    features: FeatureConfig = FeatureConfig()
    vectorizer: VectorizerConfig = VectorizerConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    themes: ThemeModelConfig = ThemeModelConfig()
    abstain_threshold: float = 0.0
    batch_size: int = 256
    seed: int = 0


def _coerce(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """Turn a YAML value into the dataclass field's type, or record a problem."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return hint()
        return _build(hint, value, where, problems)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, where, problems)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return ()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]", problems) for i, v in enumerate(value))
        if len(value) != len(args):
            problems.append(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(value)
        return tuple(_coerce(v, a, f"{where}[{i}]", problems) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return {}
        return {str(k): _coerce(v, args[1], f"{where}.{k}", problems) for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, bool) and type(value) is hint:
        return value
    problems.append(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def _build(cls: type, data: dict, where: str, problems: list[str]):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, problems)
              for k, v in data.items() if k in names}
    return cls(**kwargs)


def from_dict(cls: type, data: dict | None, source: str = "config"):
    """Build dataclass ``cls`` from a mapping; raise ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, data or {}, "", problems)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(p.lstrip(": ") for p in problems))
    return obj


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        # libyaml's parser where PyYAML has it (same safe constructor, ten times faster: the identifier
        # guard's name lists are read at every start)
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); check indentation") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data or {}


def load_model_config(path: str | Path | None = None) -> ModelConfig:
    path = Path(path) if path else DEFAULT_MODEL_CONFIG
    cfg = from_dict(ModelConfig, _read_yaml(path), str(path))
    if cfg.calibration.method not in ("temperature", "sigmoid", "isotonic", "none"):
        raise ConfigError(f"{path}: calibration.method must be temperature, sigmoid, isotonic or none")
    if cfg.vectorizer.kind not in ("hashing", "tfidf"):
        raise ConfigError(f"{path}: vectorizer.kind must be hashing or tfidf")
    if not 0.0 <= cfg.abstain_threshold < 1.0:
        raise ConfigError(f"{path}: abstain_threshold must be in [0, 1)")
    from iptnlp.taxonomy import THEME_IDS, THEMES

    for name in ("thresholds", "expected_phase_thresholds"):
        values = getattr(cfg.themes, name)
        unknown = sorted(set(values) - set(THEME_IDS))
        if unknown:
            raise ConfigError(f"{path}: themes.{name} names unknown themes {unknown}; the themes are "
                              f"{', '.join(THEME_IDS)}")
        bad = sorted(t for t, v in values.items() if not 0.0 < v <= 1.0)
        if bad:
            raise ConfigError(f"{path}: themes.{name} must be in (0, 1]; check {bad}")
    no_phase = sorted(t for t in cfg.themes.expected_phase_thresholds if t in THEMES and THEMES[t][1] is None)
    if no_phase:
        raise ConfigError(f"{path}: themes.expected_phase_thresholds names themes not expected in any one "
                          f"phase {no_phase} (shared/IPT.md); give them a threshold in themes.thresholds")
    return cfg


def resolve_path(config_path: str | Path | None, relative: str) -> Path:
    base = Path(config_path).parent if config_path else CONFIG_DIR
    return (base / relative).resolve()


def load_preprocess_config(path: str | Path) -> PreprocessConfig:
    path = Path(path)
    return from_dict(PreprocessConfig, _read_yaml(path), str(path))


def load_lexicon(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A domain lexicon's categories: category -> words or phrases (lower-case)."""
    return _lexicon_parts(path)[0]


def load_lexicon_areas(path: str | Path) -> dict[str, str]:
    """The lexicon's category -> area map (used by the keyword baseline only)."""
    return _lexicon_parts(path)[1]


def _lexicon_parts(path: str | Path) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    from iptnlp.taxonomy import AREAS

    path = Path(path)
    data = _read_yaml(path)
    problems = [f"unknown key {k!r} (known: areas, categories)" for k in data if k not in ("categories", "areas")]
    categories = data.get("categories") or {}
    areas = data.get("areas") or {}
    problems += [f"categories.{k}: expected a list of terms" for k, v in categories.items()
                 if not isinstance(v, list)]
    problems += [f"areas.{k}: {v!r} is not an area or not a category" for k, v in areas.items()
                 if v not in AREAS or k not in categories]
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return ({str(k): tuple(str(t).lower() for t in v) for k, v in categories.items()},
            {str(k): str(v) for k, v in areas.items()})


def to_dict(obj) -> dict:
    """A dataclass config as plain JSON-ready data (tuples become lists)."""
    return dataclasses.asdict(obj)

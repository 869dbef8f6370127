"""The spaCy preprocessing stage: note text -> Docs that know placeholders, negation, plans, turns.

Built on ``spacy.blank("en")`` (no downloaded pipeline). Components of ours, in order:

- ``iptnlp_placeholders``: every de-identification placeholder ([NAME], <PERSON>, [**Name**], XXX,
  *** ...) becomes ONE token whose NORM is its kind (``ph_person``, ``ph_date`` ...).
- ``iptnlp_lemmas``: lookup lemmas of the LOWER-cased word (the lookup table is case-sensitive).
- ``sentencizer`` then ``iptnlp_structure``: line breaks start sentences; line-opening labels give
  speaker turns (``T:``/``C:``, ``Therapist:``/``Client:``) and note sections (SOAP/DAP/BIRP).
- ``iptnlp_context``: NegEx-style negation scope and hypothetical/future scope per token.

Per-token results live in lists on the Doc (``doc._.iptnlp_neg`` ...) rather than per-token
extension writes, which keeps the stage fast. ``features(doc)`` turns a Doc into the whitespace-
joined feature string the scikit-learn pipeline reads, so no spaCy object is ever saved in a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from iptnlp.config import FeatureConfig, PreprocessConfig

_EXTENSIONS = ("iptnlp_neg", "iptnlp_hyp", "iptnlp_speaker", "iptnlp_section", "iptnlp_label",
               "iptnlp_lex")

_MIMIC = re.compile(r"\[\*\*([^\]\n]{0,60}?)\*\*\]")
_SQUARE = re.compile(r"\[\s*([A-Za-z][A-Za-z _\-/]{0,30}?)[\s_\-]*\d*\s*\]")
_ANGLE = re.compile(r"<\s*([A-Za-z][A-Za-z _\-/]{0,30}?)[\s_\-]*\d*\s*>")
_BARE = re.compile(r"(?<![A-Za-z])[Xx]{3,}(?![A-Za-z])|\*{3,}")
_WORDS = re.compile(r"[a-z]+")


def _register_extensions() -> None:
    from spacy.tokens import Doc, Token

    for name in _EXTENSIONS:
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=None)
    getters = {
        "negated": lambda t: bool(t.doc._.iptnlp_neg and t.doc._.iptnlp_neg[t.i]),
        "hypothetical": lambda t: bool(t.doc._.iptnlp_hyp and t.doc._.iptnlp_hyp[t.i]),
        "speaker": lambda t: t.doc._.iptnlp_speaker[t.i] if t.doc._.iptnlp_speaker else None,
        "section": lambda t: t.doc._.iptnlp_section[t.i] if t.doc._.iptnlp_section else None,
        "placeholder": lambda t: t.norm_[3:] if t.norm_.startswith("ph_") else None,
    }
    for name, getter in getters.items():
        if not Token.has_extension(name):
            Token.set_extension(name, getter=getter)


class PlaceholderKinds:
    """Maps the word inside a placeholder to its kind, per ``placeholder_kinds`` in the config."""

    def __init__(self, cfg: PreprocessConfig):
        self.by_word = {w.lower(): kind for kind, words in cfg.placeholder_kinds.items() for w in words}
        self.bare = cfg.bare_mask_kind

    def kind(self, inner: str, *, always: bool) -> str | None:
        key = re.sub(r"[\s\-]+", "_", inner.strip().lower()).strip("_")
        key = re.sub(r"_?\d+$", "", key)
        if key in self.by_word:
            return self.by_word[key]
        for word in _WORDS.findall(key):
            if word in self.by_word:
                return self.by_word[word]
        if always or (inner.isupper() and len(inner.strip()) >= 2):
            return "other"
        return None

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, str]] = []
        for m in _MIMIC.finditer(text):
            found.append((m.start(), m.end(), self.kind(m.group(1), always=True)))
        for pattern in (_SQUARE, _ANGLE):
            for m in pattern.finditer(text):
                kind = self.kind(m.group(1), always=False)
                if kind:
                    found.append((m.start(), m.end(), kind))
        for m in _BARE.finditer(text):
            found.append((m.start(), m.end(), self.bare))
        found.sort()
        kept: list[tuple[int, int, str]] = []
        for span in found:
            if not kept or span[0] >= kept[-1][1]:
                kept.append(span)
        return kept


def _phrases(items: Iterable[str]) -> dict[int, set[tuple[str, ...]]]:
    """Cue phrases grouped by token length, longest first when matching."""
    out: dict[int, set[tuple[str, ...]]] = {}
    for item in items:
        toks = tuple(re.findall(r"n't|'ll|\w+|[^\w\s]", item.lower()))
        if toks:
            out.setdefault(len(toks), set()).add(toks)
    return dict(sorted(out.items(), reverse=True))


def _match_at(words: list[str], i: int, phrases: dict[int, set[tuple[str, ...]]]) -> int:
    """Length of the longest cue phrase starting at ``words[i]``, or 0."""
    for n, group in phrases.items():
        if tuple(words[i:i + n]) in group:
            return n
    return 0


class Structure:
    """Speaker turns and note sections from labels that open a line or a sentence."""

    def __init__(self, cfg: PreprocessConfig):
        self.speaker_of = {w: "therapist" for w in cfg.speakers.therapist}
        self.speaker_of.update({w: "client" for w in cfg.speakers.client})
        self.sections = {s.lower() for s in cfg.sections}
        self.plan_sections = {s.lower() for s in cfg.hypothetical.sections}

    def __call__(self, doc):
        n = len(doc)
        speaker: list[str | None] = [None] * n
        section: list[str | None] = [None] * n
        label = [False] * n
        cur_speaker = cur_section = None
        i = 0
        while i < n:
            tok = doc[i]
            if tok.is_space and "\n" in tok.text:
                cur_speaker = None if "\n\n" in tok.text else cur_speaker
            if i == 0 or tok.is_sent_start or doc[i - 1].is_space and "\n" in doc[i - 1].text:
                found = self._label_at(doc, i)
                if found:
                    name, length = found
                    if name in self.speaker_of and (length > 2 or name not in self.sections
                                                    or cur_speaker is not None):
                        cur_speaker = self.speaker_of[name]
                    elif name in self.sections:
                        cur_section = "plan" if name in self.plan_sections else name
                        cur_speaker = None
                    else:
                        cur_speaker = self.speaker_of[name]
                    for j in range(i, i + length):
                        label[j] = True
                        speaker[j], section[j] = cur_speaker, cur_section
                    i += length
                    continue
            speaker[i], section[i] = cur_speaker, cur_section
            i += 1
        doc._.iptnlp_speaker, doc._.iptnlp_section, doc._.iptnlp_label = speaker, section, label
        return doc

    def _label_at(self, doc, i: int) -> tuple[str, int] | None:
        """(label, token count incl. colon) when tokens at i read 'Label:' (1-3 words)."""
        words: list[str] = []
        for j in range(i, min(i + 4, len(doc))):
            tok = doc[j]
            if tok.text == ":" and words:
                name = " ".join(words)
                if name in self.speaker_of or name in self.sections:
                    return name, j - i + 1
                return None
            if not tok.is_alpha:
                return None
            words.append(tok.lower_)
        return None


class Context:
    """NegEx-style negation and hypothetical scope, per sentence."""

    def __init__(self, cfg: PreprocessConfig):
        neg = cfg.negation
        self.window = neg.window
        self.pre = _phrases(neg.pre_cues)
        self.post = _phrases(neg.post_cues)
        self.term = _phrases(neg.terminators)
        self.hyp = _phrases(cfg.hypothetical.cues)
        self.comma_passes = {"denies", "deny", "denied", "denying", "negative", "free"}

    def __call__(self, doc):
        n = len(doc)
        neg = [False] * n
        hyp = [False] * n
        section = doc._.iptnlp_section or [None] * n
        for sent in doc.sents:
            start, end = sent.start, sent.end
            words = [t.lower_ for t in sent]
            i = 0
            while i < len(words):
                # a cue that closes its clause ("SI/HI denied.") looks back; otherwise forward
                k = _match_at(words, i, self.post)
                if k and (i + k == len(words) or sent[i + k].is_punct or sent[i + k].is_space):
                    self._scope_back(doc, words, start, i, neg)
                    i += k
                    continue
                k = _match_at(words, i, self.pre)
                if k:
                    self._scope_forward(doc, words, start, i + k, neg, words[i] in self.comma_passes)
                    i += k
                    continue
                k = _match_at(words, i, self.hyp)
                if k:
                    for j in range(start + i, end):
                        hyp[j] = True
                    break
                i += 1
        for j in range(n):
            if section[j] == "plan":
                hyp[j] = True
        doc._.iptnlp_neg, doc._.iptnlp_hyp = neg, hyp
        return doc

    def _scope_forward(self, doc, words, start, i, neg, comma_passes) -> None:
        counted = 0
        while i < len(words) and counted < self.window:
            tok = doc[start + i]
            if _match_at(words, i, self.term) or (tok.text == "," and not comma_passes) or \
                    (tok.is_space and "\n" in tok.text):
                return
            if not tok.is_punct and not tok.is_space:
                neg[start + i] = True
                counted += 1
            i += 1

    def _scope_back(self, doc, words, start, i, neg) -> None:
        counted = 0
        j = i - 1
        while j >= 0 and counted < self.window:
            tok = doc[start + j]
            if _match_at(words, j, self.term) or tok.text in (",", ";", ":") or \
                    (tok.is_space and "\n" in tok.text) or doc._.iptnlp_label[start + j]:
                return
            if not tok.is_punct and not tok.is_space:
                neg[start + j] = True
                counted += 1
            j -= 1


@dataclass
class Preprocessor:
    """The configured spaCy pipeline plus the feature rules; picklable by its config alone."""

    config: PreprocessConfig
    features_config: FeatureConfig
    lexicon: dict[str, tuple[str, ...]] | None = None
    batch_size: int = 256

    def __post_init__(self):
        self._nlp = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_nlp"] = None
        return state

    @property
    def nlp(self):
        if self._nlp is None:
            self._nlp = build_nlp(self.config, self.lexicon)
        return self._nlp

    def pipe(self, texts: Iterable[str]) -> Iterator:
        """Docs for ``texts``, in order, through batched ``nlp.pipe``."""
        return self.nlp.pipe(texts, batch_size=self.batch_size)

    def features(self, doc) -> str:
        return features(doc, self.features_config)

    def token_features(self, doc) -> list[tuple[object, str]]:
        return token_features(doc, self.features_config)

    def transform(self, texts: Iterable[str]) -> list[str]:
        """Feature strings for ``texts`` (what the scikit-learn pipeline reads)."""
        return [features(doc, self.features_config) for doc in self.pipe(texts)]


def _make_factories() -> None:
    """Register our components with spaCy once; each takes the rules as plain config data."""
    from spacy.language import Language

    if "iptnlp_placeholders" in Language.factories:
        return
    _register_extensions()

    def rules_of(rules: dict) -> PreprocessConfig:
        from iptnlp.config import from_dict

        return from_dict(PreprocessConfig, rules, "preprocess rules")

    @Language.factory("iptnlp_placeholders", default_config={"rules": {}})
    def make_placeholders(nlp, name, rules):
        kinds = PlaceholderKinds(rules_of(rules))

        def placeholders(doc):
            spans = kinds.spans(doc.text)
            if spans:
                with doc.retokenize() as retok:
                    for start, end, kind in spans:
                        span = doc.char_span(start, end, alignment_mode="expand")
                        if span is not None:
                            retok.merge(span, attrs={"NORM": f"ph_{kind}"})
            return doc

        return placeholders

    @Language.factory("iptnlp_lemmas", default_config={"rules": {}})
    def make_lemmas(nlp, name, rules):
        from spacy.lookups import load_lookups

        table = load_lookups("en", ["lemma_lookup"]).get_table("lemma_lookup")
        overrides = {k.lower(): v for k, v in rules_of(rules).lemma_overrides.items()}

        def lemmas(doc):
            for tok in doc:
                norm = tok.norm_
                if norm.startswith("ph_"):
                    tok.lemma_ = norm
                else:
                    low = tok.lower_
                    tok.lemma_ = overrides.get(low) or table.get(low, low)
            return doc

        return lemmas

    @Language.component("iptnlp_lines")
    def lines(doc):
        for tok in doc[1:]:
            prev = doc[tok.i - 1]
            if prev.is_space and "\n" in prev.text and not tok.is_space:
                tok.is_sent_start = True
        return doc

    @Language.factory("iptnlp_structure", default_config={"rules": {}})
    def make_structure(nlp, name, rules):
        return Structure(rules_of(rules))

    @Language.factory("iptnlp_context", default_config={"rules": {}})
    def make_context(nlp, name, rules):
        return Context(rules_of(rules))

    @Language.factory("iptnlp_lexicon", default_config={"lexicon": {}})
    def make_lexicon(nlp, name, lexicon):
        from spacy.matcher import PhraseMatcher

        matcher = PhraseMatcher(nlp.vocab, attr="LEMMA")
        # patterns need lemmas, so they go through the pipeline built so far
        for category, terms in lexicon.items():
            matcher.add(category, list(nlp.pipe(terms)))

        def lexicon_hits(doc):
            doc._.iptnlp_lex = [(nlp.vocab.strings[m], s, e) for m, s, e in matcher(doc)]
            return doc

        return lexicon_hits


def build_nlp(cfg: PreprocessConfig, lexicon: dict[str, tuple[str, ...]] | None = None):
    """A blank English pipeline with our components; no network, no downloaded model."""
    import spacy

    from iptnlp.config import to_dict

    _make_factories()
    from iptnlp.io import MAX_NOTE_CHARS

    rules = to_dict(cfg)
    nlp = spacy.blank("en")
    nlp.max_length = MAX_NOTE_CHARS + 1   # longer notes are error rows before they get here
    nlp.add_pipe("iptnlp_placeholders", config={"rules": rules})
    nlp.add_pipe("iptnlp_lemmas", config={"rules": rules})
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("iptnlp_lines")
    nlp.add_pipe("iptnlp_structure", config={"rules": rules})
    nlp.add_pipe("iptnlp_context", config={"rules": rules})
    if lexicon:
        nlp.add_pipe("iptnlp_lexicon", config={"lexicon": {k: list(v) for k, v in lexicon.items()}})
    return nlp


def features(doc, cfg: FeatureConfig) -> str:
    """The feature string of a Doc: lemmas with neg_/hyp_ marks, placeholders as their kind."""
    out = [feat for _tok, feat in token_features(doc, cfg)]
    if cfg.lexicon and doc._.iptnlp_lex:
        neg = doc._.iptnlp_neg
        for category, start, _end in doc._.iptnlp_lex:
            out.append(("neg_lex_" if neg[start] else "lex_") + category)
    return " ".join(out)


def token_features(doc, cfg: FeatureConfig) -> list[tuple[object, str]]:
    """(token, feature) for each word feature of a Doc, in text order."""
    neg = doc._.iptnlp_neg
    hyp = doc._.iptnlp_hyp
    label = doc._.iptnlp_label
    speaker = doc._.iptnlp_speaker
    out: list[tuple[object, str]] = []
    for tok in doc:
        i = tok.i
        lemma = tok.lemma_
        if tok.is_space or label[i] or not (lemma.startswith("ph_") or any(ch.isalnum() for ch in lemma)):
            continue
        if not cfg.numbers and (tok.like_num or any(ch.isdigit() for ch in lemma)):
            lemma = "num"
        if not lemma.strip():
            continue
        if cfg.negation and neg[i]:
            lemma = "neg_" + lemma
        elif cfg.hypothetical and hyp[i]:
            lemma = "hyp_" + lemma
        out.append((tok, lemma))
        if cfg.speaker and speaker[i] == "client":
            out.append((tok, "c_" + lemma))
    return out

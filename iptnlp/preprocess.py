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
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from iptnlp.config import FeatureConfig, PreprocessConfig

_EXTENSIONS = ("iptnlp_neg", "iptnlp_hyp", "iptnlp_speaker", "iptnlp_section", "iptnlp_label",
               "iptnlp_lex")

_MIMIC = re.compile(r"\[\*\*([^\]\n]{0,60}?)\*\*\]")
_SQUARE = re.compile(r"\[\s*([A-Za-z][A-Za-z _\-/]{0,30}?)[\s_\-]*\d*\s*\]")
_ANGLE = re.compile(r"<\s*([A-Za-z][A-Za-z _\-/]{0,30}?)[\s_\-]*\d*\s*>")
_BARE = re.compile(r"(?<![A-Za-z])[Xx]{3,}(?![A-Za-z])|\*{3,}")
# what every _BARE match holds: a pattern that opens with a character class is scanned for in C,
# where _BARE's opening look-behind makes ``re`` try it at every position (five times slower)
_BARE_HINT = re.compile(r"[Xx*][Xx*][Xx*]")
_WORDS = re.compile(r"[a-z]+")


def ext(doc, name: str):
    """``doc._.<name>`` read straight from where spaCy keeps it (``doc._`` builds an object per
    access, a cost per note that showed in profiles)."""
    return doc.user_data.get(("._.", name, None, None))


def set_ext(doc, name: str, value) -> None:
    """``doc._.<name> = value``, stored exactly where spaCy's extension attribute reads it."""
    doc.user_data[("._.", name, None, None)] = value


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
        for m in _BARE.finditer(text) if _BARE_HINT.search(text) else ():
            found.append((m.start(), m.end(), self.bare))
        found.sort()
        kept: list[tuple[int, int, str]] = []
        for span in found:
            if not kept or span[0] >= kept[-1][1]:
                kept.append(span)
        return kept


class Cues:
    """Cue phrases (lower-cased token tuples) grouped by length, longest first, with the set of
    words a phrase can start with so that most words are passed over at once."""

    def __init__(self, items: Iterable[str]):
        groups: dict[int, set[tuple[str, ...]]] = {}
        for item in items:
            toks = tuple(re.findall(r"n't|'ll|\w+|[^\w\s]", item.lower()))
            if toks:
                groups.setdefault(len(toks), set()).add(toks)
        self.groups = dict(sorted(groups.items(), reverse=True))
        self.first = {p[0] for group in groups.values() for p in group}

    def match_at(self, words: list[str], i: int) -> int:
        """Length of the longest cue phrase starting at ``words[i]``, or 0."""
        if words[i] not in self.first:
            return 0
        for n, group in self.groups.items():
            if tuple(words[i:i + n]) in group:
                return n
        return 0


@dataclass
class TokenArrays:
    """Per-token attributes of a Doc as plain lists, read once through ``Doc.to_array`` (fast) rather
    than through Token objects (slow); kept on the Doc while it goes through the pipeline."""

    orth: list[int]
    lower: list[str]
    is_alpha: list[int]
    is_punct: list[int]
    is_space: list[int]
    starts: list[int]            # token index of each sentence start, in order
    start_set: frozenset[int]
    newline: list[bool]          # a whitespace token holding a line break
    newlines: list[int]          # ... their token indices
    double_newline: list[bool]   # ... holding a blank line
    colon: int
    comma: int
    clause_marks: frozenset[int]


_ARRAYS_KEY = "iptnlp_arrays"
_STARTS_KEY = "iptnlp_starts"   # (sentence starts, line-break tokens), from the sentence component
_TEXT_KEY = "iptnlp_text"


class TextKeepingTokenizer:
    """spaCy's tokenizer, keeping the text on the Doc: ``doc.text`` rebuilds it token by token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str):
        doc = self.tokenizer(text)
        doc.user_data[_TEXT_KEY] = text
        return doc

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterator:
        for text in texts:
            yield self(text)


_ORTH_KEY = "iptnlp_orth"
#: orth hash -> (lower, is_alpha, is_punct, is_space, holds a line break, holds a blank line, like_num,
#: is_stop): lexeme attributes, read once per distinct word instead of once per token
_ORTH_INFO: dict[int, tuple[str, bool, bool, bool, bool, bool, bool, bool]] = {}


def orth_info(doc) -> tuple[list[int], list[tuple]]:
    """(orth hash of each token, its lexeme attributes: see ``_ORTH_INFO``), kept on the Doc once
    its tokens are final (after the placeholders are merged)."""
    cached = doc.user_data.get(_ORTH_KEY)
    if cached is not None and len(cached[0]) == len(doc):
        return cached
    from spacy.attrs import ORTH

    orth = doc.to_array(ORTH).tolist() if len(doc) else []
    get = _ORTH_INFO.get
    infos = list(map(get, orth))
    if None in infos:
        vocab = doc.vocab
        if len(_ORTH_INFO) > 2_000_000:   # bounded however many distinct words arrive
            _ORTH_INFO.clear()
        for k, o in enumerate(orth):
            if infos[k] is None:
                lex = vocab[o]
                text = lex.orth_
                infos[k] = _ORTH_INFO[o] = (lex.lower_, lex.is_alpha, lex.is_punct, lex.is_space,
                                            lex.is_space and "\n" in text, lex.is_space and "\n\n" in text,
                                            lex.like_num, lex.is_stop)
    cached = doc.user_data[_ORTH_KEY] = (orth, infos)
    return cached


def _positions(flags: list) -> list[int]:
    """Indices of the true items of a list of bools, found by ``list.index`` (a scan in C): the
    flags looked for here (a line break, a sentence end, a cue word) are true for few tokens."""
    out: list[int] = []
    i = -1
    try:
        while True:
            i = flags.index(True, i + 1)
            out.append(i)
    except ValueError:
        return out


def _token_arrays(doc) -> TokenArrays:
    """The Doc's TokenArrays, computed after sentence splitting and cached (tokens no longer change)."""
    cached = doc.user_data.get(_ARRAYS_KEY)
    if cached is not None:
        return cached
    from spacy.attrs import SENT_START

    strings = doc.vocab.strings
    orth, infos = orth_info(doc)
    if infos:
        lower, is_alpha, is_punct, is_space, newline, double = (list(c) for c in list(zip(*infos))[:6])
    else:
        lower, is_alpha, is_punct, is_space, newline, double = [], [], [], [], [], []
    found = doc.user_data.get(_STARTS_KEY)
    if found is not None and (not found[0] or found[0][-1] < len(doc)):
        starts, newlines = found
    else:   # sentences set by another component
        sent = doc.to_array(SENT_START).tolist() if len(doc) else []
        starts = [0] + [i for i in range(1, len(sent)) if sent[i] == 1] if sent else []
        newlines = _positions(newline)
    arrays = TokenArrays(orth=orth, lower=lower, is_alpha=is_alpha, is_punct=is_punct, is_space=is_space,
                         starts=starts, start_set=frozenset(starts), newline=newline, newlines=newlines,
                         double_newline=double, colon=strings.add(":"), comma=strings.add(","),
                         clause_marks=frozenset(strings.add(c) for c in (",", ";", ":")))
    doc.user_data[_ARRAYS_KEY] = arrays
    return arrays


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
        t = _token_arrays(doc)
        newline, double, sent_start = t.newline, t.double_newline, t.start_set
        # only line breaks and sentence starts can change the turn or section: visit those, and
        # fill the stretches between them in one go
        events = sorted({0, *t.starts, *t.newlines, *(i + 1 for i in t.newlines if i + 1 < n)}) if n else []
        cur_speaker = cur_section = None
        i = 0
        for p in events:
            if p < i:     # inside a label already read
                continue
            speaker[i:p] = [cur_speaker] * (p - i)
            section[i:p] = [cur_section] * (p - i)
            i = p
            if newline[i]:
                cur_speaker = None if double[i] else cur_speaker
            if i == 0 or i in sent_start or newline[i - 1]:
                found = self._label_at(t, i)
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
        speaker[i:n] = [cur_speaker] * (n - i)
        section[i:n] = [cur_section] * (n - i)
        set_ext(doc, "iptnlp_speaker", speaker)
        set_ext(doc, "iptnlp_section", section)
        set_ext(doc, "iptnlp_label", label)
        return doc

    def _label_at(self, t: TokenArrays, i: int) -> tuple[str, int] | None:
        """(label, token count incl. colon) when tokens at i read 'Label:' (1-3 words)."""
        words: list[str] = []
        for j in range(i, min(i + 4, len(t.lower))):
            if t.orth[j] == t.colon and words:
                name = " ".join(words)
                if name in self.speaker_of or name in self.sections:
                    return name, j - i + 1
                return None
            if not t.is_alpha[j]:
                return None
            words.append(t.lower[j])
        return None


class Context:
    """NegEx-style negation and hypothetical scope, per sentence."""

    def __init__(self, cfg: PreprocessConfig):
        neg = cfg.negation
        self.window = neg.window
        self.pre = Cues(neg.pre_cues)
        self.post = Cues(neg.post_cues)
        self.term = Cues(neg.terminators)
        self.hyp = Cues(cfg.hypothetical.cues)
        self.first = self.pre.first | self.post.first | self.hyp.first
        self.comma_passes = {"denies", "deny", "denied", "denying", "negative", "free"}

    def __call__(self, doc):
        n = len(doc)
        neg = [False] * n
        hyp = [False] * n
        section = ext(doc, "iptnlp_section") or [None] * n
        t = _token_arrays(doc)
        words_all = t.lower
        starts = t.starts
        # only a word that can open a cue can change anything: visit those, left to right, sentence
        # by sentence (and only the sentences that have one)
        cues = _positions(list(map(self.first.__contains__, words_all)))
        label = None
        for start, end in zip(starts, starts[1:] + [n]) if cues else ():
            lo, hi = bisect_left(cues, start), bisect_left(cues, end)
            if lo == hi:
                continue
            words = words_all[start:end]
            i = 0
            for c in [j - start for j in cues[lo:hi]]:
                if c < i:        # inside a cue already read
                    continue
                i = c
                # a cue that closes its clause ("SI/HI denied.") looks back; otherwise forward
                k = self.post.match_at(words, i)
                if k and (i + k == len(words) or t.is_punct[start + i + k] or t.is_space[start + i + k]):
                    if label is None:
                        label = ext(doc, "iptnlp_label")
                    self._scope_back(t, words, start, i, neg, label)
                    i += k
                    continue
                k = self.pre.match_at(words, i)
                if k:
                    self._scope_forward(t, words, start, i + k, neg, words[i] in self.comma_passes)
                    i += k
                    continue
                k = self.hyp.match_at(words, i)
                if k:
                    for j in range(start + i, end):
                        hyp[j] = True
                    break
        if "plan" in section:
            hyp = [h or s == "plan" for h, s in zip(hyp, section)]
        set_ext(doc, "iptnlp_neg", neg)
        set_ext(doc, "iptnlp_hyp", hyp)
        return doc

    def _scope_forward(self, t: TokenArrays, words, start, i, neg, comma_passes) -> None:
        counted = 0
        while i < len(words) and counted < self.window:
            k = start + i
            if self.term.match_at(words, i) or (t.orth[k] == t.comma and not comma_passes) or t.newline[k]:
                return
            if not t.is_punct[k] and not t.is_space[k]:
                neg[k] = True
                counted += 1
            i += 1

    def _scope_back(self, t: TokenArrays, words, start, i, neg, label) -> None:
        counted = 0
        j = i - 1
        while j >= 0 and counted < self.window:
            k = start + j
            if self.term.match_at(words, j) or t.orth[k] in t.clause_marks or t.newline[k] or label[k]:
                return
            if not t.is_punct[k] and not t.is_space[k]:
                neg[k] = True
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
            spans = kinds.spans(doc.user_data.get(_TEXT_KEY) or doc.text)
            if spans:
                # placeholders that share a token once widened to token edges ("[PERSON]/XXX" is one
                # token at the slash) become one placeholder, of the first one's kind
                merged: list[list] = []
                for start, end, kind in spans:
                    span = doc.char_span(start, end, alignment_mode="expand")
                    if span is None:
                        continue
                    if merged and span.start < merged[-1][1]:
                        merged[-1][1] = max(merged[-1][1], span.end)
                    else:
                        merged.append([span.start, span.end, kind])
                with doc.retokenize() as retok:
                    for start, end, kind in merged:
                        retok.merge(doc[start:end], attrs={"NORM": f"ph_{kind}"})
            return doc

        return placeholders

    @Language.factory("iptnlp_lemmas", default_config={"rules": {}})
    def make_lemmas(nlp, name, rules):
        table = _lemma_table()
        overrides = {k.lower(): v for k, v in rules_of(rules).lemma_overrides.items()}

        vocab = nlp.vocab
        strings = vocab.strings
        # (orth, norm) hash -> (lemma hash, the token's word entry: see ``word_table``), filled as words come
        token_of: dict[tuple[int, int], tuple[int, tuple[str, str, bool] | bool]] = {}

        def token_info(pair: tuple[int, int]) -> tuple[int, tuple[str, str, bool] | bool]:
            orth, norm = pair
            lex = vocab[orth]
            if strings[norm].startswith("ph_"):
                lemma = norm
            else:
                low_s = lex.lower_
                lemma = strings.add(overrides.get(low_s) or table.get(low_s, low_s))
            return lemma, _word_entry(lex, strings[lemma])

        def lemmas(doc):
            """The lemma of each token, and its word entry kept on the Doc for ``word_table``: both
            depend only on the token's (orth, norm) pair, read from a memo with one ``map``."""
            n = len(doc)
            if not n:
                return doc
            import numpy as np
            from spacy.attrs import LEMMA, NORM

            pairs = list(zip(orth_info(doc)[0], doc.to_array(NORM).tolist()))
            infos = list(map(token_of.get, pairs))
            if None in infos:
                if len(token_of) > 2_000_000:   # bounded however many distinct words arrive
                    token_of.clear()
                for k, pair in enumerate(pairs):
                    if infos[k] is None:
                        infos[k] = token_of[pair] = token_info(pair)
            doc.from_array([LEMMA], np.fromiter(map(itemgetter(0), infos), dtype=np.uint64, count=n))
            doc.user_data[_ENTRIES_KEY] = list(map(itemgetter(1), infos))
            return doc

        return lemmas

    @Language.factory("iptnlp_sentences", default_config={"punct_chars": None})
    def make_sentences(nlp, name, punct_chars):
        from spacy.pipeline.sentencizer import Sentencizer

        ends = frozenset(punct_chars or Sentencizer.default_punct_chars)
        end_hashes: set[int] = set()
        seen: set[int] = set()

        def sentences(doc):
            """spaCy's sentencizer rule (a sentence ends after . ! ? and their kin, once a non-
            punctuation token follows), and every line break starts a sentence; from arrays."""
            n = len(doc)
            if not n:
                return doc
            import numpy as np
            from spacy.attrs import SENT_START

            strings = doc.vocab.strings
            orth, infos = orth_info(doc)
            for o in set(orth) - seen:
                if strings[o] in ends:    # before it is seen: another thread may read both sets
                    end_hashes.add(o)
                seen.add(o)
            is_end = list(map(end_hashes.__contains__, orth))
            first = [0]
            # after a sentence end and any punctuation or further ends, the next token starts one
            after = 0
            for e in _positions(is_end):
                if e < after:        # inside the run of the end before
                    continue
                j = e + 1
                while j < n and (infos[j][2] or is_end[j]):
                    j += 1
                if j < n:
                    first.append(j)
                after = j
            # every line break starts a sentence (the first token after a whitespace token holding one)
            newlines = _positions(list(map(itemgetter(4), infos)))
            first += [i + 1 for i in newlines if i + 1 < n and not infos[i + 1][3]]
            starts = np.full(n, -1, dtype="int64")
            starts[first] = 1
            doc.from_array([SENT_START], starts.astype("uint64"))
            # kept for the structure and context components, which read sentences and line breaks
            doc.user_data[_STARTS_KEY] = (sorted(set(first)), newlines)
            return doc

        return sentences

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
            set_ext(doc, "iptnlp_lex", [(nlp.vocab.strings[m], s, e) for m, s, e in matcher(doc)])
            return doc

        return lexicon_hits


_LEMMA_TABLE: dict[str, str] | None = None


def _lemma_table() -> dict[str, str]:
    """spacy-lookups-data's English lemma table (word -> lemma), read straight from its file: spaCy's
    ``load_lookups`` finds it through the entry points of every installed package (a tenth of a
    second of start-up) and keys it by hash, which gives the same lemma for every word. Read once per
    process and shared (the identifier guard's word list is built from it too): callers only read it."""
    global _LEMMA_TABLE
    if _LEMMA_TABLE is None:
        _LEMMA_TABLE = _read_lemma_table()
    return _LEMMA_TABLE


def _read_lemma_table() -> dict[str, str]:
    try:
        import spacy_lookups_data
        from spacy.util import load_language_data

        return load_language_data(spacy_lookups_data.en["lemma_lookup"])
    except (ImportError, AttributeError, KeyError):
        from spacy.lookups import load_lookups

        return load_lookups("en", ["lemma_lookup"]).get_table("lemma_lookup")


def build_nlp(cfg: PreprocessConfig, lexicon: dict[str, tuple[str, ...]] | None = None):
    """A blank English pipeline with our components; no network, no downloaded model."""
    import spacy

    from iptnlp.config import to_dict

    _make_factories()
    from iptnlp.io import MAX_NOTE_CHARS

    rules = to_dict(cfg)
    nlp = spacy.blank("en")
    nlp.tokenizer = TextKeepingTokenizer(nlp.tokenizer)
    nlp.max_length = MAX_NOTE_CHARS + 1   # longer notes (also once redacted) are error rows before here
    nlp.add_pipe("iptnlp_placeholders", config={"rules": rules})
    nlp.add_pipe("iptnlp_lemmas", config={"rules": rules})
    nlp.add_pipe("iptnlp_sentences")
    nlp.add_pipe("iptnlp_structure", config={"rules": rules})
    nlp.add_pipe("iptnlp_context", config={"rules": rules})
    if lexicon:
        nlp.add_pipe("iptnlp_lexicon", config={"lexicon": {k: list(v) for k, v in lexicon.items()}})
    return nlp


def features(doc, cfg: FeatureConfig) -> str:
    """The feature string of a Doc: lemmas with neg_/hyp_ marks, placeholders as their kind."""
    out = list(token_features(doc, cfg)[1])
    lex = ext(doc, "iptnlp_lex") if cfg.lexicon else None
    if lex:
        neg = ext(doc, "iptnlp_neg")
        for category, start, _end in lex:
            out.append(("neg_lex_" if neg[start] else "lex_") + category)
    return " ".join(out)


_WORDS_KEY = "iptnlp_words"
_ENTRIES_KEY = "iptnlp_word_entries"


@dataclass
class WordTable:
    """The words of a processed Doc, in text order, as parallel columns."""

    index: list[int]     # token index
    lemma: list[str]
    folded: list[str]    # the lemma, or "num" for a number (like_num, or a digit in the lemma)
    content: list[bool]  # not a stop word


def _word_entry(lex, lemma: str) -> tuple[str, str, bool] | bool:
    """What a token of lexeme ``lex`` and lemma ``lemma`` gives ``word_table``: (lemma, the lemma or
    "num", not a stop word); False for whitespace and a lemma with no letter or digit that is no
    placeholder kind."""
    if lex.is_space or not (lemma.startswith("ph_") or any(ch.isalnum() for ch in lemma)):
        return False
    number = lex.like_num or any(ch.isdigit() for ch in lemma)
    return lemma, "num" if number else lemma, not lex.is_stop


def word_table(doc) -> WordTable:
    """The words of a processed Doc: tokens that are not whitespace nor part of a turn or section
    label, whose lemma has a letter or a digit or is a placeholder kind; the shared start of every
    feature set (area, themes, evidence), computed once per Doc. The lemma component leaves each
    token's entry on the Doc (an entry depends only on the token's orth and norm, so it comes from
    a memo), which spares a Python loop per token here."""
    table = doc.user_data.get(_WORDS_KEY)
    if table is not None:
        return table
    entries = doc.user_data.get(_ENTRIES_KEY)
    if entries is None or len(entries) != len(doc):   # a Doc that missed the lemma component
        from spacy.attrs import LEMMA

        vocab, strings = doc.vocab, doc.vocab.strings
        lemmas = doc.to_array(LEMMA).tolist() if len(doc) else []
        entries = [_word_entry(vocab[o], strings[h]) for o, h in zip(orth_info(doc)[0], lemmas)]
    label = ext(doc, "iptnlp_label")
    if True in label:
        entries = [False if is_label else e for e, is_label in zip(entries, label)]
    index = [i for i, e in enumerate(entries) if e]
    table = WordTable(index, *(list(column) for column in zip(*map(entries.__getitem__, index)))) \
        if index else WordTable([], [], [], [])
    doc.user_data[_WORDS_KEY] = table
    return table


def token_features(doc, cfg: FeatureConfig) -> tuple[list[int], list[str]]:
    """(token index of each word feature, the features) of a Doc, in text order; kept on the Doc
    per feature config (the area's features and its evidence read the same lists)."""
    key = ("iptnlp_token_features", cfg)
    cached = doc.user_data.get(key)
    if cached is not None:
        return cached
    table = word_table(doc)
    index = table.index
    feats = table.lemma if cfg.numbers else table.folded
    # most words carry no mark: look the marks up in one map, and build strings only where one is set
    neg = list(map(ext(doc, "iptnlp_neg").__getitem__, index)) if cfg.negation else None
    hyp = list(map(ext(doc, "iptnlp_hyp").__getitem__, index)) if cfg.hypothetical else None
    if neg is not None and True in neg:
        feats = [("neg_" + f) if m else f for f, m in zip(feats, neg)]
    if hyp is not None and True in hyp:
        neg = neg or [False] * len(index)
        feats = [("hyp_" + f) if h and not m else f for f, h, m in zip(feats, hyp, neg)]
    if cfg.speaker:
        speaker = ext(doc, "iptnlp_speaker")
        marked_index: list[int] = []
        marked: list[str] = []
        for i, f in zip(index, feats):
            marked_index.append(i)
            marked.append(f)
            if speaker[i] == "client":
                marked_index.append(i)
                marked.append("c_" + f)
        index, feats = marked_index, marked
    cached = doc.user_data[key] = (index, feats)
    return cached

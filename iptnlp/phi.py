"""The leftover identifier guard: finds identifiers that de-identification missed, and masks them.

Notes should arrive with identifiers replaced by placeholders ([NAME], <PERSON>, [**Name**], XXX,
*** ...); ``PhiGuard`` finds what slipped through, by rules only: a ``spacy.blank("en")`` tokenizer
with ``Matcher`` patterns on token shapes (titled names, first+last name pairs, street addresses,
month-name dates), ``PhraseMatcher`` word lists (identifier labels, given names, relation words)
and compiled regular expressions where a token pattern is clumsy (e-mails, URLs, phone numbers,
numeric dates, SSNs, long digit runs). The rule data (titles, street types, month and holiday
names, name exclusions ...) lives in ``configs/phi.yml``; spaCy's English lemma table serves as
the list of ordinary words, so "Okafor" reads as a name and "Depressive" does not.

Candidates that overlap are settled by kind (a labelled identifier beats a phone-shaped number, any
kind beats a name), then length; dates and addresses grow over their weekday, unit, town and
postcode so that ``redact`` leaves nothing of them behind.

Kinds: ``email``, ``url``, ``phone``, ``address``, ``date``, ``id``, ``name``. Placeholders already in
the text (the patterns of ``configs/preprocess.yml``) are never flagged. Nothing here puts note text
or an identifier into an exception message or a log.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iptnlp.config import CONFIG_DIR, _read_yaml, from_dict, load_preprocess_config
from iptnlp.errors import ConfigError, InputError

DEFAULT_PHI_CONFIG = CONFIG_DIR / "phi.yml"
DEFAULT_PREPROCESS_CONFIG = CONFIG_DIR / "preprocess.yml"

KINDS = ("email", "url", "phone", "address", "date", "id", "name")
PLACEHOLDER_OF = {"name": "[NAME]", "date": "[DATE]", "address": "[LOCATION]", "email": "[EMAIL]",
                  "phone": "[PHONE]", "url": "[URL]", "id": "[ID]"}
# When two candidates overlap, the lower rank wins (then the longer one): a labelled identifier
# beats a phone-shaped number, a phone or a date beats a bare digit run, anything beats a name.
_RANK = {"email": 0, "url": 1, "id": 2, "phone": 3, "date": 4, "address": 5, "digits": 6, "name": 7}


@dataclass(frozen=True, order=True)
class PhiSpan:
    """One leftover identifier: character offsets ``text[start:end]`` and its kind."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class PhiConfig:
    titles: tuple[str, ...] = ()
    weak_titles: tuple[str, ...] = ()
    title_determiners: tuple[str, ...] = ()
    street_types: tuple[str, ...] = ()
    street_abbreviations: tuple[str, ...] = ()
    unit_words: tuple[str, ...] = ()
    months: tuple[str, ...] = ()
    weekdays: tuple[str, ...] = ()
    holidays: tuple[str, ...] = ()
    date_cues: tuple[str, ...] = ()
    id_labels: tuple[str, ...] = ()
    phone_cues: tuple[str, ...] = ()
    name_exclusions: tuple[str, ...] = ()
    relation_words: tuple[str, ...] = ()
    sign_offs: tuple[str, ...] = ()
    greetings: tuple[str, ...] = ()
    street_types_before: tuple[str, ...] = ()
    street_types_named: tuple[str, ...] = ()
    holiday_dates: tuple[str, ...] = ()
    term_endings: tuple[str, ...] = ()
    name_particles: tuple[str, ...] = ()
    place_words: tuple[str, ...] = ()
    place_like_names: tuple[str, ...] = ()
    first_names: tuple[str, ...] = ()
    surnames: tuple[str, ...] = ()


def load_phi_config(path: str | Path | None = None) -> PhiConfig:
    """The guard's rules from ``configs/phi.yml`` (or ``path``); unknown keys are errors."""
    path = Path(path) if path else DEFAULT_PHI_CONFIG
    cfg = from_dict(PhiConfig, _read_yaml(path), str(path))
    problems = [f"{name} must not be empty" for name in ("titles", "street_types", "months")
                if not getattr(cfg, name)]
    months = {m.lower() for m in cfg.months}
    problems += [f"holiday_dates: {item!r} is not 'month day' (e.g. 'july 4')" for item in cfg.holiday_dates
                 if not re.fullmatch(r"([a-z]+) ([1-9]|[12]\d|3[01])", item.lower())
                 or item.lower().split()[0] not in months]
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return cfg


def _alternation(words: Iterable[str], title: bool = False) -> str:
    """A regex alternation of ``words`` (lower-case, or capitalised when ``title``), longest first,
    spaces matching any whitespace."""
    parts = sorted({w.title() if title else w.lower() for w in words}, key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in parts)


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_TLDS = ("com|org|net|edu|gov|mil|int|io|co|uk|us|ca|au|nz|ie|de|fr|es|it|nl|be|tv|ai|fm|info|biz|me|"
         "ly|app|dev|site|online|link|health|care")
# a bare domain ("example.org/housing") must be lower-case: "left.It hurt" is a missing space
_URL = re.compile(r"(?i:\b(?:(?:https?|ftp)://|www\.))[^\s<>\"'\]\[]+"
                  rf"|(?<![@\w.-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{_TLDS})\b(?:/[^\s<>\"'\]\[]*)?")
_URL_HINT = re.compile(rf"(?i)://|www\.|\.(?:{_TLDS})\b")
_TLD_HINT = re.compile(rf"(?i)\.(?:{_TLDS})\b")          # the last part of _URL_HINT, found fast after a "."
_DOT_TLDS = ("com", "org", "net", "edu")
_DOT_HINT = re.compile(rf"(?i)[\s\[(]dot[\s\])]|[\[(]at[\])]|\sat\s+[\w-]+\.(?:{'|'.join(_DOT_TLDS)})\b")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"        # (555) 123-4567, 555.123.4567
    r"|\+\d{1,3}[\s.-]?(?:\(0\)\s?)?\d{1,5}(?:[\s.-]\d{2,8}){1,4}"         # +44 7700 900123
    r"|0\d{2,4}[\s-]?\d{3,4}[\s-]?\d{3,4}"                                   # 07700 900123, 020 7946 0958
    r"|\(0\d{1,4}\)\s?\d{3,4}[\s-]?\d{3,4}"                                 # (02) 9876 5432
    r"|\d{3}-\d{4}"                                                          # 555-0192
    r")(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w-])", re.I)
# a long digit run, or groups of 3-5 digits ("943 476 5919"), not a list of scores ("19 17 14 12")
_DIGITS = re.compile(r"(?<![\w.,/:-])(?:\d{7,}|\d{3,5}(?:[ -]\d{3,5}){1,3})(?![\w/:-]|[.,]\d)")
_YEAR_LIST = re.compile(r"(?:(?:19|20)\d\d[\s,-]*)+")
_TIME_LIST = re.compile(r"(?:(?:[01]\d|2[0-3])[0-5]\d[\s,-]*){2,}")      # "0800 1200 1600"
# codes of capitals and digits with five digits or more: "MC4471902216", "24-CR-00817", "CLM-2024-0038817"
_CODE = re.compile(r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*(?![\w-])")
_YEARS = re.compile(r"(?:19|20)\d\d\s*[-–]\s*(?:(?:19|20)\d\d|\d\d)")
# "b.ngata at example dot org", "maria(at)example.com"
_OBFUSCATED_EMAIL = re.compile(
    r"(?i)(?<![\w.])[a-z0-9][\w.+-]*\s*(?:\bat\b|\[at\]|\(at\))\s*[a-z0-9-]+"
    r"(?:\s*(?:\bdot\b|\[dot\]|\(dot\)|\.)\s*[a-z0-9-]+)*\s*(?:\bdot\b|\[dot\]|\(dot\)|\.)\s*"
    r"(?:com|org|net|edu|gov|io|co|uk|us|ca|au|de|fr|info)\b")
_NUM_DATE = re.compile(r"(?<![\w./-])(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?![\w/-]|\.\d)")
_ISO_DATE = re.compile(r"(?<![\w./-])(?:19|20)\d{2}([/.-])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])"
                       r"(?:T\d\d:\d\d(?::\d\d)?)?(?![\w/-]|\.\d)")
_MONTH_ABBR = "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec"
_DAY_MONTH_YEAR = re.compile(
    rf"(?i)(?<![\w/-])\d{{1,2}}([-/ ])(?:{_MONTH_ABBR})[a-z]*\.?\1(?:\d{{4}}|\d{{2}})(?![\w/-])")
_SHORT_DATE = re.compile(r"(?<![\w./-])(\d{1,2})/(\d{1,2})(?![\w/-]|\.\d)"
                         r"(?!\s*(?:tabs?|tablets?|pills?|doses?|mg|cups?|hours?|hrs?|of|the|scale)\b)")
_PO_BOX = re.compile(r"(?i)\b(?:P\.?\s?O\.?|Post\s+Office)\s*Box\s+\d+\b")
_UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[ABD-HJLNP-UW-Z]{2}\b")
# A capitalised word that may be a name: "Okafor", "José", "McDonald", "O'Brien" (not "I", not "IPT").
_NAME_TOKEN = r"^(?:Mc|Mac|O['’]|D['’])?[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+$"
_NAME_TOKEN_RE = re.compile(_NAME_TOKEN)
# Words before a given name that make it part of a place or a feast ("St. Patrick's Day", "San Jose").
_SAINTS = {"st", "saint", "san", "santa", "mount", "mt", "fort", "port", "lake", "cape", "lady"}
# Words between an identifier label and its value ("NHS number:", "policy no. #", "SSN ending in").
_LABEL_GLUE = {"number", "num", "no", "no.", "nr", "nr.", "#", ":", "=", "-", "is", "was", "id", "ending",
               "in", "of", "."}


class PhiGuard:
    """Finds leftover identifiers in note text; build once, then ``find``/``find_many``/``redact``."""

    def __init__(self, config: PhiConfig | None = None, preprocess_config: str | Path | None = None,
                 vocab=None, nlp=None):
        import spacy
        from spacy.attrs import LOWER, SHAPE
        from spacy.lang.en.stop_words import STOP_WORDS
        from spacy.matcher import Matcher, PhraseMatcher
        from spacy.tokens import Doc

        from iptnlp.preprocess import PlaceholderKinds

        self.config = cfg = config or load_phi_config()
        self.placeholders = PlaceholderKinds(load_preprocess_config(preprocess_config or DEFAULT_PREPROCESS_CONFIG))
        # ``nlp``: the tagging pipeline, whose vocab and tokenizer (only) the guard then shares, so that
        # its tokenized Docs can be read here (find_docs) and no second tokenizer is built (a fifth
        # of a second of start-up); ``vocab``: share only the vocab
        if nlp is None:
            nlp = spacy.blank("en", vocab=vocab) if vocab is not None else spacy.blank("en")
            nlp.max_length = 10_000_000
        self.nlp = nlp
        low = lambda words: {w.lower() for w in words}  # noqa: E731
        self.titles = low(cfg.titles)
        self.weak_titles = low(cfg.weak_titles)
        self.determiners = low(cfg.title_determiners)
        self.first_names = low(cfg.first_names)
        self.surnames = low(cfg.surnames)
        self.months = low(cfg.months)
        self.street_abbreviations = low(cfg.street_abbreviations)
        self.stop = {w.lower() for w in STOP_WORDS}
        self.excluded = (low(cfg.name_exclusions) | low(cfg.months) | low(cfg.weekdays) | low(cfg.holidays)
                         | (low(cfg.street_types) - self.surnames) | low(cfg.unit_words) | self.titles | self.stop
                         | {w.lower() + "s" for w in (*cfg.weekdays, *cfg.months, *cfg.holidays)})
        self.vocab = _english_words()
        # after a strong title ("Mr. White", "Dr. Ward") only calendar and stop words are not names
        self.not_after_title = (self.stop | low(cfg.months) | low(cfg.weekdays) | low(cfg.holidays)
                                | {w.lower() + "s" for w in cfg.weekdays})
        self.phone_cue = re.compile(rf"(?i)(?<![\w-])(?:{_alternation(cfg.phone_cues)})\W{{0,3}}$")
        self.date_cue = re.compile(
            rf"(?i)(?<![\w-])(?:{_alternation((*cfg.date_cues, *cfg.weekdays))})\.?,?\s*[:.]?\s*$")
        self.place_words = low(cfg.place_words)
        units = rf"(?i:{_alternation(cfg.unit_words)})\.?\s*#?[A-Za-z0-9/-]{{1,6}}\b"
        self.address_head = re.compile(rf"\b{units},?\s*$")
        self.address_tail = re.compile(
            r"(?:-[A-Z][a-z]+)*"                                              # Rue Saint-Denis
            rf"(?:(?:,\s*|\s+){units}"                                        # , Apt 3R
            r"|,\s*[A-Z][a-z]+(?:\s(?:[A-Z][a-z]+|[A-Z]\b)){0,2}"              # , Chicago / , Station A
            r"|,?\s+(?:[A-Z]{2}\s+(?:\d{5}(?:-\d{4})?|[A-Z]\d[A-Z]\s?\d[A-Z]\d)"  # IL 60647, ON M5W 1A1
            r"|[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|[A-Z]\d{2}\s?[A-Z0-9]{4}"        # LS2 7EE, H91 X2Y3
            r"|\d{4,5}(?:\s[A-Z][a-z]+)?))*")                                 # 69003 Lyon
        self.date_head = re.compile(
            rf"(?:\b(?:{_alternation(cfg.weekdays, title=True)})\.?,?\s+(?:the\s+)?|\bthe\s+)$")
        self.known_names = self.first_names | self.surnames
        roles = self.titles | low(cfg.relation_words) | {"client", "patient", "pt", "c", "t"}
        self.proper_noun_words = low(cfg.name_exclusions) - roles - self.stop - low(cfg.greetings) - low(
            cfg.sign_offs) - low(cfg.months) - low(cfg.weekdays) - low(cfg.holidays)
        self.term_ending = tuple(sorted(low(cfg.term_endings), key=len, reverse=True))

        # Token shapes (spaCy caps a run of one character class at four) keep the Matcher on hashed
        # attributes; the rules below then check the matched words in Python.
        cap_shapes = sorted({f"{pre}X{'x' * n}" for pre in ("", "X'", "X’", "Xx", "Xxx") for n in range(1, 5)})
        cap = {"SHAPE": {"IN": cap_shapes}}
        cap_joined = {"SHAPE": {"IN": cap_shapes}, "SPACY": False}     # "Min-jung", "Nguyen-Tran"
        hyphen = {"ORTH": "-", "SPACY": False}
        piece = {"IS_ALPHA": True}
        initial = {"SHAPE": {"IN": ["X", "X."]}}
        dotted_initial = {"SHAPE": "X."}
        dot = {"ORTH": ".", "OP": "?"}
        # one Matcher per rule, each run only when a cheap look at the text says it may match
        self.matchers = {rule: Matcher(self.nlp.vocab)
                         for rule in ("TITLED", "PAIR", "DATE", "ADDRESS", "WEEKDAY", "STREET")}
        patterns: dict[str, list[list[dict]]] = {rule: [] for rule in self.matchers}

        def add(rule: str, label: str, rule_patterns: list[list[dict]]) -> None:
            self.matchers[rule].add(label, rule_patterns)
            patterns[rule] += rule_patterns

        self.gates = {
            "TITLED": re.compile(rf"\b(?:{'|'.join(sorted(re.escape(t.title()) for t in self.titles))})\b"),
            "DATE": re.compile(rf"\b(?:{_alternation(self.months, title=True)})\b"),
            "STREET": re.compile(rf"\b(?:{_alternation(cfg.street_types_named, title=True)})\b"),
            "WEEKDAY": re.compile(rf"\b(?:{_alternation(cfg.weekdays, title=True)})\b"),
            "ADDRESS": re.compile(
                rf"\d[^\n]{{0,60}}\b(?:{_alternation((*cfg.street_types, *cfg.street_types_before), title=True)})\b"),
            # the capital first, then the two ways on (the second with \b before the capital), so that
            # re scans for capitals in C instead of trying every position
            "PAIR": re.compile(rf"[A-Z](?:[\w'’-]*\s+(?:(?:{_alternation(cfg.name_particles)})\s+){{0,2}}[A-Z]"
                               r"|(?<=\b[A-Z])\.\s*[A-Z][a-z])"),
        }
        # a title is capitalised ("Ms", "Dr."): "miss Tuesdays" is a verb, "MS." multiple sclerosis
        title_tok = {"LOWER": {"IN": sorted(self.titles | {t + "." for t in self.titles})}, "IS_TITLE": True}
        add("TITLED", "TITLED", [[title_tok, dot, cap], [title_tok, dot, cap, cap],
                                 [title_tok, dot, initial, dot, cap],
                                 [title_tok, dot, cap_joined, hyphen, piece],
                                 [title_tok, dot, cap, cap_joined, hyphen, piece]])
        add("PAIR", "PAIR", [[cap, cap], [cap, cap, cap], [cap, initial, dot, cap],
                             [cap_joined, hyphen, piece, cap], [cap, cap_joined, hyphen, piece],
                             [cap_joined, hyphen, piece, cap_joined, hyphen, piece]])
        particle = {"LOWER": {"IN": sorted(low(cfg.name_particles))}, "IS_LOWER": True}
        add("PAIR", "PARTICLE", [[cap, particle, cap], [cap, particle, particle, cap],
                                 [cap, cap, particle, cap], [cap, cap, particle, particle, cap]])
        # "J. Whitaker"; and a given name from the list standing alone ("C: Marisol never calls")
        add("PAIR", "INITIAL", [[dotted_initial, cap]])
        self.given = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        alone = self.known_names - self.vocab - low(cfg.place_like_names)
        self.given.add("GIVEN", self._phrases(alone))
        # a single given name right after a relation word: "her brother Keanu", "niece Chidinma"
        self.relations = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self.relations.add("RELATED", self._phrases(low(cfg.relation_words)))
        letter = (rf"[ \t]*(?:(?:{_alternation(cfg.sign_offs)}),?\s*([A-Z][a-z]+)\s*(?:$|\n)"
                  rf"|(?:{_alternation(cfg.greetings)})\s+([A-Z][a-z]+)\s*[,!:])")
        self.letter_name = re.compile(rf"(?:^|[\n.!?]){letter}", re.I)
        # past the text's start a match opens with one of \n . ! ?: a pattern that opens with them is
        # scanned for in C, where the one above is tried at every position (``_letter_names``)
        self.letter_name_on = re.compile(rf"[\n.!?]{letter}", re.I)
        month = {"LOWER": {"IN": sorted(self.months | {m + "." for m in self.months})}}
        day = {"SHAPE": {"IN": ["d", "dd", "dxx", "ddxx"]}}
        year = {"SHAPE": "dddd"}
        comma = {"ORTH": ",", "OP": "?"}
        of = {"LOWER": "of"}
        the = {"LOWER": "the"}
        weekday = {"LOWER": {"IN": sorted(low(cfg.weekdays))}, "IS_TITLE": True}
        add("DATE", "DATE", [[month, dot, day], [month, dot, day, comma, year],
                             [day, month], [day, month, dot, comma, year],
                             [day, of, month], [day, of, month, dot, comma, year],
                             [month, dot, the, day], [month, dot, the, day, comma, year]])
        # "Tuesday the 14th" names a day too
        add("WEEKDAY", "DATE", [[weekday, comma, the, {"SHAPE": {"IN": ["dxx", "ddxx"]}}]])
        # (month word, day) of holiday dates, under every spelling of the month ("jul 4", "july 4")
        self.holiday_days = set()
        for item in cfg.holiday_dates:
            month_word, day_number = item.lower().split()
            self.holiday_days |= {(m, int(day_number)) for m in self.months
                                  if month_word.startswith(m) or m.startswith(month_word)}
        number = {"SHAPE": {"IN": ["d", "dd", "ddd", "dddd", "dX", "ddX", "dddX", "ddddX", "dx", "ddx", "dddx",
                                   "d/d", "d/dd", "dd/d", "dd/dd", "d/ddd", "dd/ddd", "d-dd", "dd-ddd"]}}
        street_word = {"SHAPE": {"IN": cap_shapes + ["dxx", "ddxx", "dddxx", "X", "X.", "XX", "XX."]}}
        street_type = {"LOWER": {"IN": sorted(low(cfg.street_types) | {t + "." for t in low(cfg.street_types)})}}
        add("ADDRESS", "ADDRESS", [[number, street_word, street_type],
                                   [number, street_word, street_word, street_type],
                                   [number, street_word, street_word, street_word, street_type]])
        # no house number: "lives on Elm Street" (the preposition is left out of the span)
        named_type = {"LOWER": {"IN": sorted(low(cfg.street_types_named))}, "IS_TITLE": True}
        add("STREET", "STREET", [[{"LOWER": {"IN": ["on", "at", "off", "near"]}}, cap, named_type],
                                 [{"LOWER": {"IN": ["on", "at", "off", "near"]}}, cap, cap, named_type]])
        before = {"LOWER": {"IN": sorted(low(cfg.street_types_before))}, "IS_TITLE": True}
        word = {"IS_ALPHA": True}
        add("ADDRESS", "ADDRESS", [[number, {"ORTH": ",", "OP": "?"}, before, cap],
                                   [number, {"ORTH": ",", "OP": "?"}, before, word, cap],
                                   [number, {"ORTH": ",", "OP": "?"}, before, word, word, cap]])
        # "MRN: 00123456", "NHS no. 943 476 5919": the value after a label is read from the text
        self.labels = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self.labels.add("ID_LABEL", self._phrases(low(cfg.id_labels)))
        # A gated rule runs only on a few tokens around its anchors, tokens every one of its patterns
        # needs (a title, a month, a street type ...; for a name pair, a capitalised word and what may
        # follow it): a Matcher's time goes by the token, and most notes have few or no anchors. A
        # rule whose patterns lack one would run on the whole Doc.
        strings = self.nlp.vocab.strings
        self.anchors = {rule: anchor for rule, anchor in {
            "TITLED": _Anchor.of(patterns["TITLED"], [title_tok], strings),
            "PAIR": _Anchor.of(patterns["PAIR"], [cap, cap_joined, dotted_initial], strings,
                               follow=[cap, cap_joined, initial, hyphen, particle]),
            "DATE": _Anchor.of(patterns["DATE"], [month], strings),
            "WEEKDAY": _Anchor.of(patterns["WEEKDAY"], [weekday], strings),
            "STREET": _Anchor.of(patterns["STREET"], [named_type], strings),
            "ADDRESS": _Anchor.of(patterns["ADDRESS"], [street_type, before], strings),
        }.items() if anchor is not None}
        # anchors that are words are found by one PhraseMatcher (a label per rule); the others are
        # read from the Doc's LOWER and SHAPE columns
        self.anchor_words = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for rule, anchor in self.anchors.items():
            if anchor.words is not None:
                self.anchor_words.add(rule, [Doc(self.nlp.vocab, words=[w]) for w in sorted(anchor.words)])
        self.anchor_attrs = [LOWER, SHAPE]

    def _phrases(self, words: Iterable[str]) -> list:
        """PhraseMatcher patterns of ``words``, as the tokenizer splits them and split on spaces
        only (the tokenizer reads a lone "id" as "i d", but "ID" in a note stays one token)."""
        from spacy.tokens import Doc

        docs = {}
        for word in sorted(words):
            for doc in (self.nlp.make_doc(word), Doc(self.nlp.vocab, words=word.split())):
                docs[tuple(t.text for t in doc)] = doc
        return list(docs.values())

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs) -> PhiGuard:
        return cls(load_phi_config(path), **kwargs)

    # -- finding -------------------------------------------------------------------------------
    def find(self, text: str) -> list[PhiSpan]:
        """Leftover identifiers in ``text``: sorted, non-overlapping, offsets into ``text``."""
        return self.find_many([text])[0]

    def find_many(self, texts: Iterable[str]) -> list[list[PhiSpan]]:
        """``find`` for many texts."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"note {i}: expected text (str), got {type(text).__name__}")
        tokenizer = self.nlp.tokenizer   # the tokenizer alone, also when the guard shares a pipeline
        return [self._find_doc(tokenizer(text), text) for text in texts]

    def find_docs(self, docs: Sequence, texts: Sequence[str]) -> list[list[PhiSpan]]:
        """``find`` for texts already split by a blank English tokenizer on this guard's vocab
        (``PhiGuard(nlp=nlp)``): the tagger tokenizes each note once for both."""
        return [self._find_doc(doc, text) for doc, text in zip(docs, texts)]

    def _find_doc(self, doc, text: str) -> list[PhiSpan]:
        cands, value_starts = self._matcher_spans(doc, text)
        cands += self._regex_spans(text, value_starts)
        if not cands:
            return []           # most notes: no need to look for the placeholders
        masked = self.placeholders.spans(text)
        return _resolve([(self._extend(c, text), rank) for c, rank in cands], masked)

    def _extend(self, span: PhiSpan, text: str) -> PhiSpan:
        """Grow a date over its weekday ("Monday, August 5"), an address over its unit, town and
        postcode ("Apt 3R, 2217 N. Kedzie Blvd, Chicago, IL 60647"), so redaction leaves none behind."""
        start, end = span.start, span.end
        if span.kind == "date":
            before = self.date_head.search(text, max(0, start - 20), start)
            if before:
                start = before.start()
        elif span.kind == "address":
            before = self.address_head.search(text, max(0, start - 24), start)
            if before:
                start = before.start()
            end = self.address_tail.match(text, end).end()
        return span if (start, end) == (span.start, span.end) else PhiSpan(start, end, span.kind)

    def _regex_spans(self, text: str, value_starts: set[int]) -> list[tuple[PhiSpan, int]]:
        out: list[tuple[PhiSpan, int]] = []

        def add(start: int, end: int, kind: str, rank: str | None = None) -> None:
            out.append((PhiSpan(start, end, kind), _RANK[rank or kind]))

        if "@" in text:
            for m in _EMAIL.finditer(text):
                add(m.start(), m.end(), "email")
        low = text.lower()
        for m in _URL.finditer(text) if _url_hint(text, low) else ():
            end = m.end()
            while end > m.start() and text[end - 1] in ".,;:!?)":
                end -= 1
            add(m.start(), end, "url")
        may = _digit_patterns(text)         # most notes have a few short runs of digits, or none
        for m in _SSN.finditer(text) if "ssn" in may else ():
            add(m.start(), m.end(), "id")
        for m in _PHONE.finditer(text) if "phone" in may else ():
            # a national number has 10-11 digits ("meds at 0800 1200 1600" are times)
            if m.group().startswith("0") and sum(ch.isdigit() for ch in m.group()) not in (10, 11):
                continue
            # an NHS/insurance number shaped like a phone number keeps its label's kind
            if m.start() not in value_starts or self.phone_cue.search(text[max(0, m.start() - 12):m.start()]):
                add(m.start(), m.end(), "phone")
        for m in _DIGITS.finditer(text) if "digits" in may else ():
            end = m.end()
            while text[end - 1].isspace() or text[end - 1] == "-":
                end -= 1
            digits = sum(ch.isdigit() for ch in m.group())
            if digits < 7 or _YEARS.fullmatch(text[m.start():end]) or _YEAR_LIST.fullmatch(m.group()) \
                    or _TIME_LIST.fullmatch(m.group()):
                continue
            before = text[max(0, m.start() - 24):m.start()]
            kind = "phone" if self.phone_cue.search(before) and digits in (10, 11) else "id"
            add(m.start(), end, kind, "digits")
        for m in _CODE.finditer(text) if "code" in may else ():
            if sum(ch.isdigit() for ch in m.group()) >= 5:
                add(m.start(), m.end(), "id", "digits")
        for m in _OBFUSCATED_EMAIL.finditer(text) if _dot_hint(text, low) else ():
            add(m.start(), m.end(), "email")
        for m in _NUM_DATE.finditer(text) if "num_date" in may else ():
            a, b = int(m.group(1)), int(m.group(3))
            if 1 <= min(a, b) <= 12 and 1 <= max(a, b) <= 31:
                add(m.start(), m.end(), "date")
        for m in _DAY_MONTH_YEAR.finditer(text) if "day_month_year" in may else ():
            add(m.start(), m.end(), "date")
        for m in _ISO_DATE.finditer(text) if "num_date" in may else ():
            add(m.start(), m.end(), "date")
        for m in _SHORT_DATE.finditer(text) if "short_date" in may else ():
            a, b = int(m.group(1)), int(m.group(2))
            if 1 <= a <= 12 and 1 <= b <= 31 and self.date_cue.search(text[max(0, m.start() - 16):m.start()]):
                add(m.start(), m.end(), "date")
        for m in _PO_BOX.finditer(text) if "po_box" in may else ():
            add(m.start(), m.end(), "address")
        for m in _UK_POSTCODE.finditer(text) if "postcode" in may else ():
            add(m.start(), m.end(), "address")
        return out

    def _matcher_spans(self, doc, text: str) -> tuple[list[tuple[PhiSpan, int]], set[int]]:
        """Candidates of the token rules, and where the values of identifier labels start."""
        out: list[PhiSpan] = []
        value_starts: set[int] = set()
        n = len(doc)
        for _match_id, _s, e in self.labels(doc):
            while e < n and doc[e].lower_ in _LABEL_GLUE:
                e += 1
            if e < n:
                start = doc[e].idx
                value_starts.add(start)
                end = _id_value(text, start)
                if end:
                    out.append(PhiSpan(start + (text[start] == "#"), end, "id"))
        strings = self.nlp.vocab.strings
        matches = []
        anchored = self._anchored(doc)
        for rule, matcher in self.matchers.items():
            gate = self.gates.get(rule)
            if rule not in self.anchors:
                if gate is None or gate.search(text):
                    matches += matcher(doc)
            elif ((self.anchors[rule].words is None or rule in anchored)     # no anchor word: no match
                  and (gate is None or gate.search(text))):
                matches += self._windowed_matches(rule, doc, anchored)
        matches += self.given(doc)
        for match_id, _s, e in self.relations(doc):
            e += e < n and doc[e].text == ","
            if e < n and _NAME_TOKEN_RE.match(doc[e].text):
                matches.append((match_id, e, e + 1))
        for match_id, s, e in matches:
            rule = strings[match_id]
            span = doc[s:e]
            if rule == "DATE":
                if self._month_ok(span):
                    out.append(PhiSpan(span.start_char, span.end_char, "date"))
            elif rule == "STREET":
                if all(t.lower_ not in self.excluded or t.lower_ in self.known_names for t in span[1:-1]):
                    out.append(PhiSpan(span[1].idx, span.end_char, "address"))
            elif rule == "ADDRESS":
                end = span.end_char
                if span[-1].lower_ in self.street_abbreviations and text[end:end + 1] == ".":
                    end += 1
                out.append(PhiSpan(span.start_char, end, "address"))
            elif rule == "TITLED":
                if self._titled_ok(doc, s, e):
                    out.append(PhiSpan(span.start_char, span.end_char, "name"))
            elif rule in ("PAIR", "PARTICLE"):
                if self._pair_ok(doc, s, e):
                    out.append(PhiSpan(span.start_char, span.end_char, "name"))
            elif rule == "INITIAL":
                tok = doc[e - 1]
                if self._name_word(tok) and self._namelike(tok.lower_) and not (
                        s > 0 and _NAME_TOKEN_RE.match(doc[s - 1].text)):
                    out.append(PhiSpan(span.start_char, span.end_char, "name"))
            elif rule == "GIVEN":
                tok = doc[s]
                if _NAME_TOKEN_RE.match(tok.text) and tok.lower_ not in self.excluded and not (
                        s > 0 and doc[s - 1].lower_.rstrip(".") in (self.place_words - {"to"}) | _SAINTS
                        or e + 1 < n and doc[e].lower_ in ("'s", "’s") and doc[e + 1].lower_ in self.excluded
                        or any(self._in_proper_noun(doc[j]) for j in (s - 1, e) if 0 <= j < n)):
                    out.append(PhiSpan(span.start_char, span.end_char, "name"))
            elif rule == "RELATED":
                tok = doc[s]
                if self._name_word(tok) and self._namelike(tok.lower_) and not (
                        e < n and _NAME_TOKEN_RE.match(doc[e].text)):
                    out.append(PhiSpan(tok.idx, tok.idx + len(tok.text), "name"))
        for m in self._letter_names(text):
            group = 1 if m.group(1) else 2
            word = m.group(group).lower()
            if word not in self.excluded and self._namelike(word):
                out.append(PhiSpan(m.start(group), m.end(group), "name"))
        return [(span, _RANK[span.kind]) for span in out], value_starts

    def _letter_names(self, text: str) -> list[re.Match]:
        """``self.letter_name.finditer(text)``: the match at the text's start, if any, then those of
        ``letter_name_on`` after it (the same, since past the start only its second way can match)."""
        first = self.letter_name.match(text)
        return ([first] if first else []) + list(self.letter_name_on.finditer(text, first.end() if first else 0))

    def _anchored(self, doc) -> dict[str, list[int]]:
        """The anchor tokens of the rules anchored on words, by rule (rules with none left out)."""
        strings = self.nlp.vocab.strings
        anchored: dict[str, list[int]] = {}
        for label, s, _e in self.anchor_words(doc):
            anchored.setdefault(strings[label], []).append(s)
        return anchored

    def _windowed_matches(self, rule: str, doc, anchored: dict[str, list[int]]) -> list[tuple[int, int, int]]:
        """``self.matchers[rule](doc)``, run only on the windows around the rule's anchor tokens (where
        all its matches lie); ``anchored``: from ``_anchored(doc)``."""
        anchor, matcher, n = self.anchors[rule], self.matchers[rule], len(doc)
        if anchor.words is not None:
            hits = anchored.get(rule, [])
        else:
            # one attribute per to_array call: spaCy fills a several-attribute array element by element
            hits = anchor.hits({"LOWER": doc.to_array(self.anchor_attrs[0]).tolist(),
                                "SHAPE": doc.to_array(self.anchor_attrs[1]).tolist()}) if n else []
        # a Matcher gives a Span's matches in the Span's offsets
        return [(match_id, s + a, e + a) for a, b in anchor.windows(hits, n)
                for match_id, s, e in matcher(doc[a:b])]

    def _month_ok(self, span) -> bool:
        """A month-name date: a real day, a capitalised month ("May 4", not "may 2 of them"), a dot
        only after an abbreviation ("Sept. 9", not "in March. 22 ..."), no holiday ("July 4th")."""
        month = day = None
        for t in span:
            number = re.match(r"\d{1,2}(?!\d)", t.text)
            if number:
                day = int(number.group())
                if not 1 <= day <= 31:
                    return False
            if t.lower_.rstrip(".") in self.months:
                month = t.lower_.rstrip(".")
                if not t.text[0].isupper():
                    return False
                if t.i + 1 < span.end and span.doc[t.i + 1].text == "." and len(t.text) > 4:
                    return False
        has_year = any(t.shape_ == "dddd" for t in span)
        return has_year or (month, day) not in self.holiday_days

    def _name_word(self, tok) -> bool:
        """A capitalised word that may be part of a person's name."""
        low = tok.lower_
        return bool(_NAME_TOKEN_RE.match(tok.text)) and low not in self.excluded

    def _in_proper_noun(self, tok) -> bool:
        """A capitalised place or organisation word next to a given name makes it part of a proper
        noun ("Northern Virginia", "Virginia Community College"); a role, greeting or calendar word
        does not ("Client Marisol", "Hi Adaeze", "Monday Kwame called")."""
        return tok.is_title and tok.lower_ in self.proper_noun_words

    def _namelike(self, low: str) -> bool:
        return low in self.first_names or low in self.surnames or low not in self.vocab

    def _titled_ok(self, doc, s: int, e: int) -> bool:
        title = doc[s]
        units = _name_units(doc[s + 1:e])
        words = [t for t, _ in units]
        weak = title.lower_.rstrip(".") in self.weak_titles
        if not words or not all(self._name_word(t) if weak else
                                (_NAME_TOKEN_RE.match(t.text) and t.lower_ not in self.not_after_title
                                 and (t.lower_ not in self.excluded or t.lower_ in self.known_names))
                                for t in words):
            return False
        if s > 0 and doc[s - 1].lower_ in self.determiners:
            return False            # "the Dr. Smith said" is rare; "saw the Dr. Then" is not
        if weak:
            return all(self._namelike(w) for _, w in units) and not self._at_sentence_start(title)
        return True

    def _at_sentence_start(self, tok) -> bool:
        prev = tok.doc[tok.i - 1] if tok.i > 0 else None
        return prev is None or prev.text in (".", "!", "?", ":", ";", '"', "(") or "\n" in prev.text

    def _pair_ok(self, doc, s: int, e: int) -> bool:
        units = [(t, w) for t, w in _name_units(doc[s:e]) if not t.is_lower]     # particles left out
        if len(units) < 2 or not all(self._name_word(t) for t, _ in units):
            return False
        first, last = units[0][1], units[-1][1]
        if s > 0 and doc[s - 1].lower_ in self.place_words and first not in self.first_names:
            return False            # "moved from Addis Ababa", "lives in Des Moines"
        if first in self.first_names:
            return first not in self.vocab or self._namelike(last)
        if last in self.surnames:
            return self._namelike(first)
        return all(word not in self.vocab and not word.endswith(self.term_ending) for _, word in units)

    # -- output --------------------------------------------------------------------------------
    def redact(self, text: str, spans: Sequence[PhiSpan] | None = None) -> str:
        """``text`` with every span replaced by the placeholder of its kind (``[NAME]`` ...)."""
        spans = self.find(text) if spans is None else spans
        return redact(text, spans)

    @staticmethod
    def flags(spans: Sequence[PhiSpan]) -> str:
        return flags(spans)


class _Anchor:
    """Where the matches of a rule can be. Each of its patterns has a required token (no "OP") that
    one of a few token specs describes, the anchor (and, with ``follow``, a required token right
    after it that one of ``follow`` describes); a match then lies within ``before`` tokens ahead of
    an anchor token and ``after`` tokens from it. The specs are read as LOWER and SHAPE values
    (``first``, ``then``: attribute -> hashes), which leaves out their other attributes (IS_TITLE,
    SPACY ...): wider than the specs, never narrower. ``words``: the LOWER values, when that is all."""

    __slots__ = ("first", "then", "before", "after", "words")

    def __init__(self, first: dict, then: dict | None, before: int, after: int, words: frozenset | None):
        self.first, self.then, self.before, self.after, self.words = first, then, before, after, words

    @classmethod
    def of(cls, patterns: list[list[dict]], specs: list[dict], strings, follow: list[dict] | None = None):
        """The anchor of ``patterns``, or None when a pattern has none or may repeat a token."""
        before = after = 0
        for pattern in patterns:
            if any(tok.get("OP") not in (None, "?") for tok in pattern):
                return None             # "+", "*", "{n,m}": a match may be longer than its pattern
            at = next((i for i, tok in enumerate(pattern) if "OP" not in tok and tok in specs), None)
            if at is None or follow is not None and not (
                    at + 1 < len(pattern) and "OP" not in pattern[at + 1] and pattern[at + 1] in follow):
                return None
            before, after = max(before, at), max(after, len(pattern) - at)
        first = _token_values(specs)
        then = _token_values(follow) if follow is not None else None
        if first is None or follow is not None and then is None:
            return None
        words = first["LOWER"] if then is None and set(first) == {"LOWER"} else None

        def hashed(values: dict[str, frozenset[str]]) -> dict[str, frozenset[int]]:
            return {attr: frozenset(strings[v] for v in vs) for attr, vs in values.items()}

        return cls(hashed(first), hashed(then) if then is not None else None, before, after, words)

    def hits(self, cols: dict[str, list[int]]) -> list[int]:
        """The anchor tokens, from the Doc's LOWER and SHAPE columns (hashes, one list each)."""
        hits = {i for attr, hashes in self.first.items() for i, h in enumerate(cols[attr]) if h in hashes}
        if self.then is not None:
            n = len(cols["LOWER"])
            hits = {i for i in hits if i + 1 < n and any(cols[attr][i + 1] in hashes
                                                          for attr, hashes in self.then.items())}
        return sorted(hits)

    def windows(self, hits: list[int], n: int) -> list[tuple[int, int]]:
        """Token ranges ``[a, b)`` (sorted, apart) that hold every match around the anchor tokens
        ``hits`` of a Doc of ``n`` tokens."""
        out: list[tuple[int, int]] = []
        for i in sorted(hits):
            a, b = max(0, i - self.before), min(n, i + self.after)
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(b, out[-1][1]))
            else:
                out.append((a, b))
        return out


def _token_values(specs: list[dict]) -> dict[str, frozenset[str]] | None:
    """The LOWER and SHAPE values of tokens that one of ``specs`` describes (an ORTH is read as its
    LOWER); None when a spec constrains neither to a list of values."""
    values: dict[str, set[str]] = {"LOWER": set(), "SHAPE": set()}
    for spec in specs:
        attr = next((a for a in ("LOWER", "ORTH", "SHAPE") if a in spec), None)
        if attr is None:
            return None
        value = spec[attr]
        if isinstance(value, dict) and set(value) != {"IN"}:
            return None
        words = value["IN"] if isinstance(value, dict) else [value]
        if not all(isinstance(w, str) for w in words):
            return None
        if attr == "ORTH":
            attr, words = "LOWER", [w.lower() for w in words]
        values[attr] |= set(words)
    return {attr: frozenset(vs) for attr, vs in values.items() if vs}


def _name_units(span) -> list[tuple[object, str]]:
    """The words of a candidate name as (first token, lower-case word), hyphenated parts joined
    ("Min-jung" is one word), initials and dots left out."""
    units: list[tuple[object, str]] = []
    join = False
    for tok in span:
        if tok.text == "-":
            join = True
        elif join and units:
            units[-1] = (units[-1][0], f"{units[-1][1]}-{tok.lower_}")
            join = False
        elif tok.text != "." and not (len(tok.text) <= 2 and tok.text.rstrip(".").isupper()):
            units.append((tok, tok.lower_))
    return units


def redact(text: str, spans: Sequence[PhiSpan]) -> str:
    """``text`` with each span replaced by its kind's placeholder; spans must not overlap."""
    out, pos = [], 0
    for span in sorted(spans):
        if span.start < pos or span.end > len(text) or span.kind not in PLACEHOLDER_OF:
            raise ValueError(f"span {span.start}-{span.end} ({span.kind}) overlaps another, lies outside "
                             "the text or has an unknown kind")
        out += [text[pos:span.start], PLACEHOLDER_OF[span.kind]]
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def flags(spans: Sequence[PhiSpan]) -> str:
    """The per-row summary: ``"name:2;phone:1"`` (kinds in alphabetical order), ``""`` when none."""
    counts = Counter(s.kind for s in spans)
    return ";".join(f"{kind}:{counts[kind]}" for kind in sorted(counts))


def _resolve(cands: list[tuple[PhiSpan, int]], masked: list[tuple[int, int, str]]) -> list[PhiSpan]:
    """Non-overlapping spans, no placeholder inside any; lower rank, then longer, wins."""
    cands = [(c, r) for c, r in cands
             if c.end > c.start and not any(c.start < me and ms < c.end for ms, me, _ in masked)]
    cands.sort(key=lambda cr: (cr[1], -(cr[0].end - cr[0].start), cr[0].start))
    kept: list[PhiSpan] = []
    for c, _rank in cands:
        if all(c.end <= k.start or c.start >= k.end for k in kept):
            kept.append(c)
    return sorted(kept)


def _url_hint(text: str, low: str) -> bool:
    """``_URL_HINT.search(text)`` (``low``: ``text.lower()``), after a quicker look for a piece that
    each of its branches needs ("://", "www.", ".org" ...)."""
    return bool(("://" in text or "www." in low or _TLD_HINT.search(text)) and _URL_HINT.search(text))


def _dot_hint(text: str, low: str) -> bool:
    """``_DOT_HINT.search(text)``, after a quicker look for a piece each of its branches needs."""
    return bool(("dot" in low or "[at" in low or "(at" in low or any(f".{tld}" in low for tld in _DOT_TLDS))
                and _DOT_HINT.search(text))


_DIGIT_RUN = re.compile(r"\d+")
_CODE_GLUE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ-"


def _digit_patterns(text: str) -> set[str]:
    """Which digit patterns may match ``text``, told from its runs of digits (\\d+, as the patterns
    read digits): each pattern needs what is looked for here, so one left out cannot match."""
    may: set[str] = set()
    if "+" in text:
        may.add("phone")                                    # "+44 7700 900123"
    prev = None
    chain = 0
    for m in _DIGIT_RUN.finditer(text):
        start, end = m.span()
        if end - start >= 3:                                # _SSN, _DIGITS, _PHONE but "+..."
            may.update(("ssn", "phone", "digits"))
        if start and "A" <= text[start - 1] <= "Z":        # _UK_POSTCODE: "LS2 7EE"
            may.add("postcode")
        j = start
        while j and text[j - 1].isspace():
            j -= 1
        if j < start and j and text[j - 1] in "xX":        # _PO_BOX: "Box 12"
            may.add("po_box")
        gap = text[prev[1]:start] if prev else None
        # _CODE: five digits in a run of capitals, digits and hyphens ("CLM-2024-0038817")
        chain = chain + end - start if gap is not None and not gap.strip(_CODE_GLUE) else end - start
        if chain >= 5:
            may.add("code")
        if gap is not None:
            if len(gap) == 1 and gap in "/.-":              # _NUM_DATE, _ISO_DATE: "3/14/2021", "2019-08-03"
                may.add("num_date")
                if gap == "/":                              # _SHORT_DATE: "3/14"
                    may.add("short_date")
            # _DAY_MONTH_YEAR: "4-Mar-2023", "4 March 23": a day, then a month between two separators
            if prev[1] - prev[0] <= 2 and len(gap) >= 5 and gap[0] in "-/ " and gap[-1] == gap[0]:
                may.add("day_month_year")
        prev = (start, end)
    return may


def _id_value(text: str, pos: int) -> int | None:
    """End of the identifier value starting at ``pos`` (has a digit; letters, digits, -, / and
    single spaces between digit groups), or None when there is none."""
    pos += text[pos:pos + 1] == "#"
    m = re.match(r"[A-Za-z]{0,4}[-/ ]?\d[\dA-Za-z]*(?:[-/.]\w*\d\w*|\s\d{2,}(?=\s|$|[.,;:)]))*"
                 r"(?:\s[A-Z](?=[\s.,;:)]|$))?", text[pos:pos + 40])
    if not m:
        return None
    value = m.group()
    if sum(ch.isdigit() for ch in value) < 4 or re.fullmatch(r"\d{1,4}/\d{1,4}|(?:19|20)\d\d", value):
        return None
    return pos + len(value)


_VOCAB: set[str] | None = None


def _english_words() -> set[str]:
    """Lower-case English words: the forms and lemmas of spaCy's English lemma lookup table (from
    spacy-lookups-data, the table the lemma component reads: loaded once per process) plus spaCy's
    stop words."""
    global _VOCAB
    if _VOCAB is None:
        from spacy.lang.en.stop_words import STOP_WORDS

        from iptnlp.preprocess import _lemma_table

        words = {w.lower() for w in STOP_WORDS}
        for form, lemma in _lemma_table().items():
            words.add(form.lower())
            words.add(str(lemma).lower())
        _VOCAB = words
    return _VOCAB


# -- the labelled set ------------------------------------------------------------------------------
_MARK = re.compile(r"\{\{(\w+)\|(.*?)\}\}", re.S)


def load_marked(path: str | Path) -> list[tuple[str, list[PhiSpan]]]:
    """Labelled notes from JSONL lines ``{"id": ..., "marked": "... {{kind|text}} ..."}``:
    the plain text and its gold spans (character offsets into the plain text)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labelled file not found: {path}")
    items: list[tuple[str, list[PhiSpan]]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                marked = record["marked"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{lineno}: not a JSON object with a 'marked' field") from None
            if not isinstance(marked, str):
                raise InputError(f"{path}:{lineno}: 'marked' is not a string")
            parts, spans, pos, length = [], [], 0, 0
            for m in _MARK.finditer(marked):
                kind, inner = m.group(1), m.group(2)
                if kind not in KINDS:
                    raise InputError(f"{path}:{lineno}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
                parts.append(marked[pos:m.start()])
                length += m.start() - pos
                spans.append(PhiSpan(length, length + len(inner), kind))
                parts.append(inner)
                length += len(inner)
                pos = m.end()
            parts.append(marked[pos:])
            items.append(("".join(parts), spans))
    return items


def score(guard: PhiGuard, items: Sequence[tuple[str, Sequence[PhiSpan]]]) -> dict:
    """Span-level recall (gold spans overlapped by any predicted span) and precision (predicted
    spans overlapping any gold span), overall and per kind (gold kind for recall, predicted kind
    for precision)."""
    predicted = guard.find_many([text for text, _ in items])
    counts = {k: Counter() for k in ("overall", *KINDS)}
    for (_text, gold), pred in zip(items, predicted):
        for g in gold:
            hit = any(p.start < g.end and g.start < p.end for p in pred)
            for key in ("overall", g.kind):
                counts[key]["gold"] += 1
                counts[key]["found"] += hit
        for p in pred:
            hit = any(p.start < g.end and g.start < p.end for g in gold)
            for key in ("overall", p.kind):
                counts[key]["predicted"] += 1
                counts[key]["correct"] += hit
    out: dict = {}
    for key, c in counts.items():
        out[key] = {"recall": c["found"] / c["gold"] if c["gold"] else None,
                    "precision": c["correct"] / c["predicted"] if c["predicted"] else None,
                    "gold": c["gold"], "predicted": c["predicted"]}
    return out

"""The corpus as the corpus issue asks for it: size, balance, courses, variety, no near-duplicates."""

from collections import Counter

from iptnlp.taxonomy import AREAS


def test_size_and_balance(corpus_records):
    assert len(corpus_records) >= 2400
    counts = Counter(r["area"] for r in corpus_records)
    assert all(counts[a] >= 500 for a in AREAS), counts


def test_courses(corpus_records):
    courses = Counter(r["case_id"] for r in corpus_records if r["case_id"])
    multi = [c for c, n in courses.items() if n >= 2]
    assert len(multi) >= 60
    # every note of a course shares the course's focus
    focus = {}
    for r in corpus_records:
        if r["case_id"]:
            focus.setdefault(r["case_id"], set()).add(r["focus"])
    assert all(len(f) == 1 for f in focus.values())


def test_variety(corpus_records):
    words = [len(r["text"].split()) for r in corpus_records]
    assert min(words) <= 12 and max(words) >= 350
    formats = Counter(r["format"] for r in corpus_records)
    assert {"soap", "dap", "birp", "narrative", "transcript", "one_liner"} <= set(formats)
    texts = " ".join(r["text"] for r in corpus_records)
    for placeholder in ("[NAME]", "[PERSON]", "<PERSON>", "[**", "XXX", "[DATE]", "[LOCATION]", "***"):
        assert placeholder in texts, placeholder


def test_most_notes_do_not_name_the_area(corpus_records):
    names = ("grief", "role dispute", "role transition", "interpersonal deficit", "problem area")
    naming = sum(any(n in r["text"].lower() for n in names) for r in corpus_records)
    assert naming / len(corpus_records) < 0.2   # "most notes naming no area word at all"


def test_no_near_duplicates_across_courses(corpus_records):
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [r["text"] for r in corpus_records]
    group = [r["case_id"] or f"note:{r['note_id']}" for r in corpus_records]
    X = TfidfVectorizer().fit_transform(texts)
    sims = (X @ X.T).tocoo()
    close = [(corpus_records[i]["note_id"], corpus_records[j]["note_id"], round(float(v), 3))
             for i, j, v in zip(sims.row, sims.col, sims.data)
             if i < j and v > 0.9 and group[i] != group[j]]
    assert close == []

"""Property-based tests: arbitrary Unicode, arbitrary column names and orders, every format.

Never a crash, always exactly one normalised row per input row, in order; the spaCy stage, the
identifier guard and the tagger accept any text and keep their offsets inside it.
"""

from __future__ import annotations

import json

import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from iptnlp.io import InputSpec, read_chunks

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
texts = st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "\n\n", "[NAME]", "***", "XXX", "T:", "S:"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(texts, min_size=1, max_size=15), extra=st.lists(names, max_size=4, unique=True),
       position=st.integers(0, 4), fmt=st.sampled_from(["csv", "tsv", "jsonl", "parquet"]),
       chunk=st.integers(1, 6))
def test_readers_give_one_row_per_input_row(tmp_path_factory, rows, extra, position, fmt, chunk):
    extra = [c for c in extra if c.strip() and c not in ("text", "note_id", "_error")]
    if fmt in ("csv", "tsv"):   # a column name a CSV cannot hold is not a CSV: keep to what can be written
        assume(all(c.strip() == c and '"' not in c and not c.startswith("#") for c in extra))
        rows = [t.replace("\r", "") for t in rows]
    columns = list(extra)
    columns.insert(min(position, len(columns)), "text")
    df = pd.DataFrame({c: (rows if c == "text" else [f"{c}-{i}" for i in range(len(rows))]) for c in columns})
    d = tmp_path_factory.mktemp("prop")
    path = d / f"in.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in df.to_dict("records")),
                        encoding="utf-8")
    else:
        df.to_parquet(path)
    out = pd.concat(list(read_chunks(str(path), InputSpec(chunk_size=chunk))), ignore_index=True)
    assert len(out) == len(rows)
    assert out["row"].tolist() == list(range(1, len(rows) + 1))
    assert out["note_id"].tolist() == [f"in:{i}" for i in range(1, len(rows) + 1)]
    for text, got, err in zip(rows, out["text"], out["error"]):
        assert (got is None) == isinstance(err, str)
        if got is not None:
            assert got.strip() and (got == text or fmt in ("csv", "tsv"))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_the_spacy_stage_and_the_guard_take_any_text(shipped_preprocessor, text):
    doc = next(shipped_preprocessor.pipe([text]))
    assert len(doc._.iptnlp_neg) == len(doc._.iptnlp_hyp) == len(doc._.iptnlp_speaker) == len(doc)
    assert isinstance(shipped_preprocessor.features(doc), str)
    from iptnlp.phi import PhiGuard

    guard = _guard()
    spans = guard.find(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert isinstance(guard.redact(text, spans), str)
    assert isinstance(PhiGuard.flags(spans), str)


_GUARD = []


def _guard():
    from iptnlp.phi import PhiGuard

    if not _GUARD:
        _GUARD.append(PhiGuard.from_config())
    return _GUARD[0]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=200), min_size=1, max_size=8), st.sampled_from(["flag", "redact", "skip"]))
def test_tagging_any_text_keeps_rows_and_offsets(small_model, notes, on_phi):
    from iptnlp.tagger import tag

    out = tag(pd.DataFrame({"text": notes}), small_model, on_phi=on_phi)
    assert len(out) == len(notes)
    for text, (_, row) in zip(notes, out.iterrows()):
        assert row["status"] in ("ok", "error", "skipped")
        if row["status"] == "ok" and on_phi != "redact":
            spans = row["evidence"]["area"] + [s for v in row["evidence"]["themes"].values() for s in v]
            assert all(0 <= s < e <= len(text) and text[s:e] == w for s, e, w in spans)

"""Trust: the bad-input battery through `iptnlp tag`, leftover identifiers, a canary that must never
leak, and runs that are killed or collide."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback

import pandas as pd
import pytest
from click.testing import CliRunner

from iptnlp.cli import main

CANARY = "ZQXJ-canary-7731"
LEFTOVER = "Seen with Mr. Okafor on March 3, 2024; call him at (555) 201-4437. Argued with his sister."


def note(text: str) -> str:
    """Every note of the battery carries the canary, so a leak anywhere shows."""
    return f"{text} {CANARY}"


def _csv(path, df):
    df.to_csv(path, index=False)


# Each case: a name, a function writing the input into a folder and returning (path, extra args),
# the expected exit code, a fragment of the expected message (or None), and the expected output rows
# (None: no output file) as (statuses or None).
def _empty(d):
    p = d / "empty.csv"
    p.write_bytes(b"")
    return p, []


def _header_only(d):
    p = d / "header.csv"
    p.write_text("note_id,text\n")
    return p, []


def _no_text_column(d):
    p = d / "notext.csv"
    _csv(p, pd.DataFrame({"note_id": ["a"], "body": [note("Argued with her mother.")]}))
    return p, []


def _all_empty_text(d):
    p = d / "allempty.csv"
    p.write_text("note_id,text\na,\nb,\nc,\n")
    return p, []


def _null_and_whitespace(d):
    p = d / "nulls.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"note_id": "a", "text": None}, {"note_id": "b", "text": "  \t\n "},
        {"note_id": "c", "text": note("Misses her late father every evening.")}, {"note_id": "d"}]) + "\n")
    return p, []


def _one_megabyte(d):
    p = d / "big.jsonl"
    big = note("Since her husband died she cannot open his letters. " * 20000)
    p.write_text(json.dumps({"note_id": "big", "text": big[:1_000_000]}) + "\n")
    return p, []


def _binary(d):
    p = d / "garbage.csv"
    p.write_bytes(bytes(range(256)) * 64 + CANARY.encode())
    return p, []


def _bad_utf8_line(d):
    p = d / "latin.csv"
    p.write_bytes(b"note_id,text\na," + note("fine").encode() + b"\nb,caf\xe9 " + CANARY.encode()
                  + b" argued with his brother\n")
    return p, []


def _bad_utf8_latin1(d):
    p, _ = _bad_utf8_line(d)
    return p, ["--encoding", "latin-1"]


def _bom_crlf(d):
    p = d / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfnote_id,text\r\na," + note("New job in a new city and no friends yet.").encode()
                  + b"\r\nb," + note("Lonely since school.").encode() + b"\r\n")
    return p, []


def _embedded_newlines(d):
    p = d / "quotes.csv"
    _csv(p, pd.DataFrame({"note_id": ["a", "b"], "text": [note('She said "leave"\nand he left,\r\nagain.'),
                                                           note("Line one\n\nLine three, \"quoted\"")]}))
    return p, []


def _ragged(d):
    p = d / "ragged.csv"
    p.write_text(f"note_id,text\na,{note('ok note')}\nb,{note('too')},many,fields\n")
    return p, []


def _malformed_jsonl(d):
    p = d / "broken.jsonl"
    p.write_text(json.dumps({"note_id": "a", "text": note("Argued with her boss.")}) + "\n"
                 + '{"note_id": "b", "text": "' + CANARY + '\n'
                 + json.dumps({"note_id": "c", "text": note("Retired last spring.")}) + "\n")
    return p, []


def _malformed_jsonl_fail(d):
    p, _ = _malformed_jsonl(d)
    return p, ["--on-error", "fail"]


def _duplicate_ids(d):
    p = d / "dups.csv"
    _csv(p, pd.DataFrame({"note_id": ["x", "y", "x"], "text": [note("Argued again."), note("Moved house."),
                                                                note("Misses her mother.")]}))
    return p, []


def _non_english(d):
    p = d / "foreign.jsonl"
    p.write_text("\n".join(json.dumps({"note_id": i, "text": note(t)}, ensure_ascii=False) for i, t in [
        ("fr", "Elle se dispute sans cesse avec sa sœur au sujet de l'héritage."),
        ("ja", "母が亡くなってから眠れません。"), ("ar", "أشعر بالوحدة منذ سنوات")]) + "\n")
    return p, []


def _bad_sessions(d):
    p = d / "sessions.csv"
    _csv(p, pd.DataFrame({"note_id": list("abcde"), "text": [note("Argued with wife.")] * 5,
                          "session": ["3a", "-1", "0", "14", "2"], "total_sessions": ["12"] * 5}))
    return p, []


def _parquet_wrong_type(d):
    p = d / "ints.parquet"
    pd.DataFrame({"note_id": ["a"], "text": [12345]}).to_parquet(p)
    return p, []


BATTERY = [
    ("empty file", _empty, 1, "file is empty", None),
    ("header only", _header_only, 0, None, []),
    ("missing text column", _no_text_column, 1, "no 'text' column", None),
    ("all-empty text column", _all_empty_text, 0, None, ["error"] * 3),
    ("null, whitespace, missing text", _null_and_whitespace, 0, None, ["error", "error", "ok", "error"]),
    ("a 1 MB note", _one_megabyte, 0, None, ["ok"]),
    ("binary garbage", _binary, 1, "not valid utf-8", None),
    ("invalid UTF-8 in one line", _bad_utf8_line, 1, "line 3", None),
    ("invalid UTF-8 read as latin-1", _bad_utf8_latin1, 0, None, ["ok", "ok"]),
    ("byte-order mark and CRLF", _bom_crlf, 0, None, ["ok", "ok"]),
    ("embedded newlines and quotes", _embedded_newlines, 0, None, ["ok", "ok"]),
    ("ragged CSV rows", _ragged, 1, "line 3", None),
    ("malformed JSONL line, marked", _malformed_jsonl, 0, None, ["ok", "error", "ok"]),
    ("malformed JSONL line, fail", _malformed_jsonl_fail, 1, "line 2", None),
    ("duplicate note_ids", _duplicate_ids, 0, "used by more than one row", ["ok", "ok", "ok"]),
    ("non-English text", _non_english, 0, None, ["ok", "ok", "ok"]),
    ("bad session values", _bad_sessions, 0, None, ["error", "error", "error", "error", "ok"]),
    ("Parquet text of the wrong type", _parquet_wrong_type, 1, "not text", None),
]


@pytest.mark.parametrize("name,make,code,message,statuses", BATTERY, ids=[b[0] for b in BATTERY])
def test_bad_input_battery(tmp_path, small_model_dir, caplog, name, make, code, message, statuses):
    src, extra = make(tmp_path)
    out = tmp_path / "out.jsonl"
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(main, ["tag", str(src), "-o", str(out), "--model", str(small_model_dir),
                                       *extra])
    assert result.exit_code == code, result.output
    if message:
        assert message.lower() in result.output.lower()
    if code:
        assert result.output.count("Error:") == 1 and not out.exists()
    if statuses is not None:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [r["status"] for r in rows] == statuses
        assert all((r["error"] is None) == (r["status"] == "ok") for r in rows)
        assert all(r["area"] for r in rows if r["status"] == "ok")
    # the canary: never on stderr/stdout, in a log record, or in an exception and its traceback
    assert CANARY not in result.output
    assert not any(CANARY in r.getMessage() for r in caplog.records)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert CANARY not in "".join(traceback.format_exception(result.exception))


def test_non_english_notes_get_low_confidence(tmp_path, small_model_dir):
    src, _ = _non_english(tmp_path)
    out = tmp_path / "o.jsonl"
    CliRunner().invoke(main, ["tag", str(src), "-o", str(out), "--model", str(small_model_dir)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert max(r["confidence"] for r in rows) < 0.6


@pytest.mark.parametrize("mode,status,flags,redacted", [
    ("flag", "ok", "date:1;name:1;phone:1", False),
    ("redact", "ok", "date:1;name:1;phone:1", True),
    ("skip", "skipped", "date:1;name:1;phone:1", None),
])
def test_leftover_identifiers(tmp_path, small_model_dir, mode, status, flags, redacted):
    src = tmp_path / "phi.csv"
    _csv(src, pd.DataFrame({"note_id": ["a", "b"], "text": [LEFTOVER, "Argued with [NAME] about money."]}))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["tag", str(src), "-o", str(out), "--model", str(small_model_dir),
                                       "--on-phi", mode])
    assert result.exit_code == 0, result.output
    a, b = [json.loads(line) for line in out.read_text().splitlines()]
    assert (a["status"], a["phi_flags"], b["status"], b["phi_flags"]) == (status, flags, "ok", "")
    assert "leftover identifiers in 1 notes (date 1, name 1, phone 1)" in result.output
    if mode == "skip":
        assert a["area"] is None and "not tagged" in a["error"] and "Okafor" not in a["error"]
    elif redacted:   # the tagger saw only the redacted note: evidence offsets point into it
        from iptnlp.phi import PhiGuard

        red = PhiGuard.from_config().redact(LEFTOVER)
        assert red.startswith("Seen with [NAME] on [DATE]")
        spans = a["evidence"]["area"] + [s for v in a["evidence"]["themes"].values() for s in v]
        assert spans and all(red[s:e] == w for s, e, w in spans)
        assert not any("Okafor" in w or "555" in w for _s, _e, w in spans)
    else:
        assert a["area"] in ("grief", "role_dispute", "role_transition", "interpersonal_deficits")


def test_on_phi_fail_names_the_row_not_the_identifier(tmp_path, small_model_dir):
    src = tmp_path / "phi.csv"
    _csv(src, pd.DataFrame({"note_id": ["a", "b"], "text": ["Argued with [NAME].", LEFTOVER]}))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["tag", str(src), "-o", str(out), "--model", str(small_model_dir),
                                       "--on-phi", "fail"])
    assert result.exit_code == 1
    assert "row 2 (note_id b) holds leftover identifiers (date:1;name:1;phone:1)" in result.output
    assert "Okafor" not in result.output and "555" not in result.output and not out.exists()


def _model_bytes(model_dir) -> bytes:
    """Every byte a model folder holds, with the skops archives' members decompressed."""
    import zipfile
    from pathlib import Path

    blob = b""
    for path in sorted(Path(model_dir).iterdir()):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                blob += b"".join(zf.read(n) for n in zf.namelist())
        else:
            blob += path.read_bytes()
    return blob


def test_a_trained_model_keeps_no_identifier_or_note_text(tmp_path, small_corpus):
    """Features are hashed (no vocabulary is saved) and numbers become one token: names, record
    numbers and words of the training notes cannot be read back out of the model files."""
    from iptnlp.train import train_model

    planted = ["Okafor", "4471229931", "Gonzalez-Whitfield", CANARY]
    data = tmp_path / "train.jsonl"
    extra = [{"note_id": f"p{i}", "area": "role_dispute", "text": f"Mr. {planted[0]} (MRN {planted[1]}) argued "
              f"with Maria {planted[2]} again about money {planted[3]}."} for i in range(3)]
    data.write_text(small_corpus.read_text() + "".join(json.dumps(r) + "\n" for r in extra))
    train_model([str(data)], tmp_path / "m", cv_folds=0)
    blob = _model_bytes(tmp_path / "m")
    for word in planted + ["argued with Maria"]:
        assert word.encode() not in blob and word.lower().encode() not in blob


def test_shipped_model_files_hold_no_phrase_of_the_corpus(corpus_records):
    import re
    import zipfile

    from iptnlp.config import REPO_ROOT

    blob = b""
    for name in ("model.skops", "themes.skops", "linear.npz"):
        with zipfile.ZipFile(REPO_ROOT / "models" / "ipt-area" / name) as zf:
            blob += b"".join(zf.read(n) for n in zf.namelist())
    def trigrams(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"[a-z]+", text.lower())
        return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}

    in_model = trigrams(blob.decode("latin-1"))
    in_corpus = set().union(*(trigrams(r["text"]) for r in corpus_records[::3]))
    assert len(in_corpus) > 50000 and len(in_model) > 100
    assert not {t for t in in_model & in_corpus if all(len(w) > 2 for w in t)}


def _wait_for_parts(partial, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if partial.is_dir() and len(list(partial.glob("*.done"))) >= n:
            return True
        time.sleep(0.05)
    return False


def test_a_killed_run_leaves_no_output_and_resumes(tmp_path, small_model_dir, corpus_records):
    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps({"note_id": r["note_id"], "text": r["text"]}) + "\n"
                           for r in corpus_records[:300]))
    out = tmp_path / "out.csv"
    args = [sys.executable, "-m", "iptnlp.cli", "tag", str(src), "-o", str(out), "--model",
            str(small_model_dir), "--batch-size", "10", "--workers", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = tmp_path / ".out.csv.partial"
    assert _wait_for_parts(partial, 3, proc), "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # a second run into the same path, while the first is gone: resume continues it
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "after" in done.stderr and "rows of the interrupted run" in done.stderr
    resumed = pd.read_csv(out)
    fresh = tmp_path / "fresh.csv"
    subprocess.run([*args[:6], str(fresh), *args[7:]], check=True, capture_output=True)
    pd.testing.assert_frame_equal(resumed, pd.read_csv(fresh))
    assert resumed["row"].tolist() == list(range(1, 301))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.csv", "notes.jsonl", "out.csv"]


def test_two_runs_into_one_path_never_interleave(tmp_path, small_model_dir, corpus_records):
    """A run holding the output path (here: a writer in this process) makes another process refuse."""
    from iptnlp.io import ResultWriter

    src = tmp_path / "notes.jsonl"
    src.write_text("".join(json.dumps({"note_id": r["note_id"], "text": r["text"]}) + "\n"
                           for r in corpus_records[:30]))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "iptnlp.cli", "tag", str(src), "-o", str(out), "--model",
            str(small_model_dir), "--force"]
    holder = ResultWriter(str(out), ["note_id"])
    second = subprocess.run(args, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"another iptnlp run (pid {os.getpid()}) is writing" in second.stderr
    holder.write(pd.DataFrame({"note_id": ["first"]}))
    holder.close()
    assert out.read_text() == '{"note_id": "first"}\n'
    third = subprocess.run(args, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    assert len(out.read_text().splitlines()) == 30


def test_resume_refuses_stdin_and_sees_a_note_edited_in_a_folder(tmp_path, small_model):
    from iptnlp.errors import OutputError
    from iptnlp.io import InputSpec
    from iptnlp.tagger import run_fingerprint, tag_files

    with pytest.raises(OutputError, match="--resume cannot check that stdin"):
        tag_files(["-"], str(tmp_path / "o.csv"), small_model, InputSpec(), resume=True)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("Argued with her sister.")
    before = run_fingerprint([str(folder)], small_model, InputSpec(), threshold=None, course_length=16)
    (folder / "a.txt").write_text("Argued with her brother.")   # same folder, one note edited in place
    after = run_fingerprint([str(folder)], small_model, InputSpec(), threshold=None, course_length=16)
    assert before != after


def test_numeric_case_ids_with_gaps_stay_one_case(tmp_path):
    from iptnlp.io import InputSpec, read_chunks

    src = tmp_path / "n.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "a", "case_id": 7}, {"text": "b", "case_id": 7}, {"text": "c"}, {"text": "d", "case_id": 7}]))
    ids = [c for f in read_chunks(str(src), InputSpec(chunk_size=2)) for c in f["case_id"]]
    assert [None if pd.isna(c) else c for c in ids] == ["7", "7", None, "7"]


def test_a_headerless_file_does_not_show_short_note_words(tmp_path, small_model_dir):
    src = tmp_path / "noheader.csv"
    src.write_text(f"a,Seen with Mr. Okafor re sister {CANARY}\nb,second note\n")
    result = CliRunner().invoke(main, ["tag", str(src), "-o", str(tmp_path / "o.csv"), "--model",
                                       str(small_model_dir)])
    assert result.exit_code == 1 and "no 'text' column" in result.output
    assert "Okafor" not in result.output and CANARY not in result.output


def test_dask_engine_errors_never_quote_the_notes(tmp_path, small_model, capfd):
    pytest.importorskip("distributed")
    from iptnlp.dask_engine import tag_files_dask
    from iptnlp.errors import IptnlpError
    from iptnlp.io import InputSpec

    src = tmp_path / "late-bad-byte.csv"
    good = "".join(f"n{i},Argued with her sister about the house again {i}\n" for i in range(6000))
    src.write_bytes(b"note_id,text\n" + good.encode() + b"bad,caf\xe9 " + CANARY.encode() + b"\n")
    with pytest.raises(IptnlpError) as err:
        tag_files_dask([str(src)], str(tmp_path / "o.csv"), small_model, InputSpec(), workers=1)
    assert "late-bad-byte.csv" in str(err.value) and CANARY not in str(err.value)
    out, errout = capfd.readouterr()
    assert CANARY not in out and CANARY not in errout
    assert not (tmp_path / "o.csv").exists()


def test_empty_stdin_is_an_error_not_an_empty_success(small_model_dir):
    result = CliRunner().invoke(main, ["tag", "-", "--model", str(small_model_dir)], input="")
    assert result.exit_code == 1
    assert "Error: <stdin>: no notes arrived (empty input)" in result.output
    assert "{" not in result.output


def test_a_note_that_breaks_the_pipeline_is_one_error_row_and_the_run_goes_on(small_model, monkeypatch):
    """A bug of ours on one note (here: a component that fails on it) costs that note, not the run,
    and its error names the exception's type, never its message (which may quote the note)."""
    import pandas as pd

    from iptnlp.tagger import tag

    secret = "Zebulon-Quartermaine"
    pipe = small_model.preprocessor.pipe

    def breaking_pipe(docs):
        for d in pipe(docs):
            if secret in d.text:
                raise ValueError(f"cannot handle {secret!r}")
            yield d

    monkeypatch.setattr(small_model.preprocessor, "pipe", breaking_pipe)
    notes = pd.DataFrame({"note_id": ["a", "b", "c"],
                          "text": ["Argued with her sister again.", f"Met {secret} at the shop.",
                                   "Misses her late husband."]})
    out = tag(notes, small_model)
    assert out["status"].tolist() == ["ok", "error", "ok"]
    assert "ValueError" in out["error"].iat[1] and "row 2" in out["error"].iat[1]
    assert secret not in out.to_string()
    assert out["area"].iat[0] and out["area"].iat[2] and pd.isna(out["area"].iat[1])


def test_a_fault_on_every_note_stops_the_run_without_quoting_a_note(small_model, monkeypatch):
    """When every note of a chunk fails, the fault is ours (a broken model or pipeline), not the notes':
    the run stops with an error that names the exception's type, and our own errors stay as they are."""
    import pandas as pd

    from iptnlp.errors import ModelError
    from iptnlp.tagger import tag

    notes = pd.DataFrame({"text": ["Argued with Zebulon-Quartermaine again.", "Misses Zebulon-Quartermaine."]})

    def broken(_docs):
        raise ValueError("cannot read 'Zebulon-Quartermaine'")

    monkeypatch.setattr(small_model.preprocessor, "pipe", broken)
    with pytest.raises(RuntimeError) as caught:
        tag(notes, small_model)
    assert "every note" in str(caught.value) and "ValueError" in str(caught.value)
    assert "Zebulon" not in str(caught.value) and caught.value.__context__ is None

    def unreadable(_docs):
        raise ModelError("the model cannot be read; rebuild it with make train")

    monkeypatch.setattr(small_model.preprocessor, "pipe", unreadable)
    with pytest.raises(ModelError):
        tag(notes, small_model)

import json

import pandas as pd
import pytest

from iptnlp.errors import InputError, OutputError
from iptnlp.io import InputSpec, ResultWriter, probe, read_chunks

SPEC = InputSpec(chunk_size=2)


def rows(path, spec=SPEC):
    frames = list(read_chunks(str(path), spec))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def test_csv_chunks_keep_order_and_row_numbers(tmp_path):
    p = tmp_path / "n.csv"
    pd.DataFrame({"note_id": list("abcde"), "text": ["x one", "x two", "x three", "x four", "x five"]}).to_csv(p, index=False)
    df = rows(p)
    assert df["note_id"].tolist() == list("abcde")
    assert df["row"].tolist() == [1, 2, 3, 4, 5]
    assert df["error"].isna().all()


def test_tsv_parquet_jsonl_and_folder(tmp_path):
    frame = pd.DataFrame({"note_id": ["a", "b"], "text": ["one note", "two note"], "session": [1, 2]})
    frame.to_csv(tmp_path / "n.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "n.parquet")
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "b.txt").write_text("two note")
    (folder / "a.txt").write_text("one note")
    for path in ("n.tsv", "n.parquet", "n.jsonl", "notes"):
        df = rows(tmp_path / path)
        assert df["note_id"].tolist() == ["a", "b"], path
        assert df["text"].tolist() == ["one note", "two note"], path


def test_missing_id_column_gives_file_and_row_ids(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("text\nfirst note\nsecond note\n")
    assert rows(p)["note_id"].tolist() == ["n:1", "n:2"]


def test_empty_and_whitespace_text_marked_not_dropped(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text('note_id,text\na,real text\nb,\nc,"   "\n')
    df = rows(p)
    assert df["note_id"].tolist() == ["a", "b", "c"]
    assert df["error"].tolist() == [None, "row 2: text is missing or not a string", "row 3: text is empty"]


@pytest.mark.parametrize("value,ok", [("3", True), ("4.0", True), ("3a", False), ("2.5", False), ("-1", False), ("0", False), ("", True), ("nan", False), ("²", False), ("inf", False)])
def test_session_values(tmp_path, value, ok):
    p = tmp_path / "n.csv"
    p.write_text(f"text,session\nsome note,{value}\n")
    error = rows(p)["error"].iloc[0]
    if ok:
        assert error is None
    else:
        assert error == "row 1: session must be a whole number from 1 up (or empty); fix the value in column 'session'"


def test_session_past_course_end(tmp_path):
    p = tmp_path / "n.csv"
    p.write_text("text,session,total_sessions\nsome note,14,12\n")
    assert rows(p)["error"].iloc[0] == "row 1: session is greater than total_sessions"


def test_byte_order_mark_is_not_part_of_the_header(tmp_path):
    p = tmp_path / "n.csv"
    p.write_bytes("\ufefftext\nhello there\n".encode("utf-8"))
    assert probe(str(p), SPEC) == ["text"]


@pytest.mark.parametrize("content,message", [
    (b"", "file is empty; it needs notes with a 'text' column"),
    (b"note_id,body\n1,x\n", "no 'text' column (columns found: 'note_id', 'body'); name the text column with --text-col"),
])
def test_file_level_problems(tmp_path, content, message):
    p = tmp_path / "n.csv"
    p.write_bytes(content)
    with pytest.raises(InputError) as err:
        probe(str(p), SPEC)
    assert str(err.value) == f"{p}: {message}"


def test_undecodable_bytes_name_the_line(tmp_path):
    p = tmp_path / "n.csv"
    p.write_bytes(b"text\nfine\nalso fine\nbad \xff\xfe here\n")
    with pytest.raises(InputError) as err:
        rows(p)
    assert str(err.value) == (f"{p}: line 4 is not valid utf-8; re-save the file as UTF-8 or pass "
                              f"--encoding (e.g. --encoding latin-1)")


def test_malformed_jsonl_line_marked_or_fails(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "ok note"}\n{"text": broken\n{"text": "another"}\n')
    df = rows(p)
    assert df["error"].tolist() == [None, "line 2 is not valid JSON; the note could not be read", None]
    with pytest.raises(InputError, match="line 2 is not valid JSON; fix the line or run with --on-error mark"):
        rows(p, InputSpec(on_error="fail"))


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "n.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unknown input type '.xlsx'; use .csv, .tsv, .jsonl, .parquet"):
        probe(str(tmp_path / "n.xlsx"), SPEC)
    with pytest.raises(InputError, match="no such file or folder; check the path"):
        probe(str(tmp_path / "missing.csv"), SPEC)


def test_parquet_text_of_wrong_type(tmp_path):
    p = tmp_path / "n.parquet"
    pd.DataFrame({"text": [1, 2]}).to_parquet(p)
    with pytest.raises(InputError, match="column 'text' holds int64, not text"):
        probe(str(p), SPEC)


def test_writer_refuses_to_overwrite_and_leaves_no_temp(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        ResultWriter(str(out), ["note_id"])
    w = ResultWriter(str(out), ["note_id", "themes"], force=True)
    w.write(pd.DataFrame({"note_id": ["a"], "themes": [["role_play", "progress_review"]]}))
    assert out.read_text() == "keep me"          # nothing replaced until close
    w.close()
    assert out.read_text() == "note_id,themes\na,role_play;progress_review\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_aborted_writer_keeps_the_old_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    w = ResultWriter(str(out), ["note_id"], force=True)
    w.write(pd.DataFrame({"note_id": ["a"]}))
    w.abort()
    assert out.read_text() == "old\n"
    # the complete part stays (hidden) for --resume; no lock is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.jsonl.partial", "out.jsonl"]


def test_a_second_writer_to_the_same_path_refuses_until_the_first_is_done(tmp_path):
    out = tmp_path / "out.csv"
    first = ResultWriter(str(out), ["note_id"])
    with pytest.raises(OutputError, match=r"another iptnlp run \(pid \d+\) is writing .*out.csv; wait for it"):
        ResultWriter(str(out), ["note_id"], force=True)
    first.write(pd.DataFrame({"note_id": ["a"]}))
    first.close()
    second = ResultWriter(str(out), ["note_id"], force=True)
    second.write(pd.DataFrame({"note_id": ["b"]}))
    second.close()
    assert out.read_text() == "note_id\nb\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_resume_needs_a_matching_partial_run(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(OutputError, match="nothing to resume for .*out.jsonl"):
        ResultWriter(str(out), ["note_id"], resume=True, fingerprint={"inputs": ["x"]})
    w = ResultWriter(str(out), ["note_id"], fingerprint={"inputs": ["x"]})
    w.write(pd.DataFrame({"note_id": ["a", "b"]}))
    w.abort()
    with pytest.raises(OutputError, match="made from other inputs, model or options"):
        ResultWriter(str(out), ["note_id"], resume=True, fingerprint={"inputs": ["y"]})
    w = ResultWriter(str(out), ["note_id"], resume=True, fingerprint={"inputs": ["x"]})
    assert w.resume_rows == 2
    w.write(pd.DataFrame({"note_id": ["c"]}))
    w.close()
    assert [json.loads(line)["note_id"] for line in out.read_text().splitlines()] == ["a", "b", "c"]

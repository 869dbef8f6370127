"""The CLI as a user meets it: exact messages, exit codes, one output row per input row."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptnlp.cli import main
from iptnlp.taxonomy import AREAS

PROBA = [f"p_{a}" for a in AREAS]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def run(runner, *args, input=None):
    return runner.invoke(main, [str(a) for a in args], input=input)


@pytest.mark.parametrize("command", [[], ["tag"], ["train"], ["evaluate"], ["info"]])
def test_every_command_has_help_with_an_example(runner, command):
    result = run(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output


def test_tag_csv_to_csv(runner, tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    pd.DataFrame({"note_id": ["a", "b", "c"], "text": ["Misses her late father.", "", "Argued with boss."],
                  "session": [4, 5, 6], "case_id": ["k", "k", "k"]}).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    result = run(runner, "tag", src, "-o", out, "--model", small_model_dir)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out)
    assert df.columns.tolist() == ["note_id", "status", "error", "area", "confidence", *PROBA, "phase",
                                   "themes", "off_phase_themes", "two_area_focus", "evidence", "phi_flags", "case_id", "session", "source", "row"]
    assert df["note_id"].tolist() == ["a", "b", "c"]
    assert df["status"].tolist() == ["ok", "error", "ok"]
    assert df.loc[1, "error"] == "row 2: text is missing or not a string"
    assert df.loc[[0, 2], PROBA].sum(axis=1).round(9).tolist() == [1.0, 1.0]
    assert "iptnlp: 3 notes: 2 ok, 1 error" in result.stderr


def test_tag_stdin_jsonl_to_stdout(runner, small_model_dir):
    lines = "".join(json.dumps({"note_id": i, "text": f"note {i} about her sister"}) + "\n" for i in range(3))
    result = run(runner, "tag", "-", "--model", small_model_dir, "-q", input=lines)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["note_id"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "ok" and r["area"] in AREAS for r in rows)
    assert result.stderr == ""


def test_tag_folder_and_parquet_output(runner, tmp_path, small_model_dir):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("n2", "n1"):
        (folder / f"{name}.txt").write_text("Since the funeral she cannot open his letters.")
    out = tmp_path / "out.parquet"
    result = run(runner, "tag", folder, "-o", out, "--model", small_model_dir)
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out)["note_id"].tolist() == ["n1", "n2"]


def test_existing_output_needs_force(runner, tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    src.write_text("text\nhello\n")
    out = tmp_path / "out.csv"
    out.write_text("precious")
    result = run(runner, "tag", src, "-o", out, "--model", small_model_dir)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out} already exists; pass --force to overwrite it or choose another -o path\n"
    assert out.read_text() == "precious"
    assert run(runner, "tag", src, "-o", out, "--model", small_model_dir, "--force").exit_code == 0


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "{d}/missing.csv: no such file or folder; check the path"),
    (lambda d: (d / "n.xlsx").write_text("x"), "{d}/n.xlsx: unknown input type '.xlsx'; use .csv, .tsv, "
                                              ".jsonl, .parquet, a folder of .txt files, or - for JSONL on stdin"),
    (lambda d: (d / "n.csv").write_text(""), "{d}/n.csv: file is empty; it needs notes with a 'text' column"),
    (lambda d: (d / "n.csv").write_text("id,body\n1,x\n"), "{d}/n.csv: no 'text' column (columns found: "
                                                           "'id', 'body'); name the text column with --text-col"),
    (lambda d: (d / "n.csv").write_bytes(b"text\nok\n\xff\xfe\n"), "{d}/n.csv: line 3 is not valid utf-8; re-save "
                                                                   "the file as UTF-8 or pass --encoding (e.g. --encoding latin-1)"),
])
def test_file_level_errors_exit_1_with_one_line(runner, tmp_path, small_model_dir, setup, message):
    setup(tmp_path)
    name = {0: "missing.csv"}.get(0)
    target = next((p for p in tmp_path.iterdir()), tmp_path / name)
    out = tmp_path / "out.csv"
    result = run(runner, "tag", target, "-o", out, "--model", small_model_dir)
    assert result.exit_code == 1
    assert result.stderr == "Error: " + message.format(d=tmp_path) + "\n"
    assert not out.exists()


def test_usage_error_exits_2(runner):
    assert run(runner, "tag").exit_code == 2


def test_changed_model_byte_refused_by_cli(runner, tmp_path, copy_model):
    path = copy_model / "model.skops"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    src = tmp_path / "in.csv"
    src.write_text("text\nhello\n")
    result = run(runner, "tag", src, "--model", copy_model)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path} does not match the SHA-256 in its model card")
    assert result.stderr.rstrip().endswith("rebuild the model with `make train`")


def test_info_shows_card(runner, small_model_dir):
    result = run(runner, "info", "--model", small_model_dir)
    assert result.exit_code == 0
    assert "status       verified (file hash and library versions match)" in result.output
    assert "trained on   240 notes" in result.output


def test_train_and_evaluate(runner, tmp_path, small_corpus, small_model_dir):
    result = run(runner, "evaluate", small_corpus, "--model", small_model_dir, "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 240 and 0 <= metrics["macro_f1"] <= 1
    assert "macro-F1" in result.output and "confusion" in result.output
    result = run(runner, "train", small_corpus, "-o", small_model_dir)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {small_model_dir} already holds a model; pass --force to replace it\n"


def test_no_note_text_in_messages(runner, tmp_path, small_model_dir):
    canary = "ZEBRACANARY"
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": f"{canary} argued"}) + "\n" + '{"text": "' + canary + '\n'
                   + json.dumps({"text": canary, "session": "3a"}) + "\n")
    result = run(runner, "tag", src, "-o", tmp_path / "o.jsonl", "--model", small_model_dir)
    assert result.exit_code == 0
    assert canary not in result.stderr
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["status"] for r in out] == ["ok", "error", "error"]
    assert not any(canary in (r["error"] or "") for r in out)


cell = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["", "  ", "\n", "3", "3a", "-1"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(cell, cell, cell), min_size=1, max_size=12))
def test_every_input_row_yields_exactly_one_output_row(tmp_path_factory, small_model, rows):
    from iptnlp.io import InputSpec
    from iptnlp.tagger import tag_files

    d = tmp_path_factory.mktemp("prop")
    src = d / "in.jsonl"
    src.write_text("".join(json.dumps({"note_id": f"n{i}", "text": t, "session": s, "case_id": c}) + "\n"
                           for i, (t, s, c) in enumerate(rows)))
    summary = tag_files([str(src)], str(d / "out.jsonl"), small_model, InputSpec(chunk_size=5))
    out = [json.loads(x) for x in (d / "out.jsonl").read_text().split("\n") if x]
    assert summary.notes == len(rows) == len(out)
    assert [r["note_id"] for r in out] == [f"n{i}" for i in range(len(rows))]
    for r in out:
        assert r["status"] in ("ok", "error")
        if r["status"] == "ok":
            assert abs(sum(r[p] for p in PROBA) - 1) < 1e-9
        else:
            assert r["error"] and r["area"] is None


def test_headerless_file_does_not_leak_its_first_note(runner, tmp_path, small_model_dir):
    src = tmp_path / "n.csv"
    src.write_text("n1,She argued with her mother ZZCANARY about the wedding plans again\n")
    result = run(runner, "tag", src, "--model", small_model_dir)
    assert result.exit_code == 1
    assert "ZZCANARY" not in result.stderr
    assert result.stderr == (f"Error: {src}: no 'text' column (columns found: 'n1', <65-character name>; "
                             f"the first line may be a note rather than a header); name the text column "
                             f"with --text-col\n")


def test_an_input_error_column_is_not_taken_for_ours(runner, tmp_path, small_model_dir):
    src = tmp_path / "n.csv"
    src.write_text("note_id,text,error\nr1,Argued with her sister,ZZCANARY old text\n")
    result = run(runner, "tag", src, "-o", tmp_path / "o.jsonl", "--model", small_model_dir)
    assert result.exit_code == 0
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert row["status"] == "ok" and row["error"] is None
    assert "ZZCANARY" not in json.dumps(row)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_header_only_input_gives_a_header_only_output(runner, tmp_path, small_model_dir, suffix):
    (tmp_path / "h.csv").write_text("note_id,text\n")
    (tmp_path / "n.csv").write_text("note_id,text\na,Argued with her sister\n")
    out = tmp_path / f"o.{suffix}"
    result = run(runner, "tag", tmp_path / "h.csv", tmp_path / "n.csv", "-o", out, "--model", small_model_dir)
    assert result.exit_code == 0, result.output
    df = pd.read_json(out, lines=True) if suffix == "jsonl" else getattr(pd, f"read_{suffix}")(out)
    assert df["note_id"].tolist() == ["a"]


def test_output_that_is_a_folder_and_unknown_encoding(runner, tmp_path, small_model_dir):
    src = tmp_path / "n.csv"
    src.write_text("text\nhello\n")
    (tmp_path / "d.csv").mkdir()
    result = run(runner, "tag", src, "-o", tmp_path / "d.csv", "--force", "--model", small_model_dir)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'd.csv'} is a folder; give a file name with a .csv, .tsv, .jsonl or .parquet suffix\n"
    result = run(runner, "tag", src, "--encoding", "bogus", "--model", small_model_dir)
    assert result.exit_code == 2
    assert "unknown encoding 'bogus'" in result.stderr


def test_stdin_keeps_carried_columns(runner, small_model_dir):
    lines = json.dumps({"text": "argued", "case_id": "k1", "session": 5}) + "\n"
    result = run(runner, "tag", "-", "--model", small_model_dir, "-q", input=lines)
    row = json.loads(result.stdout)
    assert (row["case_id"], row["session"], row["phase"]) == ("k1", 5, "middle")

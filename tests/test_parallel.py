"""Every core and beyond: the worker pool and the Dask engine give the local engine's rows, in order."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from iptnlp.io import InputSpec
from iptnlp.tagger import TagPool, tag_chunks, tag_files


@pytest.fixture(scope="module")
def mixed_jsonl(tmp_path_factory, corpus_records):
    """230 notes in one JSONL file, with a blank note, a malformed line and a bad session among them."""
    path = tmp_path_factory.mktemp("par") / "notes.jsonl"
    lines = []
    for i, r in enumerate(corpus_records[:230]):
        rec = {"note_id": r["note_id"], "text": r["text"], "case_id": r.get("case_id"),
               "session": r.get("session"), "total_sessions": r.get("total_sessions")}
        if i == 17:
            rec["text"] = "   "
        if i == 101:
            rec["session"] = "3a"
        lines.append(json.dumps(rec))
    lines.insert(150, '{"note_id": "broken", "text": "unterminated')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read(path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype=False)


def test_pool_gives_the_same_rows_in_the_same_order(tmp_path, mixed_jsonl, small_model):
    spec = InputSpec(chunk_size=40)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    s1 = tag_files([str(mixed_jsonl)], str(one), small_model, spec, workers=1)
    s2 = tag_files([str(mixed_jsonl)], str(two), small_model, spec, workers=2)
    a, b = _read(one), _read(two)
    assert s1.notes == s2.notes == 231 == len(a) == len(b)
    assert a["row"].tolist() == list(range(1, 232))
    pd.testing.assert_frame_equal(a, b)
    assert a["status"].value_counts().to_dict() == {"ok": 228, "error": 3}


def test_pool_keeps_only_a_few_chunks_in_flight(small_model, mixed_jsonl):
    """Memory stays flat: the pool pulls at most two chunks per worker ahead of what it has yielded."""
    from iptnlp.io import read_chunks

    pulled = 0

    def counting():
        nonlocal pulled
        for frame in read_chunks(str(mixed_jsonl), InputSpec(chunk_size=10)):
            pulled += 1
            yield frame

    with TagPool(small_model, 2) as pool:
        results = pool.map(counting())
        next(results)
        assert pulled <= 2 * 2 + 1
        rest = list(results)
    assert pulled == 1 + len(rest) == 24


def test_one_chunk_is_tagged_in_process(monkeypatch, small_model, mixed_jsonl):
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for a single chunk")

    monkeypatch.setattr("iptnlp.tagger.TagPool", no_pool)
    frames = list(tag_chunks([str(mixed_jsonl)], small_model, InputSpec(chunk_size=1000), workers=4))
    assert sum(len(f) for f in frames) == 231


def test_help_does_not_import_the_heavy_libraries():
    """`iptnlp --help` answers at once because pandas, scikit-learn and spaCy load only in commands."""
    code = ("import sys; from click.testing import CliRunner; from iptnlp.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('pandas', 'sklearn', 'spacy', 'numpy', 'skops') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def dask_scheduler():
    """A 2-worker LocalCluster shared by the Dask tests (each worker loads the model once)."""
    pytest.importorskip("distributed")
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_dask_engine_matches_the_local_engine_row_for_row(tmp_path, suffix, corpus_records, small_model,
                                                          dask_scheduler):
    from iptnlp.dask_engine import tag_files_dask

    recs = corpus_records[300:460]
    df = pd.DataFrame({"note_id": [r["note_id"] for r in recs], "text": [r["text"] for r in recs],
                       "session": [r.get("session") for r in recs]})
    df.loc[3, "text"] = None
    df.loc[9, "note_id"] = None
    src = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        df.to_parquet(src, row_group_size=45)    # four partitions
    else:
        df.to_csv(src, index=False)
    spec = InputSpec(chunk_size=50)
    local, dask_out = tmp_path / "local.jsonl", tmp_path / "dask.jsonl"
    tag_files([str(src)], str(local), small_model, spec, workers=1)
    summary = tag_files_dask([str(src)], str(dask_out), small_model, spec, scheduler=dask_scheduler)
    a, b = _read(local), _read(dask_out)
    assert summary.notes == len(a) == len(b) == 160
    pd.testing.assert_frame_equal(a, b)
    assert b.loc[9, "note_id"] == "in:10" and b.loc[3, "status"] == "error"


def test_dask_engine_refuses_inputs_it_cannot_partition(tmp_path, small_model):
    pytest.importorskip("distributed")
    from iptnlp.dask_engine import tag_files_dask
    from iptnlp.errors import InputError

    src = tmp_path / "notes.jsonl"
    src.write_text('{"text": "a note"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="reads Parquet, CSV or TSV"):
        tag_files_dask([str(src)], str(tmp_path / "o.csv"), small_model, InputSpec())


@pytest.mark.parametrize("rows, row_group_size, chunk, warned", [
    (60, None, 10, True),     # one big row group: one worker of two would tag the file
    (60, 20, 10, False),      # three row groups spread over two workers
    (8, None, 10, False),     # one chunk's worth: nothing to spread
])
def test_dask_warns_when_a_parquet_file_cannot_spread_over_the_workers(tmp_path, rows, row_group_size,
                                                                        chunk, warned):
    from iptnlp.dask_engine import few_partitions_warning, partitions

    src = tmp_path / "notes.parquet"
    pd.DataFrame({"note_id": [f"n{i}" for i in range(rows)],
                  "text": ["secret note text"] * rows}).to_parquet(src, row_group_size=row_group_size)
    message = few_partitions_warning(str(src), partitions(str(src), "parquet"), 2, chunk)
    assert (message is not None) == warned
    if warned:
        assert str(src) in message and "row_group_size=15" in message   # 60 rows: two row groups per worker


def test_dask_engine_says_when_a_file_cannot_spread(tmp_path, corpus_records, small_model, dask_scheduler):
    from iptnlp.dask_engine import tag_files_dask

    src = tmp_path / "one-group.parquet"
    pd.DataFrame({"note_id": [r["note_id"] for r in corpus_records[:30]],
                  "text": [r["text"] for r in corpus_records[:30]]}).to_parquet(src)
    warnings: list[str] = []
    tag_files_dask([str(src)], str(tmp_path / "o.csv"), small_model, InputSpec(chunk_size=10),
                   scheduler=dask_scheduler, warn=warnings.append)
    assert len(warnings) == 1 and str(src) in warnings[0] and "1 of 2 workers" in warnings[0]


def test_the_collector_is_paused_while_a_chunk_is_tagged_and_restored_after():
    import gc
    import threading

    from iptnlp.tagger import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():          # nested (another chunk in flight)
            assert not gc.isenabled()
        assert not gc.isenabled()         # still one chunk in flight
    assert gc.isenabled()

    # two threads whose chunks overlap: the collector comes back only when the last one ends
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with collector_paused():
            second_in.set()
            first_out.wait(5)
            seen["after_first_left"] = gc.isenabled()
        seen["after_both_left"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after_first_left": False, "after_both_left": True}

    # a caller that had switched the collector off keeps it off, and an error inside restores it
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()


def test_tagging_a_chunk_runs_with_the_collector_paused(monkeypatch, small_model):
    import gc

    from iptnlp.tagger import Tagger, tag

    seen = []
    real = Tagger._tag_frame

    def spy(self, frame):
        seen.append(gc.isenabled())
        return real(self, frame)

    monkeypatch.setattr(Tagger, "_tag_frame", spy)
    out = tag(pd.DataFrame({"text": ["Argued with her sister about money again."]}), small_model)
    assert len(out) == 1 and seen == [False] and gc.isenabled()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork here")
def test_a_forked_child_starts_with_the_collector_as_before_the_parents_chunk():
    import gc
    import os

    from iptnlp.tagger import collector_paused

    read, write = os.pipe()
    with collector_paused():
        pid = os.fork()
        if pid == 0:   # the child: no chunk in flight, the collector back on
            os.write(write, b"1" if gc.isenabled() else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.close(write)

"""``iptnlp tag --engine dask``: the same per-chunk tagging, run by Dask over Parquet/CSV partitions.

Each input becomes partitions of a ``dask.dataframe`` built with ``dd.from_map``: a Parquet file one
partition per row group (row counts from its metadata, so row numbers are known up front), a CSV or
TSV file one partition (notes hold line breaks inside quotes, so a CSV cannot be split safely at
byte offsets; convert a large CSV to Parquet to spread it out). Each partition is read by our own
reader on the worker (the local engine's options, and errors that name the file but never quote
it) and goes through the normalisation and ``Tagger.tag_frame`` that the local engine applies to
its chunks, with a Tagger made once per Dask worker process. Results come back in input order, a
few partitions at a time, and are written by the same ``ResultWriter``, so the output equals the
local engine's row for row.

Without ``--scheduler`` a ``LocalCluster`` (one single-threaded worker process per core, quiet logs)
is started for the run; with ``--scheduler tcp://host:8786`` the run uses that cluster, whose
workers must have iptnlp installed and the inputs and model folder readable at the same paths.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import pandas as pd

from iptnlp.errors import InputError, IptnlpError
from iptnlp.io import InputSpec, ResultWriter, _normalise, input_kind, probe
from iptnlp.model import AreaModel
from iptnlp.tagger import RunSummary, Tagger, result_columns, write_results
from iptnlp.taxonomy import DEFAULT_COURSE_LENGTH

DASK_KINDS = ("parquet", "csv", "tsv")

_TAGGERS: dict[tuple, Tagger] = {}   # per worker process: (model dir, options) -> Tagger


def _tagger(model_dir: str, threshold: float | None, course_length: int, on_phi: str) -> Tagger:
    key = (model_dir, threshold, course_length, on_phi)
    if key not in _TAGGERS:
        from iptnlp.model import load_model

        _TAGGERS[key] = Tagger(load_model(model_dir), threshold=threshold, course_length=course_length,
                               on_phi=on_phi)
    return _TAGGERS[key]


def result_meta(input_columns: list[str]) -> pd.DataFrame:
    """An empty frame with the result columns (object dtype): the dask.dataframe's declared schema."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in result_columns(input_columns)})


def partitions(path: str, kind: str) -> list[tuple]:
    """(path, kind, row group, first row number) for each partition of one input."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        parts, first = [], 1
        for i in range(meta.num_row_groups):
            parts.append((path, kind, i, first))
            first += meta.row_group(i).num_rows
        return parts
    return [(path, kind, None, 1)]


def few_partitions_warning(path: str, parts: list[tuple], workers: int, chunk_size: int) -> str | None:
    """A warning when a Parquet file has fewer row groups than there are workers and more rows than
    one chunk: Dask tags one row group per task, so a file written as one big row group (pandas'
    default) leaves all workers but one idle. None when the file spreads or is too small to matter."""
    if len(parts) >= workers or not parts or parts[0][1] != "parquet":
        return None
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).metadata.num_rows
    if rows <= chunk_size:
        return None
    size = max(chunk_size, min(10_000, -(-rows // (2 * workers))))   # two row groups per worker at least
    return (f"{path}: {rows:,} rows in {len(parts)} row group(s), so Dask can tag it on at most "
            f"{len(parts)} of {workers} workers; rewrite it with smaller row groups "
            f"(pyarrow.parquet.write_table(table, path, row_group_size={size})) or use the local engine")


def _read_part(path: str, kind: str, spec: InputSpec, row_group: int | None) -> pd.DataFrame:
    """One partition's raw rows, read as the local engine reads them."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).read_row_group(row_group).to_pandas(integer_object_nulls=True)
    from iptnlp.io import _csv_chunks

    frames = list(_csv_chunks(path, spec, "," if kind == "csv" else "\t"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tag_part(part: tuple, spec: InputSpec, model_dir: str, threshold: float | None, course_length: int,
             on_phi: str = "flag") -> pd.DataFrame:
    """Read and tag one partition ``(path, kind, row group or None, first row)``. A failure is reported
    by file and partition, never with the exception's own text (a decode error's repr holds note text,
    and a worker logs what it raises)."""
    path, kind, row_group, first_row = part
    try:
        frame = _read_part(path, kind, spec, row_group).reset_index(drop=True)
        return _tagger(model_dir, threshold, course_length, on_phi).tag_frame(
            _normalise(frame, path, first_row, spec))
    except IptnlpError:
        raise
    except Exception as exc:
        where = f"row group {row_group}" if row_group is not None else "the file"
        raise IptnlpError(f"{path}: tagging {where} failed ({type(exc).__name__}); run it with the local "
                          f"engine for the line and the fix") from None


def _client(scheduler: str | None, workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as exc:
            raise IptnlpError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}); "
                              f"check the address, or leave out --scheduler for a local cluster") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def tag_files_dask(inputs: list[str], output: str | None, model: AreaModel, spec: InputSpec, *,
                   scheduler: str | None = None, workers: int = 2, force: bool = False,
                   threshold: float | None = None, course_length: int = DEFAULT_COURSE_LENGTH,
                   on_phi: str = "flag", progress: Callable[[str], None] | None = None,
                   warn: Callable[[str], None] | None = None) -> RunSummary:
    """Tag Parquet/CSV/TSV inputs on a Dask cluster into ``output``; same rows as ``tag_files``."""
    try:
        import dask
        import dask.dataframe as dd
        import distributed  # noqa: F401
    except ImportError:
        raise IptnlpError("--engine dask needs Dask: pip install 'iptnlp[dask]'") from None
    if model.path is None:
        raise IptnlpError("--engine dask needs a model saved in a folder (pass --model DIR)")
    columns: set[str] = set()
    for path in inputs:
        kind = input_kind(path)
        if kind not in DASK_KINDS:
            raise InputError(f"{path}: --engine dask reads Parquet, CSV or TSV files; tag {kind} input with "
                             f"the local engine (leave out --engine)")
        columns.update(probe(path, spec))
    writer = ResultWriter(output, result_columns(columns), force=force, inputs=inputs)

    def results():
        client = cluster = None
        try:
            client, cluster = _client(scheduler, workers)
            n_workers = len(client.scheduler_info().get("workers", {})) or workers
            in_flight = 2 * max(1, n_workers)
            model_dir = str(model.path.resolve())
            meta = result_meta(sorted(columns))
            for path in inputs:
                parts = partitions(str(path), input_kind(path))
                message = few_partitions_warning(str(path), parts, n_workers, spec.chunk_size)
                if message and warn:
                    warn(message)
                # results hold lists and dicts: Dask must not turn object columns into strings
                with dask.config.set({"dataframe.convert-string": False}):
                    ddf = dd.from_map(tag_part, parts, spec=spec,
                                      model_dir=model_dir, threshold=threshold, course_length=course_length,
                                      on_phi=on_phi, meta=meta, enforce_metadata=False)
                pending: deque = deque()
                for task in ddf.to_delayed():
                    pending.append(client.compute(task))
                    if len(pending) >= in_flight:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()

    return write_results(results(), writer, RunSummary(), progress=progress, warn=warn)

"""``iptnlp tag --engine dask``: the same per-chunk tagging, run by Dask over Parquet/CSV partitions.

Each input is read with ``dask.dataframe`` (Parquet: its row groups; CSV/TSV: one partition per
file, because notes hold line breaks inside quotes and a CSV cannot be split safely at byte
offsets; convert a large CSV to Parquet to spread it out). Every partition goes through
``tag_partition``: the normalisation and ``Tagger.tag_frame`` that the local engine applies to its
chunks, with a Tagger made once per Dask worker process. Results come back to this process in
input order, a few partitions at a time, and are written by the same ``ResultWriter``: one output
file, temp file renamed on success, so the output equals the local engine's row for row.

Without ``--scheduler`` a ``LocalCluster`` (one single-threaded worker process per core) is
started for the run; with ``--scheduler tcp://host:8786`` the run uses that cluster, whose workers
must have iptnlp installed and the model folder readable at the same path.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import pandas as pd

from iptnlp.errors import InputError, IptnlpError
from iptnlp.io import InputSpec, ResultWriter, _normalise, input_kind, probe
from iptnlp.model import AreaModel
from iptnlp.tagger import RunSummary, Tagger, result_columns
from iptnlp.taxonomy import DEFAULT_COURSE_LENGTH

DASK_KINDS = ("parquet", "csv", "tsv")

_TAGGERS: dict[tuple, Tagger] = {}   # per worker process: (model dir, threshold, course length) -> Tagger


def _tagger(model_dir: str, threshold: float | None, course_length: int, on_phi: str) -> Tagger:
    key = (model_dir, threshold, course_length, on_phi)
    if key not in _TAGGERS:
        from iptnlp.model import load_model

        _TAGGERS[key] = Tagger(load_model(model_dir), threshold=threshold, course_length=course_length,
                               on_phi=on_phi)
    return _TAGGERS[key]


def tag_partition(frame: pd.DataFrame, source: str, first_row: int, spec: InputSpec, model_dir: str,
                  threshold: float | None, course_length: int, on_phi: str = "flag") -> pd.DataFrame:
    """Tag one raw partition whose first row is ``first_row`` of ``source`` (1-based)."""
    frame = frame.reset_index(drop=True)
    if spec.text_col in frame and not (frame[spec.text_col].dtype == object
                                       or pd.api.types.is_string_dtype(frame[spec.text_col])):
        frame[spec.text_col] = frame[spec.text_col].astype(object)
    return _tagger(model_dir, threshold, course_length, on_phi).tag_frame(
        _normalise(frame, source, first_row, spec))


def _read(path: str, kind: str, spec: InputSpec):
    import dask.dataframe as dd

    from iptnlp.io import _encoding

    if kind == "parquet":
        return dd.read_parquet(path, split_row_groups=True)
    return dd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str, keep_default_na=False,
                       na_values=[""], blocksize=None, encoding=_encoding(spec))


def _client(scheduler: str | None, workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as exc:
            raise IptnlpError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}); "
                              f"check the address, or leave out --scheduler for a local cluster") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster), cluster


def tag_files_dask(inputs: list[str], output: str | None, model: AreaModel, spec: InputSpec, *,
                   scheduler: str | None = None, workers: int = 2, force: bool = False,
                   threshold: float | None = None, course_length: int = DEFAULT_COURSE_LENGTH,
                   on_phi: str = "flag", progress: Callable[[str], None] | None = None) -> RunSummary:
    """Tag Parquet/CSV/TSV inputs on a Dask cluster into ``output``; same rows as ``tag_files``."""
    try:
        import dask
        import dask.dataframe  # noqa: F401
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
    summary = RunSummary()
    start = time.perf_counter()
    client = cluster = None
    try:
        client, cluster = _client(scheduler, workers)
        in_flight = 2 * max(1, len(client.scheduler_info().get("workers", {})) or workers)
        model_dir = str(model.path.resolve())
        for path in inputs:
            ddf = _read(path, input_kind(path), spec)
            lengths = client.compute(ddf.map_partitions(len)).result().tolist()
            parts = ddf.to_delayed()
            first_rows = [1 + sum(lengths[:i]) for i in range(len(lengths))]
            pending: deque = deque()

            def collect(future) -> None:
                result = future.result()
                writer.write(result)
                summary.add(result)
                summary.seconds = time.perf_counter() - start
                if progress:
                    progress(f"{summary.notes:,} notes tagged ({summary.notes / summary.seconds:,.0f}/s)")

            for part, first_row in zip(parts, first_rows):
                task = dask.delayed(tag_partition, pure=False)(part, str(path), first_row, spec, model_dir,
                                                               threshold, course_length, on_phi)
                pending.append(client.compute(task))
                if len(pending) >= in_flight:
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    summary.seconds = time.perf_counter() - start
    return summary

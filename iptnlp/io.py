"""Reading notes and writing results: CSV, TSV, JSONL, Parquet, folders of .txt, stdin/stdout.

Inputs are read in chunks (pandas chunks, pyarrow record batches, files one by one), so memory stays
flat in the size of the input. Each chunk is a DataFrame with the columns ``source``, ``row``,
``note_id``, ``text``, ``error`` and whichever of ``CARRIED`` the input has. File-level problems raise
:class:`InputError` naming the file (and line where there is one) and the fix; row-level problems go
into that row's ``error`` so the row is never dropped. No message ever quotes note text.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from iptnlp.errors import InputError, OutputError
from iptnlp.taxonomy import AREAS

SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
CARRIED = ("case_id", "session", "total_sessions", "phase", "focus")
INT_COLUMNS = ("session", "total_sessions")
PROBA_COLUMNS = tuple(f"p_{a}" for a in AREAS)
RESULT_COLUMNS = ("note_id", "status", "error", "area", "confidence") + PROBA_COLUMNS + (
    "phase", "themes", "off_phase_themes", "two_area_focus", "evidence", "phi_flags")
TRAILING_COLUMNS = ("source", "row")
STDIO = "-"
MAX_NOTE_CHARS = 2_000_000      # the spaCy stage's max_length is set to match
MAX_SESSION = 10_000


@dataclass(frozen=True)
class InputSpec:
    """How to read the notes: which columns hold the id and the text, and the byte encoding."""

    text_col: str = "text"
    id_col: str = "note_id"
    encoding: str = "utf-8"
    on_error: str = "mark"      # mark: a malformed line becomes an error row; fail: stop
    chunk_size: int = 1000
    keep: tuple[str, ...] = ()  # input columns copied as they are, as _keep_<name> (training labels)


def input_kind(path: str) -> str:
    """csv | tsv | jsonl | parquet | folder | stdin, or InputError with the fix."""
    if path == STDIO:
        return "stdin"
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if p.is_dir():
        return "folder"
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown input type {p.suffix or '(no suffix)'!r}; use .csv, .tsv, "
                         f".jsonl, .parquet, a folder of .txt files, or - for JSONL on stdin")
    return kind


def _encoding(spec: InputSpec) -> str:
    # A byte-order mark at the start of a UTF-8 file is not part of the first column's name.
    return "utf-8-sig" if spec.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else spec.encoding


def probe(path: str, spec: InputSpec) -> list[str]:
    """Check a file can be read as notes before any output is written; return its column names."""
    kind = input_kind(path)
    if kind == "folder":
        if not _txt_files(Path(path)):
            raise InputError(f"{path}: folder has no .txt files; put one note per .txt file in it")
        return [spec.id_col, spec.text_col]
    if kind == "stdin":   # records may carry any of the optional columns; offer them all
        return [spec.id_col, spec.text_col, *CARRIED]
    p = Path(path)
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; it needs notes with a {spec.text_col!r} column")
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(p)
        except Exception:
            raise InputError(f"{path}: not a readable Parquet file; check the file or its suffix") from None
        columns = list(schema.names)
        _require_text(path, columns, spec)
        import pyarrow as pa

        ftype = schema.field(spec.text_col).type
        if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype) or pa.types.is_null(ftype)):
            raise InputError(f"{path}: column {spec.text_col!r} holds {ftype}, not text; "
                             f"store the notes as strings")
        return columns
    if kind == "jsonl":
        columns = _first_jsonl_keys(p, spec)
        _require_text(path, columns, spec)
        return [*columns, *(c for c in CARRIED if c not in columns)]
    sep = "," if kind == "csv" else "\t"
    try:
        header = pd.read_csv(p, sep=sep, nrows=0, encoding=_encoding(spec))
    except UnicodeDecodeError:
        raise _decode_error(path, spec) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file has no header row; the first line must name the columns, "
                         f"including {spec.text_col!r}") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"{path}: {_line_from_parser_error(str(exc))}cannot be parsed as "
                         f"{kind.upper()} (an unclosed quote?); check quoting of the notes") from None
    columns = [str(c) for c in header.columns]
    _require_text(path, columns, spec)
    return columns


def _looks_like_a_column_name(name: str) -> bool:
    """Short, at most three words, and no leftover identifier: otherwise it may be a note's words
    (a file without a header row) and must not be quoted in a message."""
    if len(name) > 30 or name.count(" ") > 2 or any(ch in name for ch in "\n\r\t"):
        return False
    try:
        from iptnlp.phi import PhiGuard

        global _NAME_GUARD
        if _NAME_GUARD is None:
            _NAME_GUARD = PhiGuard.from_config()
        return not _NAME_GUARD.find(name)
    except Exception:   # the guard's rules unreadable: stay on the safe side
        return False


_NAME_GUARD = None


def describe_columns(columns: list[str]) -> str:
    """Column names for a message; a 'name' that looks like note text is not quoted."""
    shown = [repr(c) if _looks_like_a_column_name(c) else f"<{len(c)}-character name>"
             for c in (str(c) for c in columns[:20])]
    found = ", ".join(shown) or "none"
    if any(s.startswith("<") for s in shown):
        found += "; the first line may be a note rather than a header"
    return found


def _require_text(path: str, columns: list[str], spec: InputSpec) -> None:
    if spec.text_col not in columns:
        raise InputError(f"{path}: no {spec.text_col!r} column (columns found: "
                         f"{describe_columns(columns)}); name the text column with --text-col")


def _first_jsonl_keys(p: Path, spec: InputSpec, scan: int = 1000) -> list[str]:
    """Keys of the first JSON object with the text field (bad lines become error rows later)."""
    first_keys: list[str] | None = None
    seen = 0
    with open(p, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            seen += 1
            try:
                record = json.loads(raw.decode(_encoding(spec)))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if isinstance(record, dict):
                if spec.text_col in record:
                    return list(record)
                first_keys = first_keys or list(record)
            if seen >= scan:
                break
    if seen == 0:
        raise InputError(f"{p}: file has no notes (only blank lines); add one JSON object per line")
    return first_keys or [spec.text_col]   # nothing readable: every line becomes an error row


_POOL_SET = False


def flat_memory_pool() -> None:
    """Make pyarrow (which also holds pandas' strings) allocate with jemalloc where it is built in.
    Its default here, mimalloc, kept freed pages as chunks streamed through: peak memory grew about
    6 % from 10,000 to 40,000 notes, against 4 % with jemalloc, from a lower start (measured with
    `make bench`'s child). A pool chosen with ARROW_DEFAULT_MEMORY_POOL is left alone."""
    global _POOL_SET
    if _POOL_SET or os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    _POOL_SET = True
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except (NotImplementedError, AttributeError):   # a pyarrow built without jemalloc
        pass


def read_chunks(path: str, spec: InputSpec) -> Iterator[pd.DataFrame]:
    """The notes of one input, chunk by chunk, normalised (see the module docstring)."""
    flat_memory_pool()
    kind = input_kind(path)
    source = "<stdin>" if kind == "stdin" else str(path)
    if kind in ("csv", "tsv"):
        raw = _csv_chunks(path, spec, "," if kind == "csv" else "\t")
    elif kind == "parquet":
        raw = _parquet_chunks(path, spec)
    elif kind == "folder":
        raw = _folder_chunks(path, spec)
    else:
        stream = sys.stdin.buffer if kind == "stdin" else open(path, "rb")
        raw = _jsonl_chunks(stream, source, spec, close=kind != "stdin")
    next_row = 1
    for frame in raw:
        frame = _normalise(frame, source, next_row, spec)
        next_row += len(frame)
        yield frame


def _csv_chunks(path: str, spec: InputSpec, sep: str) -> Iterator[pd.DataFrame]:
    try:
        # a blank line is an empty note (a one-column file), never skipped: every row is accounted for
        reader = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                             skip_blank_lines=False,
                             chunksize=spec.chunk_size, encoding=_encoding(spec))
        yield from reader
    except UnicodeDecodeError:
        raise _decode_error(path, spec) from None
    except pd.errors.ParserError as exc:
        where = _line_from_parser_error(str(exc))
        raise InputError(f"{path}: {where}has a different number of fields than the header; check "
                         f"quoting of commas and line breaks inside notes") from None


def _line_from_parser_error(message: str) -> str:
    import re

    m = re.search(r"line (\d+)", message)
    return f"line {m.group(1)} " if m else ""


def _decode_error(path: str, spec: InputSpec) -> InputError:
    line = _first_bad_line(Path(path), _encoding(spec))
    return InputError(f"{path}: line {line} is not valid {spec.encoding}; re-save the file as UTF-8 "
                      f"or pass --encoding (e.g. --encoding latin-1)")


def _first_bad_line(path: Path, encoding: str) -> int:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return lineno
    return 0


def _parquet_chunks(path: str, spec: InputSpec) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    # a buffered stream: without it a row group's whole column chunk is read before the first batch,
    # and files written in one row group (pandas' default) cost memory in proportion to their size
    # (measured: peak 157 -> 193 MB reading 10k -> 100k notes unbuffered; 155 -> 159 MB buffered)
    pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    for batch in pf.iter_batches(batch_size=spec.chunk_size):
        yield batch.to_pandas(integer_object_nulls=True)


def _folder_chunks(path: str, spec: InputSpec) -> Iterator[pd.DataFrame]:
    files = _txt_files(Path(path))
    for start in range(0, len(files), spec.chunk_size):
        rows = []
        for f in files[start:start + spec.chunk_size]:
            row = {spec.id_col: f.stem, spec.text_col: None, "_error": None}
            try:
                row[spec.text_col] = f.read_bytes().decode(_encoding(spec))
            except UnicodeDecodeError as exc:
                row["_error"] = (f"{f.name}: not valid {spec.encoding} at byte {exc.start}; re-save it "
                                f"as UTF-8 or pass --encoding")
            rows.append(row)
        yield pd.DataFrame(rows)


def _txt_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".txt")


def _jsonl_chunks(stream, source: str, spec: InputSpec, close: bool) -> Iterator[pd.DataFrame]:
    rows: list[dict] = []
    seen = 0
    try:
        for lineno, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            seen += 1
            problem = None
            try:
                record = json.loads(raw.decode(_encoding(spec)))
                if not isinstance(record, dict):
                    problem = f"line {lineno} is not a JSON object"
            except UnicodeDecodeError:
                problem = f"line {lineno} is not valid {spec.encoding}"
            except json.JSONDecodeError:
                problem = f"line {lineno} is not valid JSON"
            if problem:
                if spec.on_error == "fail":
                    raise InputError(f"{source}: {problem}; fix the line or run with --on-error mark")
                record = {"_error": f"{problem}; the note could not be read"}
            elif spec.text_col not in record:
                record["_error"] = f"line {lineno} has no {spec.text_col!r} field"
            record["_line"] = lineno
            rows.append(record)
            if len(rows) >= spec.chunk_size:
                yield pd.DataFrame(rows)
                rows = []
        if rows:
            yield pd.DataFrame(rows)
        if not seen and source == "<stdin>":   # a file is checked before the run (probe); stdin only here
            raise InputError("<stdin>: no notes arrived (empty input); pipe one JSON object per line, "
                             "e.g. cat notes.jsonl | iptnlp tag -")
    finally:
        if close:
            stream.close()


def _as_text(value) -> str:
    """An id as text; a whole float (7.0, as pandas makes a numeric column with gaps) reads as 7."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_blank(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value) \
        or (isinstance(value, str) and not value.strip())


def _whole_number(value) -> tuple[int | None, bool]:
    """(number, ok): blank is (None, True); '3', 3, 3.0 are (3, True); '3a', 2.5 are (None, False)."""
    if _is_blank(value) or value is pd.NA:
        return None, True
    if isinstance(value, bool):
        return None, False
    if isinstance(value, (int,)) or (hasattr(value, "dtype") and str(getattr(value, "dtype", "")).startswith("int")):
        return int(value), True
    if isinstance(value, float):
        return (int(value), True) if value.is_integer() else (None, False)
    text = str(value).strip()
    if text.lstrip("-").isascii() and text.lstrip("-").isdigit():   # not "²", which isdigit() accepts
        return int(text), True
    try:   # "4.0", as pandas writes a whole-number column that has gaps
        number = float(text)
    except (ValueError, OverflowError):
        return None, False
    if number != number or number in (float("inf"), float("-inf")):
        return None, False
    return (int(number), True) if number.is_integer() else (None, False)


def _normalise(frame: pd.DataFrame, source: str, first_row: int, spec: InputSpec) -> pd.DataFrame:
    n = len(frame)
    out = pd.DataFrame(index=range(n))
    out["source"] = source
    out["row"] = range(first_row, first_row + n)
    ids = frame[spec.id_col] if spec.id_col in frame else pd.Series([None] * n)
    stem = Path(source).stem if source != "<stdin>" else "stdin"
    out["note_id"] = [_as_text(v) if not _is_blank(v) else f"{stem}:{r}"
                      for v, r in zip(ids.tolist(), out["row"])]
    texts = frame[spec.text_col].tolist() if spec.text_col in frame else [None] * n
    errors = frame["_error"].tolist() if "_error" in frame else [None] * n
    for col in CARRIED:
        if col in frame:
            out[col] = frame[col].tolist()
    for col in spec.keep:
        out[f"_keep_{col}"] = frame[col].tolist() if col in frame else [None] * n
    clean_texts: list[str | None] = []
    for i in range(n):
        err = errors[i] if isinstance(errors[i], str) else None
        text = texts[i]
        if err is None and not isinstance(text, str):
            err = f"row {first_row + i}: text is missing or not a string"
        elif err is None and not text.strip():
            err = f"row {first_row + i}: text is empty"
        elif err is None and len(text) > MAX_NOTE_CHARS:
            err = (f"row {first_row + i}: text is {len(text):,} characters, over the {MAX_NOTE_CHARS:,} "
                   f"a note may have; split it")
        clean_texts.append(text if err is None else None)
        errors[i] = err
    for col in INT_COLUMNS:
        if col not in out:
            continue
        numbers = []
        for i, value in enumerate(out[col].tolist()):
            number, ok = _whole_number(value)
            if ok and number is not None and not 1 <= number <= MAX_SESSION:
                ok, number = False, None
            if not ok and errors[i] is None:
                errors[i] = (f"row {first_row + i}: {col} must be a whole number from 1 up "
                             f"(or empty); fix the value in column {col!r}")
            numbers.append(number)
        out[col] = pd.array(numbers, dtype="Int64")
    if "session" in out and "total_sessions" in out:
        for i, (s, t) in enumerate(zip(out["session"], out["total_sessions"])):
            if s is not pd.NA and t is not pd.NA and s > t and errors[i] is None:
                errors[i] = f"row {first_row + i}: session is greater than total_sessions"
    for col in ("case_id", "phase", "focus"):
        if col in out:
            out[col] = [None if _is_blank(v) else _as_text(v) for v in out[col].tolist()]
    out["text"] = pd.Series(clean_texts, dtype=object)
    out["error"] = pd.Series(errors, dtype=object)
    return out


def output_format(path: str | None) -> str:
    if path is None or path == STDIO:
        return "jsonl"
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise OutputError(f"{path}: unknown output type {Path(path).suffix or '(no suffix)'!r}; "
                          f"use .csv, .tsv, .jsonl or .parquet")
    return kind


class ResultWriter:
    """Writes result chunks so that a run is all-or-nothing under the final name, resumable, and alone.

    Each chunk becomes one part file in a hidden folder beside the target (``.NAME.partial/``),
    written under a temporary name and renamed, so a part is either complete or absent. ``close``
    joins the parts into a temporary file renamed onto the target: a killed run never leaves a half
    file under the final name. ``resume=True`` continues from the parts an interrupted run left
    (``resume_rows`` input rows are already done), after checking they came from the same inputs and
    options (``fingerprint``). A lock (``.NAME.lock``) held for the whole run makes a second run
    writing the same path refuse instead of interleaving. ``path`` None or ``-`` writes JSONL to
    stdout (no parts, no resume).
    """

    def __init__(self, path: str | None, columns: list[str], *, force: bool = False,
                 inputs: list[str] = (), resume: bool = False, fingerprint: dict | None = None):
        self.path = None if path in (None, STDIO) else Path(path)
        self.format = output_format(path)
        self.columns = list(columns)
        self.rows = 0
        self.resume_rows = 0
        self.discarded_partial = False
        self._lock_fh = None
        self._parts = 0
        if self.path is None:
            if resume:
                raise OutputError("--resume needs an output file (-o); stdout cannot be resumed")
            self._fh = sys.stdout
            return
        if self.path.is_dir():
            raise OutputError(f"{self.path} is a folder; give a file name with a .csv, .tsv, .jsonl "
                              f"or .parquet suffix")
        if any(i != STDIO and Path(i).resolve() == self.path.resolve() for i in inputs):
            raise OutputError(f"{self.path} is also an input; choose another -o path")
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path.parent} is not a folder; create it first")
        self._lock()
        try:
            self._prepare(force, resume, fingerprint or {})
        except BaseException:
            self._unlock()
            raise

    # -- the lock ---------------------------------------------------------------------------
    def _lock(self) -> None:
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        while True:
            try:
                fh = open(lock_path, "a+", encoding="utf-8")
            except OSError as exc:
                raise OutputError(f"cannot write beside {self.path} ({exc.strerror}); check the folder's "
                                  f"permissions or choose another -o path") from None
            try:
                import fcntl
            except ImportError:   # no flock (Windows): the lock file's existence is the lock
                fcntl = None
            try:
                if fcntl is not None:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                elif fh.tell() > 0:
                    raise BlockingIOError
            except OSError as exc:
                if not isinstance(exc, (BlockingIOError, PermissionError)):
                    fh.close()
                    raise OutputError(f"cannot lock {lock_path} ({exc.strerror}); the file system may not "
                                      f"support locks: choose an -o path on a local disk") from None
                fh.seek(0)
                owner = fh.read().strip()
                fh.close()
                raise OutputError(f"another iptnlp run{' (' + owner + ')' if owner else ''} is writing "
                                  f"{self.path}; wait for it to finish or choose another -o path") from None
            try:   # the file we locked may have been removed by a run that just finished: lock anew
                same = os.fstat(fh.fileno()).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh, self._lock_path = fh, lock_path

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            try:
                self._lock_path.unlink()
            except FileNotFoundError:
                pass
            self._lock_fh.close()
            self._lock_fh = None

    # -- parts ------------------------------------------------------------------------------
    @property
    def partial_dir(self) -> Path:
        return self.path.with_name(f".{self.path.name}.partial")

    def _prepare(self, force: bool, resume: bool, fingerprint: dict) -> None:
        import shutil

        partial = self.partial_dir
        if self.path.exists() and not force and not (resume and (partial / "run.json").is_file()):
            hint = "it is complete, so there is nothing to resume; " if resume else ""
            raise OutputError(f"{self.path} already exists; {hint}pass --force to overwrite it or choose "
                              f"another -o path")
        stamp = {"format": self.format, "columns": self.columns, **fingerprint}
        if resume:
            if not (partial / "run.json").is_file():
                raise OutputError(f"nothing to resume for {self.path}: no partial output of an interrupted run "
                                  f"was found; run without --resume")
            try:
                before = json.loads((partial / "run.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                before = None
            if before != json.loads(json.dumps(stamp)):
                raise OutputError(f"the partial output of {self.path} was made from other inputs, model or "
                                  f"options (or an input changed since); run without --resume to start again")
            for stray in partial.glob("*.tmp"):
                stray.unlink()
            for part in self._part_files():
                self.resume_rows += int(part.name.split("-")[1].split(".")[0])
                self._parts += 1
            self.rows = self.resume_rows
            return
        if partial.exists():
            shutil.rmtree(partial)
            self.discarded_partial = True
        partial.mkdir()
        (partial / "run.json").write_text(json.dumps(stamp), encoding="utf-8")

    def _part_files(self) -> list[Path]:
        return sorted(self.partial_dir.glob("part*-*.done"), key=lambda p: int(p.name[4:].split("-")[0]))

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:   # a header-only input: nothing to write (close() writes an empty file)
            return
        frame = frame.reindex(columns=self.columns)
        if self.path is None:
            self._write_text(frame, self._fh, header=False)
            self.rows += len(frame)
            return
        self._parts += 1
        final = self.partial_dir / f"part{self._parts:07d}-{len(frame)}.done"
        tmp = final.with_suffix(".tmp")
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(self._arrow_table(frame), tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                self._write_text(frame, fh, header=False)
        fsync_file(tmp)   # --resume trusts a .done part's name for its row count: its bytes come first
        os.replace(tmp, final)
        self.rows += len(frame)

    def _write_text(self, frame: pd.DataFrame, fh, *, header: bool) -> None:
        if self.format == "jsonl":
            for record in frame.to_dict(orient="records"):
                fh.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
        else:
            flat = frame.apply(lambda col: col.map(_flat))
            flat.to_csv(fh, sep="," if self.format == "csv" else "\t", index=False, header=header,
                        lineterminator="\n")

    def _arrow_table(self, frame: pd.DataFrame):
        import pyarrow as pa

        if "evidence" in frame:
            frame = frame.assign(evidence=frame["evidence"].map(
                lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else None))
        return pa.Table.from_pandas(frame, schema=_arrow_schema(self.columns), preserve_index=False)

    def close(self) -> None:
        """Join the parts into the target (via a temporary file and a rename); release the lock."""
        import shutil

        if self.path is None:
            self._fh.flush()
            return
        tmp = self.partial_dir / "joined.tmp"   # same file system as the target, gone with the folder
        try:
            parts = self._part_files()
            if self.format == "parquet":
                import pyarrow as pa
                import pyarrow.parquet as pq

                schema = _arrow_schema(self.columns)
                with pq.ParquetWriter(tmp, schema) as out:
                    if not parts:   # no rows at all: an empty file with the full schema
                        out.write_table(pa.Table.from_pylist([], schema=schema))
                    for part in parts:
                        out.write_table(pq.read_table(part, schema=schema))
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as out:
                    if self.format in ("csv", "tsv"):
                        pd.DataFrame(columns=self.columns).to_csv(
                            out, index=False, sep="," if self.format == "csv" else "\t", lineterminator="\n")
                    for part in parts:
                        with open(part, encoding="utf-8", newline="") as fh:
                            shutil.copyfileobj(fh, out, 1 << 20)
            fsync_file(tmp)   # the bytes are on disk before the name says the file is complete
            os.replace(tmp, self.path)
            shutil.rmtree(self.partial_dir, ignore_errors=True)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        finally:
            self._unlock()

    def abort(self) -> None:
        """Stop without touching the final path; complete parts are kept for ``--resume``."""
        if self.path is None:
            return
        import shutil

        if self.partial_dir.exists() and not self._part_files():
            shutil.rmtree(self.partial_dir, ignore_errors=True)
        else:
            for stray in self.partial_dir.glob("*.tmp"):
                stray.unlink()
        self._unlock()


def _arrow_schema(columns: list[str]):
    import pyarrow as pa

    types = {"confidence": pa.float64(), "row": pa.int64(), "session": pa.int64(),
             "total_sessions": pa.int64(), "two_area_focus": pa.bool_()}
    types.update({c: pa.float64() for c in PROBA_COLUMNS})
    list_columns = {"themes", "off_phase_themes"}
    return pa.schema([(c, pa.list_(pa.string()) if c in list_columns else types.get(c, pa.string()))
                      for c in columns])


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return value
    if _is_missing(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def _flat(value):
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk (a crash after the rename cannot leave it short)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

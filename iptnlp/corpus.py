"""The hand-written training corpus: authored note files -> one validated JSONL table.

Writers author notes in ``data/notes/*.txt`` as blocks, each opened by a header line::

    ### note_id=w1-0001 area=grief session=4 total_sessions=16 themes=role_play,progress_review format=soap population=adult
    S: Pt reports ...

Optional header keys: ``case_id`` and ``focus`` (notes of one course share them), ``phase`` (only
when the note itself states its phase), ``session`` and ``total_sessions`` (blank or absent for a
note with no session number).  Everything up to the next ``### `` line is the note's text.

``python -m iptnlp.corpus check FILE...`` validates files; ``build`` writes the JSONL corpus.
Standard library only, so writers can check their files before anything is installed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from iptnlp.taxonomy import AREAS, PHASES, THEME_IDS, phase_of

HEADER = "### "
REQUIRED = ("note_id", "area", "format", "population")
OPTIONAL = ("session", "total_sessions", "phase", "themes", "case_id", "focus", "source")
FORMATS = (
    "soap", "dap", "birp", "narrative", "transcript", "one_liner", "client_statement",
    "group", "telehealth", "letter", "email", "progress", "intake", "supervision",
)
_FIELD = re.compile(r"(\w+)=(\S*)")


class CorpusError(ValueError):
    """An authored note file that does not follow the block format."""


def _int_or_none(value: str, where: str) -> int | None:
    if value == "":
        return None
    if not value.isdigit():
        raise CorpusError(f"{where}: expected a whole number, got {value!r}")
    return int(value)


def parse_notes(path: str | Path) -> list[dict]:
    """Parse one authored file into note records; raise CorpusError naming file and line."""
    path = Path(path)
    records: list[dict] = []
    header: dict | None = None
    body: list[str] = []

    def close() -> None:
        if header is None:
            return
        text = "\n".join(body).strip()
        if not text:
            raise CorpusError(f"{header['_where']}: note {header['note_id']} has no text")
        header["text"] = text
        records.append(header)

    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith(HEADER):
            if header is None and line.strip():
                raise CorpusError(f"{path}:{lineno}: text before the first '### ' header")
            body.append(line)
            continue
        close()
        body = []
        where = f"{path}:{lineno}"
        fields = dict(_FIELD.findall(line[len(HEADER):]))
        unknown = set(fields) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise CorpusError(f"{where}: unknown header keys {sorted(unknown)}")
        missing = [k for k in REQUIRED if not fields.get(k)]
        if missing:
            raise CorpusError(f"{where}: header lacks {missing}")
        header = {"_where": where, **fields}
        header["note_id"] = fields["note_id"]
        if fields["area"] not in AREAS:
            raise CorpusError(f"{where}: area {fields['area']!r} is not one of {AREAS}")
        if fields["format"] not in FORMATS:
            raise CorpusError(f"{where}: format {fields['format']!r} is not one of {FORMATS}")
        themes = [t for t in fields.get("themes", "").split(",") if t]
        bad = [t for t in themes if t not in THEME_IDS]
        if bad:
            raise CorpusError(f"{where}: unknown themes {bad}; known: {THEME_IDS}")
        header["themes"] = themes
        header["session"] = _int_or_none(fields.get("session", ""), where)
        header["total_sessions"] = _int_or_none(fields.get("total_sessions", ""), where)
        stated = fields.get("phase", "")
        if stated and stated not in PHASES:
            raise CorpusError(f"{where}: phase {stated!r} is not one of {PHASES}")
        header["phase_stated"] = bool(stated)
        header["phase"] = stated or phase_of(header["session"], header["total_sessions"])
        focus = fields.get("focus", "")
        if focus and any(f not in AREAS for f in focus.split("+")):
            raise CorpusError(f"{where}: focus {focus!r} must be areas joined by '+'")
        if focus and not fields.get("case_id"):
            raise CorpusError(f"{where}: focus given without case_id")
        header["case_id"] = fields.get("case_id") or None
        header["focus"] = focus or None
        header["source"] = fields.get("source") or f"written:{path.stem}"
    close()
    return records


def load_corpus(paths: list[str | Path]) -> list[dict]:
    """Parse several authored files, checking note ids are unique across all of them."""
    records: list[dict] = []
    for p in paths:
        records.extend(parse_notes(p))
    seen: dict[str, str] = {}
    for r in records:
        if r["note_id"] in seen:
            raise CorpusError(f"{r['_where']}: note_id {r['note_id']} already used at {seen[r['note_id']]}")
        seen[r["note_id"]] = r["_where"]
    return records


COLUMNS = ("note_id", "text", "area", "session", "total_sessions", "phase", "phase_stated",
           "themes", "case_id", "focus", "format", "population", "source")


def write_jsonl(records: list[dict], out: str | Path) -> None:
    with open(out, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({k: r.get(k) for k in COLUMNS}, ensure_ascii=False) + "\n")


def summary(records: list[dict]) -> str:
    words = [len(r["text"].split()) for r in records]
    cases = {r["case_id"] for r in records if r["case_id"]}
    lines = [f"{len(records)} notes, {len(cases)} courses, words {min(words)}-{max(words)}"]
    for key in ("area", "phase", "format", "population"):
        lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in Counter(r[key] for r in records).most_common()))
    lines.append("themes: " + ", ".join(
        f"{k}={v}" for k, v in Counter(t for r in records for t in r["themes"]).most_common()))
    return "\n".join(lines)


README_HEAD = """# The training corpus

`data/notes/*.txt` are fictional IPT session notes and client texts, written by hand for this project
by several writers working in parallel, each with a different brief (populations, formats, voices);
the shared brief and the writer briefs are in `WRITING.md`, the labelling rules in `GUIDELINES.md`.
No note describes a real person; identifiers are de-identification placeholders. No text was
generated by templates or copied from any source, and none comes from the external dev set.
`corpus.jsonl` is built from the note files by `make` (`python -m iptnlp.corpus build`); this page by
`python -m iptnlp.corpus readme`. Every note carries its writer in `source` (`written:<writer>`);
there is no generated augmentation.

Columns of `corpus.jsonl`: `note_id`, `text`, `area`, `session`, `total_sessions`, `phase`
(`phase_stated` true when the note states it), `themes`, `case_id` and `focus` (notes of a course),
`format`, `population`, `source`.
"""


def readme(records: list[dict]) -> str:
    """data/README.md: provenance and counts by area, phase, format, population, theme, writer."""
    words = sorted(len(r["text"].split()) for r in records)
    courses = Counter(r["case_id"] for r in records if r["case_id"])
    lines = [README_HEAD, "## Counts", "",
             f"{len(records)} notes; {len(courses)} courses ({sum(1 for n in courses.values() if n >= 2)} "
             f"with two or more notes); words per note {words[0]}-{words[-1]}, median "
             f"{words[len(words) // 2]}; {sum(w < 30 for w in words)} notes under 30 words.", ""]
    for key, title in (("area", "area"), ("phase", "phase"), ("format", "format"),
                       ("population", "population"), ("source", "writer")):
        counts = Counter(r[key] for r in records)
        lines += [f"| {title} | notes |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in counts.most_common()] + [""]
    counts = Counter(t for r in records for t in r["themes"])
    lines += ["| theme | notes |", "| --- | --- |"]
    lines += [f"| {t} | {counts.get(t, 0)} |" for t in THEME_IDS] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("check", "build", "readme"):
        print("usage: python -m iptnlp.corpus check FILE... | build OUT.jsonl FILE... | "
              "readme OUT.md FILE...", file=sys.stderr)
        return 2
    try:
        if argv[0] == "check":
            records = load_corpus(argv[1:])
        elif argv[0] == "readme":
            records = load_corpus(argv[2:])
            Path(argv[1]).write_text(readme(records), encoding="utf-8")
        else:
            records = load_corpus(argv[2:])
            write_jsonl(records, argv[1])
    except (CorpusError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(summary(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

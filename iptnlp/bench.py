"""``make bench``: tagging speed and memory against a spaCy tokenizer-only pass, in one run.

For each size N (default 10,000 and 100,000 notes) the corpus's notes are repeated to N
(deterministic) and written to a Parquet file. Then, in the same run:

- reference: spaCy's tokenizer alone over the same texts, in this process (best of 3 passes);
- the full ``iptnlp tag`` path (read Parquet, spaCy stage, area, themes, evidence, write Parquet)
  in a fresh child process, with 1 worker and with all workers; each child reports its own
  tagging time and peak RSS (the workers' peaks are sampled from /proc while it runs);
- with Dask installed, ``--engine dask`` on a LocalCluster of all workers, over the same notes written
  in row groups of 5,000 (Dask tags one row group per task); its time includes starting the cluster;
- cold start: the wall time of ``iptnlp tag`` on a one-note file, and of ``iptnlp --help``.

Prints notes/s and the ratio of each tag run to the reference; writes ``reports/bench.json``.
Figures are ratios within one run on one machine, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iptnlp.config import REPO_ROOT


def corpus_texts() -> list[str]:
    with open(REPO_ROOT / "data" / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def repeated(base: list[str], n: int) -> list[str]:
    return [base[i % len(base)] for i in range(n)]


def tokenizer_rate(texts: list[str], passes: int = 3) -> float:
    """The reference: spaCy's tokenizer alone over the texts; the best of ``passes`` passes (one
    pass swings by half on a shared machine, and a slow reference would flatter the ratio)."""
    import spacy

    tokenizer = spacy.blank("en").tokenizer
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for _ in tokenizer.pipe(texts, batch_size=1000):
            pass
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def _descendants(pid: int) -> list[int]:
    """A process and all its descendants, from /proc/PID/task/*/children (only this tree is read:
    walking all of /proc every sample cost the bench's own process 40 % of a core, taken from the
    workers it measures)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return out


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (0 where unreadable)."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def run_child(args: list[str]) -> dict:
    """Run ``python -m iptnlp.bench --child ...``; its JSON line plus the sampled peak tree RSS."""
    proc = subprocess.Popen([sys.executable, "-m", "iptnlp.bench", "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    sampling = os.path.isdir("/proc")
    while proc.poll() is None:
        if sampling:
            peak = max(peak, _tree_rss_mb(proc.pid))
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_all_processes_mb"] = round(peak, 1) if sampling else None
    return result


def child(input_path: str, output_path: str, workers: int, engine: str = "local") -> None:
    """Tag one file with the shipped model; print tagging seconds and this process's peak RSS."""
    import resource

    from iptnlp.io import InputSpec
    from iptnlp.model import load_model
    from iptnlp.tagger import tag_files

    model = load_model()
    if engine == "dask":
        from iptnlp.dask_engine import tag_files_dask

        summary = tag_files_dask([input_path], output_path, model, InputSpec(), force=True, workers=workers)
    else:
        summary = tag_files([input_path], output_path, model, InputSpec(), force=True, workers=workers)
    print(json.dumps({"notes": summary.notes, "ok": summary.status.get("ok", 0), "seconds": summary.seconds,
                      "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def dask_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("dask", "distributed"))


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of a command, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(sizes: list[int], workers: int) -> dict:
    import pandas as pd

    from iptnlp.tagger import default_workers

    all_workers = workers or default_workers()
    base = corpus_texts()
    result: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory(prefix="iptnlp-bench-") as tmp:
        for n in sizes:
            texts = repeated(base, n)
            src = Path(tmp) / f"notes-{n}.parquet"
            pd.DataFrame({"note_id": [f"b{i}" for i in range(n)], "text": texts}).to_parquet(src)
            ref = tokenizer_rate(texts)
            del texts
            entry = {"tokenizer_notes_per_s": round(ref, 1)}
            for label, w in (("1_worker", 1), (f"{all_workers}_workers", all_workers)):
                r = run_child([str(src), str(Path(tmp) / f"out-{n}-{w}.parquet"), str(w)])
                rate = r["notes"] / r["seconds"]
                entry[label] = {"workers": w, "notes_per_s": round(rate, 1),
                                "ratio_to_tokenizer": round(rate / ref, 3),
                                "peak_rss_main_mb": round(r["peak_rss_main_mb"], 1),
                                "peak_rss_all_processes_mb": r["peak_rss_all_processes_mb"],
                                "ok": r["ok"]}
                print(f"{n:>7,} notes, {label:<10} {rate:8,.0f} notes/s  ratio {rate / ref:.3f} "
                      f"(tokenizer {ref:,.0f}/s)  peak RSS {r['peak_rss_main_mb']:.0f} MB main, "
                      f"{r['peak_rss_all_processes_mb'] or 0:.0f} MB all processes", flush=True)
            if not dask_installed():
                print("dask not installed (pip install 'iptnlp[dask]'): --engine dask not measured", flush=True)
            else:
                # Dask tags one Parquet row group per task: the same notes in row groups of 5,000
                rg = Path(tmp) / f"notes-{n}-rowgroups.parquet"
                pd.read_parquet(src).to_parquet(rg, row_group_size=5000)
                r = run_child([str(rg), str(Path(tmp) / f"out-{n}-dask.parquet"), str(all_workers), "dask"])
                rate = r["notes"] / r["seconds"]
                entry["dask"] = {"workers": all_workers, "notes_per_s": round(rate, 1),
                                 "ratio_to_tokenizer": round(rate / ref, 3), "ok": r["ok"],
                                 "includes": "starting the LocalCluster and loading the model in each worker",
                                 "peak_rss_all_processes_mb": r["peak_rss_all_processes_mb"]}
                print(f"{n:>7,} notes, {'dask':<10} {rate:8,.0f} notes/s  ratio {rate / ref:.3f} "
                      f"(LocalCluster of {all_workers}, its start included)  "
                      f"{r['peak_rss_all_processes_mb'] or 0:.0f} MB all processes", flush=True)
            result["sizes"][str(n)] = entry
        one = Path(tmp) / "one.csv"
        one.write_text("note_id,text\nn1,Argued with her sister again about money; felt unheard.\n",
                       encoding="utf-8")
        exe = str(Path(sys.executable).with_name("iptnlp"))
        cmd = [exe] if Path(exe).exists() else [sys.executable, "-m", "iptnlp.cli"]
        result["cold_start_tag_one_note_s"] = round(
            wall([*cmd, "tag", str(one), "-o", str(Path(tmp) / "one-out.csv"), "--force", "-q"], 3), 3)
        result["cold_start_help_s"] = round(wall([*cmd, "--help"], 5), 3)
    print(f"cold start: iptnlp tag on one note {result['cold_start_tag_one_note_s']:.2f} s; "
          f"iptnlp --help {result['cold_start_help_s']:.2f} s")
    sizes_k = [str(n) for n in sizes]
    if len(sizes_k) >= 2:
        small, large = result["sizes"][sizes_k[0]], result["sizes"][sizes_k[-1]]
        growth = large["1_worker"]["peak_rss_main_mb"] / small["1_worker"]["peak_rss_main_mb"] - 1
        result["rss_growth_1_worker"] = round(growth, 3)
        print(f"peak RSS growth from {sizes_k[0]} to {sizes_k[-1]} notes (1 worker): {growth:+.1%}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iptnlp.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated note counts")
    parser.add_argument("--workers", type=int, default=0, help="the 'all workers' run (0: one per core)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "bench.json")
    parser.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:   # INPUT OUTPUT WORKERS [ENGINE]
        if len(args.child) not in (3, 4) or args.child[3:4] not in ([], ["local"], ["dask"]):
            parser.error("--child takes INPUT OUTPUT WORKERS [local|dask]")
        child(args.child[0], args.child[1], int(args.child[2]), *args.child[3:4])
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    result = {"date": time.strftime("%Y-%m-%d"), "command": "make bench",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                         f"{platform.system()}",
              **run(sizes, args.workers)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

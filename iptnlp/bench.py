"""``make bench``: tagging speed against a spaCy tokenizer-only pass over the same texts, one run.

Notes are the corpus's, repeated to N. Prints notes/s and the ratio of the full tag path to the
reference; writes ``reports/bench.json``. Figures are ratios within one run, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

from iptnlp.config import REPO_ROOT


def _texts(n: int) -> list[str]:
    with open(REPO_ROOT / "data" / "corpus.jsonl", encoding="utf-8") as fh:
        base = [json.loads(line)["text"] for line in fh]
    return [base[i % len(base)] for i in range(n)]


def run(n: int) -> dict:
    import spacy

    from iptnlp.model import load_model

    texts = _texts(n)
    tokenizer = spacy.blank("en").tokenizer
    t0 = time.perf_counter()
    for _ in tokenizer.pipe(texts, batch_size=1000):
        pass
    ref = time.perf_counter() - t0

    import pandas as pd

    from iptnlp.io import InputSpec, _normalise
    from iptnlp.tagger import Tagger

    tagger = Tagger(load_model())
    spec = InputSpec()
    chunks = [_normalise(pd.DataFrame({"text": texts[s:s + 1000]}), "bench", s + 1, spec)
              for s in range(0, n, 1000)]
    tagger.tag_frame(chunks[0].head(10))     # warm: the pipeline is built once per process
    t0 = time.perf_counter()
    for chunk in chunks:     # the full tag path: area, probabilities, phase, themes, evidence
        tagger.tag_frame(chunk)
    full = time.perf_counter() - t0
    return {
        "notes": n,
        "tokenizer_notes_per_s": n / ref,
        "tag_1_worker_notes_per_s": n / full,
        "ratio_tag_to_tokenizer": ref / full,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10000, help="notes to tag (default 10000)")
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
                         f"Python {platform.python_version()}", **run(args.n)}
    print(f"{result['notes']} notes: tokenizer only {result['tokenizer_notes_per_s']:,.0f} notes/s; "
          f"full tag (1 worker) {result['tag_1_worker_notes_per_s']:,.0f} notes/s; "
          f"ratio {result['ratio_tag_to_tokenizer']:.3f}; peak RSS {result['peak_rss_mb']:.0f} MB")
    out = REPO_ROOT / "reports" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

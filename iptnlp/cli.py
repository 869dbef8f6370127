"""The ``iptnlp`` command line: thin click commands over the library's functions.

Heavy libraries (pandas, scikit-learn, spaCy) are imported inside the commands, so ``iptnlp --help``
answers at once. Library errors (``IptnlpError``) become a one-line ``Error:`` message and exit 1;
``--verbose`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from iptnlp.errors import IptnlpError

EXIT_USER_ERROR = 1


class IptnlpGroup(click.Group):
    """Turns library errors into ``Error: ...`` on stderr with exit code 1, in one place."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IptnlpError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            resumable = ctx.invoked_subcommand == "tag"
            click.echo("Error: interrupted; no output file was written" + (
                " (with -o FILE, the same command with --resume continues from the rows already tagged)"
                if resumable else ""), err=True)
            ctx.exit(130)


def _say(quiet: bool):
    from iptnlp.tagger import stderr_progress

    return None if quiet else stderr_progress


model_option = click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
                            help="Model folder (default: the shipped models/ipt-area).")
text_col_option = click.option("--text-col", default="text", show_default=True,
                               help="Column holding the note text.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")


@click.group(cls=IptnlpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="iptnlp")
@click.pass_context
def main(ctx, verbose):
    """Tag de-identified IPT session notes with their problem area.

    \b
    Example:
      iptnlp tag data/examples/notes.csv -o tagged.csv
    """
    ctx.obj = {"verbose": verbose}


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", default=None,
              help="Output file; format from its suffix (.csv .tsv .jsonl .parquet). Default: JSONL on stdout.")
@model_option
@click.option("--id-col", default="note_id", show_default=True, help="Column holding the note id.")
@text_col_option
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run into OUTPUT after the rows it already wrote (same inputs "
                   "and options).")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Confidence under which area is 'uncertain' (default: the model's).")
@click.option("--encoding", default="utf-8", show_default=True, help="Byte encoding of text inputs.")
@click.option("--on-error", type=click.Choice(["mark", "fail"]), default="mark", show_default=True,
              help="A malformed JSONL line: mark it as an error row and go on, or stop.")
@click.option("--on-phi", type=click.Choice(["flag", "redact", "skip", "fail"]), default="flag",
              show_default=True,
              help="A note with leftover identifiers (e-mail, phone, address, full date, ID number, URL, "
                   "name): list them in phi_flags and tag it; redact them to placeholders first; skip the "
                   "note (status skipped); or stop the run.")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True,
              help="Notes read and tagged per chunk.")
@click.option("--course-length", type=click.IntRange(4), default=16, show_default=True,
              help="Course length for notes without total_sessions (phase = initial 1-3, termination = last 3).")
@click.option("--workers", "-j", type=click.IntRange(0), default=0,
              help="Worker processes (default 0: one per core). Inputs of one chunk are tagged in-process.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="local: this machine's worker pool. dask: Dask over Parquet/CSV partitions "
                   "(pip install 'iptnlp[dask]').")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="With --engine dask: a running Dask scheduler (tcp://host:8786). Default: a LocalCluster "
                   "of --workers processes.")
@quiet_option
def tag(inputs, output, model_dir, id_col, text_col, force, resume, threshold, encoding, on_error, on_phi,
        batch_size, course_length, workers, engine, scheduler, quiet):
    """Tag notes with their IPT problem area, phase and phase themes.

    INPUT is a .csv, .tsv, .jsonl or .parquet file, a folder of .txt files (id = file name), or -
    for JSONL on stdin. Every input row gives exactly one output row, in input order, with
    status ok, error or skipped, the area and its probabilities, the phase, the themes found (and
    those off-phase), the evidence (character offsets and words) for the area and each theme, and
    any leftover identifiers found (phi_flags). Results are written under a hidden name and renamed
    when the run completes; --resume continues an interrupted run.

    \b
    Examples:
      iptnlp tag notes.csv -o tagged.csv
      iptnlp tag notes.jsonl more.parquet -o tagged.parquet --force
      cat notes.jsonl | iptnlp tag - > tagged.jsonl
      iptnlp tag archive.parquet -o tagged.parquet --workers 8
      iptnlp tag archive.parquet -o tagged.parquet --engine dask --scheduler tcp://10.0.0.5:8786
    """
    import codecs

    from iptnlp.io import InputSpec
    from iptnlp.model import load_model
    from iptnlp.tagger import default_workers, stderr_warning, tag_files

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252",
                                 param_hint="--encoding") from None
    model = load_model(model_dir)
    spec = InputSpec(text_col=text_col, id_col=id_col, encoding=encoding, on_error=on_error,
                     chunk_size=batch_size)
    if scheduler and engine != "dask":
        raise click.UsageError("--scheduler needs --engine dask")
    if resume and engine == "dask":
        raise click.UsageError("--resume works with the local engine; leave out --engine dask")
    if engine == "dask":
        from iptnlp.dask_engine import tag_files_dask

        summary = tag_files_dask(list(inputs), output, model, spec, scheduler=scheduler,
                                 workers=workers or default_workers(), force=force, threshold=threshold,
                                 course_length=course_length, on_phi=on_phi, progress=_say(quiet),
                                 warn=stderr_warning)
    else:
        summary = tag_files(list(inputs), output, model, spec, force=force, threshold=threshold,
                            course_length=course_length, workers=workers or default_workers(),
                            resume=resume, on_phi=on_phi, progress=_say(quiet), warn=stderr_warning)
    if not quiet:
        click.echo(f"iptnlp: {summary.line()}" + (f" -> {output}" if output else ""), err=True)


@main.command()
@click.argument("data", nargs=-1, required=True, metavar="DATA...")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model folder to write (model.skops + model.json).")
@click.option("--label-col", default="area", show_default=True, help="Column holding the area label.")
@text_col_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Model config (default: configs/model.yml).")
@click.option("--cv-folds", type=click.IntRange(0), default=5, show_default=True,
              help="Grouped cross-validation folds for the model card's metrics (0: skip).")
@click.option("--force", is_flag=True, help="Replace an existing model folder.")
@quiet_option
def train(data, out_dir, label_col, text_col, config_path, cv_folds, force, quiet):
    """Train an area model on labelled notes and save it with its model card.

    \b
    Example:
      iptnlp train data/corpus.jsonl -o models/my-model --config configs/model.yml
    """
    from pathlib import Path

    from iptnlp.errors import OutputError
    from iptnlp.evaluate import format_metrics
    from iptnlp.train import train_model

    if (Path(out_dir) / "model.json").exists() and not force:
        raise OutputError(f"{out_dir} already holds a model; pass --force to replace it")
    card = train_model(list(data), out_dir, config_path=config_path, label_col=label_col,
                       text_col=text_col, cv_folds=cv_folds, progress=_say(quiet))
    if not quiet and "grouped_cv" in card["metrics"]:
        click.echo(format_metrics(card["metrics"]["grouped_cv"], "grouped cross-validation:"), err=True)
    if not quiet:
        click.echo(f"iptnlp: model written to {out_dir}", err=True)


@main.command()
@click.argument("data", metavar="DATA")
@model_option
@click.option("--label-col", default="area", show_default=True, help="Column holding the area label.")
@text_col_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics as JSON to this file.")
def evaluate(data, model_dir, label_col, text_col, json_path):
    """Score a model on labelled notes: precision, recall, F1, kappa, confusion, calibration.

    \b
    Example:
      iptnlp evaluate data/heldout.csv --json reports/heldout.json
    """
    import json

    from iptnlp.evaluate import format_metrics
    from iptnlp.model import load_model
    from iptnlp.train import evaluate_model

    model = load_model(model_dir)
    metrics = evaluate_model(model, data, label_col=label_col, text_col=text_col)
    click.echo(format_metrics(metrics, f"{data}:"))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)


@main.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def info(model_dir, as_json):
    """Show a model's card: labels, training data, versions, metrics.

    \b
    Example:
      iptnlp info --model models/ipt-area
    """
    import json

    from iptnlp.model import DEFAULT_MODEL_DIR, read_card, verify

    model_dir = model_dir or str(DEFAULT_MODEL_DIR)
    card = read_card(model_dir)
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    try:
        verify(model_dir, card)
        status = "verified (file hash and library versions match)"
    except IptnlpError as exc:
        status = f"NOT loadable: {exc}"
    td = card.get("training_data", {})
    lines = [
        f"model        {card.get('name')}  ({model_dir})",
        f"status       {status}",
        f"created      {card.get('created')}",
        f"labels       {', '.join(card.get('labels', []))}",
        f"trained on   {td.get('n_notes')} notes from {', '.join(td.get('files', []))}",
        f"label counts {', '.join(f'{k} {v}' for k, v in td.get('label_counts', {}).items())}",
        f"data sha256  {td.get('sha256')}",
        f"model sha256 {card.get('model_sha256')}",
        "versions     " + ", ".join(f"{k} {v}" for k, v in card.get("versions", {}).items()),
        f"abstain at   {card['config']['model'].get('abstain_threshold')}",
    ]
    click.echo("\n".join(lines))
    metrics = card.get("metrics", {})
    if "grouped_cv" in metrics:
        from iptnlp.evaluate import format_metrics

        click.echo(format_metrics(metrics["grouped_cv"], "grouped cross-validation on the training data:"))
    if "themes_grouped_cv" in metrics:
        tm = metrics["themes_grouped_cv"]
        click.echo(f"themes (learned model, grouped cross-validation, threshold {tm['threshold']}): micro "
                   f"P {tm['micro']['precision']:.3f} R {tm['micro']['recall']:.3f} F1 {tm['micro']['f1']:.3f}")
        for theme, v in tm["per_theme"].items():
            click.echo(f"  {theme:<26} P {v['precision']:.2f}  R {v['recall']:.2f}  F1 {v['f1']:.2f}  "
                       f"n {v['support']}")


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(),
              help="Folder for cases.csv, sessions.csv and report.html (created if missing).")
@model_option
@click.option("--focus-col", default=None,
              help="Column holding each case's agreed focus (an area, or two joined by '+'). "
                   "Default: 'focus' when the input has it; cases without one get an inferred focus.")
@click.option("--course-length", type=click.IntRange(4), default=16, show_default=True,
              help="Course length for notes without total_sessions (phase = initial 1-3, termination = last 3).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Audit rules (default: configs/audit.yml).")
@click.option("--id-col", default="note_id", show_default=True, help="Column holding the note id.")
@text_col_option
@click.option("--encoding", default="utf-8", show_default=True, help="Byte encoding of text inputs.")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True,
              help="Notes read and tagged per chunk.")
@click.option("--force", is_flag=True, help="Overwrite cases.csv, sessions.csv, report.html in the folder.")
@click.option("--workers", "-j", type=click.IntRange(0), default=0,
              help="Worker processes (default 0: one per core). Inputs of one chunk are tagged in-process.")
@quiet_option
def audit(inputs, out_dir, model_dir, focus_col, course_length, config_path, id_col, text_col, encoding,
          batch_size, force, workers, quiet):
    """Audit focus adherence per case: drift, missing sessions, off-phase and missing themes.

    Notes are grouped by case_id and ordered by session. Writes DIR/cases.csv (one row per case),
    DIR/sessions.csv (one row per note) and DIR/report.html (one page that works offline, for a
    supervisor). Without a focus column, each case's focus is inferred from its initial-phase
    sessions and the course as a whole. The report shows no note text.

    \b
    Example:
      iptnlp audit data/examples/courses.csv -o reports/audit-demo
      iptnlp audit notes.csv -o audit/ --focus-col agreed_area --course-length 12 --force
    """
    import codecs
    from pathlib import Path

    from iptnlp.audit import OUTPUT_FILES, load_audit_config, tag_inputs, write_audit
    from iptnlp.audit import audit as run_audit
    from iptnlp.errors import OutputError
    from iptnlp.io import InputSpec
    from iptnlp.model import load_model
    from iptnlp.report import render_report

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {encoding!r}; try utf-8, latin-1 or cp1252",
                                 param_hint="--encoding") from None
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"{out_dir} is a file; -o needs a folder")
    existing = [n for n in OUTPUT_FILES if (Path(out_dir) / n).exists()]
    if existing and not force:   # before the slow part
        raise OutputError(f"{out_dir} already holds {', '.join(existing)}; pass --force to overwrite or "
                          f"choose another -o folder")
    config = load_audit_config(config_path)
    model = load_model(model_dir)
    spec = InputSpec(text_col=text_col, id_col=id_col, encoding=encoding, chunk_size=batch_size)
    from iptnlp.tagger import default_workers

    tagged = tag_inputs(list(inputs), model, spec, course_length=course_length, focus_col=focus_col,
                        workers=workers or default_workers(), progress=_say(quiet))
    has_focus = focus_col is not None or "focus" in tagged.columns
    result = run_audit(tagged, config, focus_col="focus" if has_focus else None, course_length=course_length)
    html = render_report(result, inputs=list(inputs), model_name=str(model.card.get("name", "")))
    write_audit(result, out_dir, html, force=force)
    if not quiet:
        c = result.counts
        click.echo(f"iptnlp: {c['notes']} notes ({c['error']} could not be read, {c['without_case']} without "
                   f"case_id), {c['cases']} cases -> {out_dir}/cases.csv, sessions.csv, report.html", err=True)


if __name__ == "__main__":
    sys.exit(main())

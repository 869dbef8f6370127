"""iptnlp: tag de-identified IPT session notes with their problem area, themes and phase.

The Python API beside the CLI::

    import iptnlp
    model = iptnlp.load_model()            # the shipped models/ipt-area, verified
    results = iptnlp.tag(df, model)        # one result row per row of a pandas DataFrame

Heavy libraries load on first use, so importing this package is cheap.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "tag", "phase_of", "__version__"]


def __getattr__(name):
    if name == "load_model":
        from iptnlp.model import load_model

        return load_model
    if name == "tag":
        from iptnlp.tagger import tag

        return tag
    if name == "phase_of":
        from iptnlp.taxonomy import phase_of

        return phase_of
    raise AttributeError(f"module 'iptnlp' has no attribute {name!r}")

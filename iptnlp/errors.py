"""Exception types the library raises; the CLI turns them into one-line messages.

Messages name files, line and row numbers, note ids and columns: never note text.
"""


class IptnlpError(Exception):
    """Base class: something the user can fix; the message says what and how."""


class InputError(IptnlpError):
    """An input file cannot be read as notes (missing, unknown format, bad bytes, no text column)."""


class OutputError(IptnlpError):
    """An output path cannot be written (exists without --force, unknown suffix)."""


class ConfigError(IptnlpError):
    """A config file has unknown keys or invalid values (every problem listed)."""


class ModelError(IptnlpError):
    """A model cannot be loaded safely (missing, changed since its card, other library versions)."""

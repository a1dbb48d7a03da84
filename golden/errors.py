"""Error types shared by every bitswarm package.

Every error a user can cause (bad parameter, malformed model file, missing data set) is a
:class:`BitswarmError`; the ``bitswarm`` command prints it as one line and exits non-zero.
"""

__all__ = ["BitswarmError", "ConfigError", "ModelFileError"]


class BitswarmError(Exception):
    """Base class of all errors that bitswarm reports to users as one line."""


class ConfigError(BitswarmError, ValueError):
    """A configuration value is out of its documented range or of the wrong type."""


class ModelFileError(BitswarmError):
    """A model file is malformed, of an unsupported version, or inconsistent."""

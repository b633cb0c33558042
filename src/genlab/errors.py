"""Errors that the CLI prints as one line (no traceback)."""


class GenlabError(Exception):
    """A problem the user can fix; the message names it and the fix."""


class ConfigError(GenlabError):
    """A config key, type or value that is not allowed."""


class DataError(GenlabError):
    """A data set, folder or file that cannot be read as images."""


class CheckpointError(GenlabError):
    """A checkpoint that is missing, corrupt, unsafe or does not match the model."""

"""Exceptions that map to documented exit codes; the CLIs print their message on one line."""


class PdacError(Exception):
    exit_code = 1


class UsageError(PdacError):
    exit_code = 2


class InputError(PdacError):
    """The scan (or another input file) cannot be processed."""

    exit_code = 3


class WeightsError(PdacError):
    """Model weights are missing, corrupt or do not match the manifest."""

    exit_code = 4


class OutputError(PdacError):
    """Outputs cannot be written."""

    exit_code = 5

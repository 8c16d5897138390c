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


class SendError(PdacError):
    """DICOM objects could not be sent to, or did not all arrive at, an archive (C-STORE)."""

    exit_code = 6


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: unwind (removing temporaries and half-written outputs), then exit 128 +
    the signal's number. A BaseException, so that per-case `except Exception` handlers let it through."""

    def __init__(self, signum: int):
        import signal

        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; partial outputs removed")


def raise_on_termination_signals() -> None:
    """Turn SIGTERM and SIGINT into `Interrupted` in the main thread. Later signals are ignored while the
    first one unwinds, so the clean-up itself cannot be cut short."""
    import signal

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

"""User-facing errors: one line that names the input and says what to do."""


class MipkitError(Exception):
    """A configuration or input error the CLI prints as one line (exit code 2)."""


class NothingBuiltError(MipkitError):
    """The build ran but produced no pair at all."""


class SessionBlockedError(MipkitError):
    """A host blocked the session: what was built is committed, the rest is pending (exit code 75, EX_TEMPFAIL)."""

    exit_code = 75

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary

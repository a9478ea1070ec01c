"""User-facing errors: one line that names the input and says what to do."""


class MipkitError(Exception):
    """A configuration or input error the CLI prints as one line (exit code 2)."""


class NothingBuiltError(MipkitError):
    """The build ran but produced no pair at all."""

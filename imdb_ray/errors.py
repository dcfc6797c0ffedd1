"""The one exception type a user sees: a one-line message saying what to fix (CLI exit code 2)."""


class UserError(Exception):
    """Bad input (data, config, sweep file, CLI). The message is one line and names the culprit."""

"""The one exception type a user sees: a one-line message saying what to fix (CLI exit code 2)."""


class UserError(Exception):
    """Bad input (data, config, sweep file, CLI). The message is one line and names the culprit."""


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() splits on


def one_line(message: str) -> str:
    """The message with line breaks escaped: user values quoted in it never split an error in two."""
    return "".join(c.encode("unicode_escape").decode() if c in LINE_BREAKS else c for c in message)

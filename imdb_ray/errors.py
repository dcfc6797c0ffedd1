"""The one exception type a user sees: a one-line message saying what to fix (CLI exit code 2); and the run
outcomes said the same way (exit code 1): a run can end on something its user acts on, which is not a bug."""
import difflib
import errno
import re
from typing import Iterable


class UserError(Exception):
    """Bad input (data, config, sweep file, CLI). The message is one line and names the culprit."""


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() splits on


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean X?' for the choice nearest a misspelt `word`, or '' when none is near (difflib's 0.6 cut-off).
    Options are compared without their dashes, which every one shares (--bogus is not near --verbose)."""
    bare = {choice.lstrip("-"): choice for choice in choices}
    near = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1)
    return f"; did you mean {bare[near[0]]}?" if near else ""


def one_line(message: str) -> str:
    """The message with line breaks escaped: user values quoted in it never split an error in two."""
    return "".join(c.encode("unicode_escape").decode() if c in LINE_BREAKS else c for c in message)


def run_outcome(error: BaseException) -> str | None:
    """The line for a run that ended on what its user can act on: it diverged, its model does not fit in memory
    (CPU or CUDA), the disk is full. None: a bug, whose traceback is the report."""
    if isinstance(error, (FloatingPointError, MemoryError)):  # train.py's divergence, models' CPU allocation message
        return str(error)
    if type(error).__name__ == "OutOfMemoryError":  # torch's CUDA OOM; its advice on the allocator's settings cut
        return f"{str(error).split(' If reserved')[0]}; lower --batch-size or --max-len"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{error.strerror}: {error.filename or 'writing'}; free some space (what was written before is kept)"
    return None


def allocation_asked(error: BaseException) -> str:
    """What a refused CPU allocation asked for, in the allocator's own message: torch's "...you tried to allocate
    N bytes. Error code 12" or numpy's "Unable to allocate 685. GiB for an array with shape (...)"."""
    if found := re.search(r"allocate (\d+) bytes", str(error)):
        return f"asked for {int(found[1]) / 2**30:,.0f} GiB"
    if found := re.search(r"allocate ([\d.]+) ([KMGTP]i?B)", str(error)):
        return f"asked for {found[1].rstrip('.')} {found[2]}"
    return "the allocator refused"

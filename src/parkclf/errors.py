"""The one error type for a user's mistake: a bad flag, a missing folder, a model that cannot be loaded.

Library code raises :class:`UsageError` with a message that names the bad value and the fix; only
:mod:`parkclf.cli` turns it into one line on stderr and exit code 2. Anything else is a bug and keeps its traceback.
"""


class UsageError(ValueError):
    """Something the person running the command can fix. The message says what and how."""

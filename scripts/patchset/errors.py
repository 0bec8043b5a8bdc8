"""The one exception type the command line turns into a clean message."""


class PatchsetError(Exception):
    """A problem the user can fix; the message says what to do."""

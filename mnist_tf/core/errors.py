"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem the user caused and can fix; the message says what to do.

    The CLI prints it as a single line and exits with status 2, without a traceback.
    """

"""The one exception type for bad input: its message is shown to the user as a single line."""


class UserError(Exception):
    """Bad input (config, dataset id, missing file): says what is wrong and how to fix it."""

"""The one exception type for bad input: its message is shown to the user as a single line."""


class UserError(Exception):
    """Bad input (config, dataset id, missing file): says what is wrong and how to fix it."""


def user_error(err: BaseException | None) -> UserError | None:
    """The UserError behind `err`, also when Hydra's instantiate wrapped one raised by a `_target_`."""
    while err is not None and not isinstance(err, UserError):
        err = err.__cause__
    return err

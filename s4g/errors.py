"""The one exception type for mistakes a user can fix (bad path, bad option, bad file)."""


class UserInputError(ValueError):
    """Raised for input a user can correct; the CLI prints the message and exits with code 2.

    Subclasses ValueError so library callers can catch the usual exception type.
    The message must name the offending file or option and say what was expected.
    """

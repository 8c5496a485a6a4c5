"""The one exception type for mistakes a user can fix (bad path, bad option, bad file)."""


class UserInputError(ValueError):
    """Raised for input a user can correct; the CLI prints the message and exits with code 2.

    Subclasses ValueError so library callers can catch the usual exception type.
    The message must name the offending file or option and say what was expected.
    """


def check_seed(option: str, value: int) -> int:
    """`value` if it is a seed every random generator s4g seeds takes (0 <= seed < 2**32);
    UserInputError naming `option` (as spelled on the command line) otherwise."""
    if not 0 <= value < 2**32:
        raise UserInputError(f"{option} must be a whole number from 0 to {2**32 - 1}, got {value}")
    return value

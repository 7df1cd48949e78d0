"""Errors the command line turns into one clear line and an exit code."""


class InputError(Exception):
    """Bad user input: a missing file, a wrong column, an impossible setting (exit code 2).

    The message names the file, field and value and says what was expected.
    """

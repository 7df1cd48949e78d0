"""Errors the command line turns into one clear line and an exit code."""

from __future__ import annotations

import re


class InputError(Exception):
    """Bad user input: a missing file, a wrong column, an impossible setting (exit code 2).

    The message names the file, field and value and says what was expected. When the bad value is an
    argument of a library function, `field` is that argument's name and the message spells it as
    `field = value` (or "pass field"); the command line shows its own flag in its place (`cli_message`).
    """

    def __init__(self, message: str, *, field: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.field = field

    def cli_message(self, flags: dict[str, str] | None = None) -> str:
        """The message with each named argument replaced by the command line's flag for it (`flags[field]`,
        else `--` and the field's last dotted part with hyphens): `hosts = 2` reads `--hosts 2`."""
        message = str(self)
        fields = () if self.field is None else (self.field,) if isinstance(self.field, str) else tuple(self.field)
        for field in fields:
            flag = (flags or {}).get(field) or "--" + field.split(".")[-1].replace("_", "-")
            name = re.escape(field)
            # whole words only: not inside another word ("without") nor a path (/tmp/out/run)
            message = re.sub(rf"(?<![\w./-]){name} = ", lambda _, flag=flag: f"{flag} ", message)
            message = re.sub(rf"(?<![\w./-]){name}(?![\w/-])", lambda _, flag=flag: flag, message)
        return message

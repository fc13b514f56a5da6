"""InvalidValue: bad input that knows where it is. Pure Python, so every layer can raise and read it.

A validator raises it with the dotted key of the offending field, relative to the object it validates
(`schedule.max_steps` in a TrialConfig, `gpus` in Resources, '' for the object itself). Whoever holds that
object at some path re-raises it `under` the path, so the key stays data all the way up to the file and
line a user is shown (grid/spec/config_loader.py); nothing reads a key back out of the message.
"""

from __future__ import annotations

import copy
from typing import Any


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"

    def __reduce__(self) -> str:
        return "NO_VALUE"  # unpickled as this module's one instance, so `value is NO_VALUE` still holds


NO_VALUE: Any = _NoValue()
"""The `value` of an error whose message is a whole sentence: it is shown as written, not as KEY=VALUE."""


def join_key(parent: str, key: str) -> str:
    """'schedule' + 'max_steps' -> 'schedule.max_steps'; either may be '' (the object itself)."""
    return f"{parent}.{key}" if parent and key else parent or key


class InvalidValue(ValueError):
    """A value a validator rejects, with its dotted key and what was expected.

    With a `value` the text reads `KEY=VALUE: message`, the key spelled as far as this error knows it;
    without one the message is the whole text (it may name fields in prose: "variant 'x' has two gates").
    """

    def __init__(self, key: str, message: str, *, value: Any = NO_VALUE) -> None:
        super().__init__(message)
        self.key, self.message, self.value = key, message, value

    def stated(self, key: str) -> str:
        """The one-line text with the key spelled `key` (a holder's longer path)."""
        return self.message if self.value is NO_VALUE else f"{key}={self.value!r}: {self.message}"

    def __str__(self) -> str:
        return self.stated(self.key)

    def under(self, parent: str) -> InvalidValue:
        """The same error (same type) as the object that holds the validated one at `parent` sees it."""
        moved = copy.copy(self)
        moved.key = join_key(parent, self.key)
        return moved

    def __reduce__(self):
        # An exception pickles as type(*args) by default; this one (and its subclasses, whose signatures
        # differ) is rebuilt from its attributes, so it crosses a process boundary (a Ray task) intact.
        return _restore, (type(self), dict(self.__dict__))


def _restore(cls: type, state: dict) -> InvalidValue:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    err.args = (state.get("message", ""),)
    return err

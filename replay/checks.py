"""One wording for every "bad value" error, so users read the same sentence everywhere."""
from __future__ import annotations


def allowed_values(choices) -> str:
    """``'a', 'b' and 'c'``: allowed values as the error messages list them.

    >>> allowed_values(["recorded", "shuffled", "reversed"])
    "'recorded', 'shuffled' and 'reversed'"
    """
    choices = list(choices)
    if len(choices) == 1:
        return repr(choices[0])
    return ", ".join(repr(c) for c in choices[:-1]) + f" and {choices[-1]!r}"


def check_choice(parameter: str, value, choices, error=ValueError):
    """Return ``value`` if it is one of ``choices``; else raise ``error`` naming all three.

    >>> check_choice("order", "shuffle", ["recorded", "shuffled"])
    Traceback (most recent call last):
    ...
    ValueError: Invalid value for the 'order' parameter. Allowed values are 'recorded' and 'shuffled', but got 'shuffle' instead.
    """
    if value not in choices:
        raise invalid_value(parameter, allowed_values(choices), value, error)
    return value


def invalid_value(parameter: str, allowed: str, value=None, error=ValueError, *,
                  got: str | None = None) -> Exception:
    """The error (to raise) for a ``value`` of ``parameter`` outside ``allowed`` (a phrase);
    ``got`` words the value instead of its ``repr`` ("an array of shape (3,)").

    >>> invalid_value("forgetting", "numbers in (0, 1]", 1.5)
    ValueError("Invalid value for the 'forgetting' parameter. Allowed values are numbers in (0, 1], but got 1.5 instead.")
    """
    got = repr(value) if got is None else got
    return error(f"Invalid value for the {parameter!r} parameter. Allowed values are {allowed}, "
                 f"but got {got} instead.")

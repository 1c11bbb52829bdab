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
        raise error(f"Invalid value for the {parameter!r} parameter. Allowed values are "
                    f"{allowed_values(choices)}, but got {value!r} instead.")
    return value

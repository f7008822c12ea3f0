"""Argument handling shared by jaxmagic's magics (IPython's magic_arguments underneath)."""

from __future__ import annotations

import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring


def parse(magic: Callable, argstring: str) -> Any:
    """``parse_argstring`` whose errors name the valid flags (the magic's usage line)."""
    try:
        return parse_argstring(magic, argstring)
    except UsageError as e:
        usage = magic.parser.format_usage().strip()
        raise UsageError(f"{e}\n{usage}\n(see %{magic.parser.prog.lstrip('%')}? for help)") from None


def split_flags(line: str, takes_value: set[str]) -> tuple[str, str]:
    """Split ``line`` into its leading flags and the raw rest (a Python statement).

    The statement keeps its exact text (quotes, spacing). Flags in ``takes_value`` consume
    the next token unless written ``--flag=value``.
    """
    rest = line.lstrip()
    flags: list[str] = []
    while rest.startswith("-"):
        token, _, tail = rest.partition(" ")
        if token == "--":
            rest = tail.lstrip()
            break
        flags.append(token)
        rest = tail.lstrip()
        if token in takes_value and rest:
            value, _, tail = rest.partition(" ")
            flags.append(value)
            rest = tail.lstrip()
    return " ".join(shlex.quote(f) for f in flags), rest

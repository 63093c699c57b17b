"""What every command's parser shares: one-line errors, help with the defaults that matter,
true/false flags, and --help text read from a dataclass's field comments."""

from __future__ import annotations

import argparse
import inspect
import typing

from facegan.version import __version__


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing `# comment` in a dataclass's source: the --help text of
    TrainConfig's fields and of each arch's options."""
    helps = {}
    for line in inspect.getsource(cls).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest and name.isidentifier():
            helps[name] = rest.split("#", 1)[1].strip()
    return helps


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags and values get one line, not the whole usage of fifty flags; every command (and
    sub-command) has --version."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s (facegan {__version__})")

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where it tells something: not for None or a flag's False, and
    not where the help already says what the default is (it was printed twice there)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message ('' when it has none), cut to `limit` characters:
    libraries' errors often run over many lines, a facegan error is one."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def describe_error(error: BaseException, limit: int | None = None) -> str:
    """'Type: first line' of an exception (just 'Type' when its message is empty)."""
    line = first_line(error, limit)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__

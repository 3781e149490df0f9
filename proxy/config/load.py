"""Reading a configuration file and reporting every problem in it at once.

Strategy: tomllib parses, `Config` validates, and this module is the one
boundary where both libraries' exceptions become a `ConfigError`.  Its message
has one line per problem, "<file>: <key>: <problem>", where <file> is the path
as the user gave it and <key> is a TOML-style path with arrays counted from 1
(`route[2].origin` is the `origin` of the second [[route]] table).  A syntax
error has no key, so it names the position instead:
"<file>: line 7 column 3: <tomllib message>".
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from proxy.config.model import PROBLEM, Config, toml_repr
from proxy.errors import ConfigError

#: Config fields filled in by `parse_config_text`, which the file may not set.
_NOT_FROM_FILE = ("source", "base_dir")

# tomllib (3.11) puts the position only in the message text.
_TOML_POSITION_RE = re.compile(
    r"(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)", re.S
)

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")

#: Wording for pydantic's own error types; "{...}" names come from the
#: error's ctx.  Anything else falls back to pydantic's message.
_PYDANTIC_PROBLEMS = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "tuple_type": "expected an array",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "greater_than_equal": "expected a number >= {ge}",
    "less_than_equal": "expected a number <= {le}",
    "literal_error": "expected one of {expected}",
}
#: Error types whose input is not the user's value, so it is not echoed.
_NO_INPUT = {"missing", "extra_forbidden"}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML file at `path`; raises ConfigError.

    Relative paths inside are resolved against the file's directory.
    """
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Everything before the first bad byte is valid UTF-8.
        line, column = _end_position(data[: exc.start].decode("utf-8"))
        raise ConfigError(f"{source}: line {line} column {column}: not UTF-8 (TOML files are UTF-8)") from exc
    return parse_config_text(text, source, Path(source).absolute().parent)


def default_config_path() -> Path:
    """The config shipped inside the package (it serves the demo site)."""
    return Path(__file__).with_name("default.toml")


def load_default_config() -> Config:
    """The packaged default config; its relative paths resolve against the
    package's config directory."""
    path = default_config_path()
    return parse_config_text(path.read_text(encoding="utf-8"), str(path), path.parent)


def parse_config_text(text: str, source: str, base_dir: Path) -> Config:
    """Validate TOML `text`; `source` names it in errors and becomes
    `Config.source`, `base_dir` resolves its relative paths.  Raises ConfigError
    listing every problem found."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {_describe_syntax_error(exc, text)}") from exc
    problems = [f"{source}: {key}: unknown key" for key in _NOT_FROM_FILE if key in document]
    fields = {key: value for key, value in document.items() if key not in _NOT_FROM_FILE}
    fields.update(source=source, base_dir=base_dir)
    try:
        config = Config.model_validate(fields, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += [f"{source}: {_format_key(error['loc'])}: {_describe(error)}" for error in exc.errors()]
        raise ConfigError("\n".join(problems)) from exc
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _format_key(loc: tuple[str | int, ...]) -> str:
    """A pydantic loc as a TOML key path, arrays counted from 1:
    ("route", 1, "origin") -> "route[2].origin"."""
    if loc[-1:] == ("[key]",):  # pydantic's marker for a bad table key itself
        loc = loc[:-1]
    key = ""
    for item in loc:
        if isinstance(item, int):
            key += f"[{item + 1}]"
        else:
            name = item if _BARE_KEY_RE.fullmatch(item) else json.dumps(item, ensure_ascii=False)
            key += f".{name}" if key else name
    return key


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == PROBLEM:
        return error["msg"]
    template = _PYDANTIC_PROBLEMS.get(kind)
    if template is None:
        problem = error["msg"][:1].lower() + error["msg"][1:]
    else:
        # literal_error's ctx quotes choices with '; TOML strings use ".
        problem = template.format(**{k: str(v).replace("'", '"') for k, v in error.get("ctx", {}).items()})
    if kind in _NO_INPUT:
        return problem
    return f"{problem}, got {toml_repr(error['input'])}"


def _describe_syntax_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    match = _TOML_POSITION_RE.fullmatch(str(exc))
    if match is None:
        return str(exc)
    if match["line"] is None:  # "at end of document"
        line, column = _end_position(text)
    else:
        line, column = int(match["line"]), int(match["column"])
    return f"line {line} column {column}: {match['message']}"


def _end_position(text: str) -> tuple[int, int]:
    """1-based line and column just past the end of `text`, counted in
    characters as tomllib counts them."""
    return text.count("\n") + 1, len(text) - text.rfind("\n")

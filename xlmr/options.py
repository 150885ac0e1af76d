"""Dataclass options <-> argparse and YAML, so the CLI and the Python API take the same objects."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from .errors import XlmrError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default and keeps the example epilog as written."""


def add_command(sub, name: str, help: str, example: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand parser whose --help shows defaults and one example."""
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter,
                          epilog=f"example:\n  {example}")


def _base_type(tp):
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --option per dataclass field; the field's `metadata['help']` is its help text. `cls` may be
    a function returning the class: the options are then added by `add_deferred_args`, only when the
    command is used (its module, with torch, is not imported to build the parser for another command)."""
    if not isinstance(cls, type):
        parser.set_defaults(_deferred_args=(cls, skip))
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        shown = "default: unset" if default in ("", None) else f"default: {default}"
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata.get("help", " ") +
                                  f" ({shown})")
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is Literal:
            kw.update(choices=list(get_args(tp)))
        elif get_origin(tp) in (list, tuple):
            kw.update(nargs="+", type=_base_type(get_args(tp)[0]) if get_args(tp) else str)
        elif tp in (int, float, str, Path):
            kw["type"] = tp
        else:
            kw["type"] = str
        parser.add_argument(flag, **kw)


def add_deferred_args(parser: argparse.ArgumentParser) -> None:
    """Add the options that `add_dataclass_args` deferred on this parser (if any)."""
    deferred = parser.get_default("_deferred_args")
    if deferred:
        parser.set_defaults(_deferred_args=None)
        add_dataclass_args(parser, deferred[0](), deferred[1])


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}


def check_value(f: dataclasses.Field, tp, value):
    """`value` for field `f` of type `tp`, converted where that loses nothing (int -> float, a YAML
    number -> str); raises ValueError saying what was expected. Numbers must lie within the field's
    metadata `min` (default 0: every numeric option is a count, size, rate or 0-for-off) and `max`."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        tp = _base_type(tp)
    if get_origin(tp) is Literal:
        if value not in get_args(tp):
            raise ValueError(f"expected one of {', '.join(map(str, get_args(tp)))}, got {value!r}")
        return value
    if get_origin(tp) in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        item = get_args(tp)[0] if get_args(tp) else str
        return [check_value(f, item, v) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and isinstance(value, float)):
            raise ValueError(f"expected {_KIND[tp]}, got {value!r}")
        value = tp(value)
        low, high = f.metadata.get("min", 0), f.metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value
    if tp in (str, Path):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # YAML reads `language: 123` or `out: 2024` as numbers
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"expected {_KIND[tp]}, got {value!r}")
    return value


def validate(obj) -> None:
    """Check every field of a dataclass instance (its __post_init__ calls this for Python callers)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        try:
            check_value(f, hints[f.name], getattr(obj, f.name))
        except ValueError as e:
            raise XlmrError(f"option {f.name}: {e}") from None


def build(cls, args: argparse.Namespace | None = None, yaml_path: str | None = None, **overrides):
    """Dataclass from YAML file, then command-line values, then keyword overrides. Each value is
    checked against its field's type and bounds; an error names the YAML file and key, or the flag."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}

    def put(name, value, where):
        try:
            values[name] = check_value(fields[name], hints[name], value)
        except ValueError as e:
            raise XlmrError(f"{where}: {e}") from None

    for k, v in (read_yaml(yaml_path, set(fields)) if yaml_path else {}).items():
        put(k, v, f"{yaml_path}: {k}")
    for k, v in (vars(args) if args is not None else {}).items():
        if k in fields:
            put(k, v, "--" + k.replace("_", "-"))
    for k, v in overrides.items():
        put(k, v, k) if k in fields else values.update({k: v})
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise XlmrError(f"invalid options: {e}") from None


def lang_values(specs, option: str, what: str = "PATH", bare=None) -> dict[str, str]:
    """['de=VALUE', ...] -> {'de': 'VALUE'} in the given order; a language given twice is an error.
    `bare(spec)` names the language of a spec without '=' (None: LANG= is required)."""
    out: dict[str, str] = {}
    for spec in specs or ():
        lang, sep, value = str(spec).partition("=")
        if not sep:
            if bare is None:
                raise XlmrError(f"{option} {spec!r}: expected LANG={what}")
            lang, value = bare(str(spec)), str(spec)
        if not lang or not value:
            raise XlmrError(f"{option} {spec!r}: expected LANG={what}")
        if lang in out:
            raise XlmrError(f"{option}: language {lang!r} is given twice ({out[lang]} and {value})")
        out[lang] = value
    return out


def read_yaml(path: str, names: set[str]) -> dict:
    """Read a YAML mapping and check its keys against the known option names."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise XlmrError(f"{path}: no such file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise XlmrError(f"{path}: {where}invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise XlmrError(f"{path}: expected a mapping of option: value")
    unknown = sorted(set(data) - names)
    if unknown:
        raise XlmrError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return data

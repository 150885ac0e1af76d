"""Dataclass options <-> argparse and YAML, so the CLI and the Python API take the same objects."""

from __future__ import annotations

import argparse
import dataclasses
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
    """One --option per dataclass field; the field's `metadata['help']` is its help text."""
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


def build(cls, args: argparse.Namespace | None = None, yaml_path: str | None = None, **overrides):
    """Dataclass from YAML file, then command-line values, then keyword overrides."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if yaml_path:
        values.update(read_yaml(yaml_path, names))
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if k in names})
    values.update(overrides)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise XlmrError(f"invalid options: {e}") from None


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

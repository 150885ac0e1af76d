"""The `xlmr` command line: one parser, one subcommand per workflow.

Each subcommand lives in a module with `register(subparsers)`; it sets `func` to a function taking
the parsed namespace. User errors (XlmrError) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .errors import XlmrError
from .options import HelpFormatter, add_deferred_args

# Modules that register subcommands, in --help order.
COMMAND_MODULES = [
    "xlmr.commands.checkpoints",
    "xlmr.commands.tokenizer",
    "xlmr.commands.data",
    "xlmr.commands.pretrain",
    "xlmr.commands.finetune",
    "xlmr.commands.embed",
    "xlmr.commands.adapters",
    "xlmr.commands.demo",
    "xlmr.commands.serve",
]

EXAMPLES = """examples:
  xlmr info path/to/checkpoint
  xlmr convert pytorch_model_dir/ safetensors_dir/
  xlmr tokenizer train --corpus corpus/ --vocab-size 32000 --alpha 0.3 --out tok/
  xlmr data prepare --corpus corpus/ --tokenizer tok/ --out data/
  xlmr embed --prefix 'query: ' --input texts.txt --output vectors.npy
  xlmr demo
"""


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand. Given `argv`, only the command it names gets the
    options that need its module imported (the others list their name and help)."""
    p = argparse.ArgumentParser(prog="xlmr", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                description="XLM-R-style multilingual encoders: load, pretrain, fine-tune, "
                                            "evaluate and serve.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"xlmr {__version__}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    command = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, command_parser in sub.choices.items():
        if command is None or name == command:
            add_deferred_args(command_parser)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """Warnings meet the user as one line, like errors (no source file and code line)."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"xlmr: warning{kind}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `xlmr` script; returns the exit code."""
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser(argv)
    args = p.parse_args(argv)
    if not hasattr(args, "func"):
        p.print_help()
        return 0
    try:
        result = args.func(args)
    except XlmrError as e:
        print(f"xlmr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xlmr: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())

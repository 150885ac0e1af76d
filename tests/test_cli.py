"""`xlmr --help` and every subcommand's --help: what it does, each option's default, one example."""

import argparse

from xlmr.cli import parser


def _parsers(p: argparse.ArgumentParser, path=("xlmr",)):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, path + (name,))


def test_every_help_has_a_description_defaults_and_an_example():
    seen = []
    for path, p in _parsers(parser()):
        name = " ".join(path)
        text = p.format_help()
        assert p.description and p.description.split()[0] in text, f"{name}: no description"
        assert "example" in (p.epilog or ""), f"{name}: no example in --help"
        if any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            continue  # a command group: its subcommands carry the options
        formatter = p._get_formatter()
        for a in p._actions:
            if not a.option_strings or a.help == argparse.SUPPRESS or isinstance(a, (argparse._HelpAction,
                                                                                      argparse._VersionAction)):
                continue
            assert a.help, f"{name} {a.option_strings[0]}: no help text"
            shown = formatter._get_help_string(a)  # argparse's own "%(default)s", or ours for dataclass options
            assert "%(default)" in shown or "(default: " in shown, \
                f"{name} {a.option_strings[0]}: default not shown"
            assert "(default: )" not in shown, f"{name} {a.option_strings[0]}: an empty default shown as blank"
        seen.append(name)
    assert {"xlmr finetune", "xlmr pretrain", "xlmr demo", "xlmr serve", "xlmr tokenizer train",
            "xlmr data prepare"} <= set(seen), seen

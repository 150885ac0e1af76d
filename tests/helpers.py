"""Shared test helpers: tiny HF configs and padded batches of mixed lengths."""

import torch

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_config(family: str, **kw):
    import transformers as T

    cls = {"bert": T.BertConfig, "roberta": T.RobertaConfig, "xlm-roberta": T.XLMRobertaConfig}[family]
    extra = dict(type_vocab_size=2) if family == "bert" else dict(type_vocab_size=1)
    return cls(**{**TINY, **extra, **kw})


def padded_batch(pad_id: int, vocab: int = 99, lengths=(7, 3, 12, 1), seed: int = 0):
    """(ids, mask) with right padding; token ids avoid the pad id."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        row = torch.randint(3, vocab, (n,), generator=g)
        row[row == pad_id] = pad_id + 2
        ids[i, :n], mask[i, :n] = row, 1
    return ids, mask

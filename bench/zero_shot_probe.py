"""Does a checkpoint carry cross-lingual signal? A linear probe on frozen features, no fine-tuning.

For the checkpoint and for the same architecture from random init: mean-pooled features of every
layer (0 = embeddings) for SIB-200 train and test in every language; a logistic regression fit on
English train (standardised features) and scored on each language's test set. With centring, each
language's mean feature over its own *training* texts (no labels) is subtracted first, which
removes a per-language offset that can make other languages look alike to an English classifier.

    python bench/zero_shot_probe.py --model runs/pretrain-small/final [--sib ../shared/data/sib200]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def layer_features(model, tok, texts: list[str], batch: int = 64):
    """(layers + 1, N, D) numpy array: masked mean of the embeddings and of each layer's output,
    collected by forward hooks around the encoder's own forward."""
    import torch

    enc, states, out = model.encoder_model, [], []
    hooks = [m.register_forward_hook(lambda _m, _args, h: states.append(h))
             for m in (enc.embeddings, *enc.encoder.layer)]
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch):
                ids, am, _ = tok.encode(texts[i:i + batch], max_length=128).tensors()
                states.clear()
                enc(ids, am)
                w = am[..., None].float()
                out.append(torch.stack([(h * w).sum(1) / w.sum(1) for h in states]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(out, 1).numpy()


def probe(model, tok, sib: Path, langs: list[str], source: str) -> dict:
    """{(layer, centred): (source accuracy, zero-shot average)}."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from xlmr.tasks import Classify

    data = {}
    for lang in langs:
        train, test = (Classify().read(sib / lang / f"{split}.tsv") for split in ("train", "test"))
        data[lang] = (layer_features(model, tok, [e.text for e in train]), [e.label for e in train],
                      layer_features(model, tok, [e.text for e in test]), np.array([e.label for e in test]))
    result = {}
    for layer in range(data[source][0].shape[0]):
        for centred in (False, True):
            def feats(lang, split):
                f = data[lang][split][layer]
                return f - data[lang][0][layer].mean(0) if centred else f

            x = feats(source, 0)
            mu, sd = x.mean(0), x.std(0) + 1e-6
            clf = LogisticRegression(max_iter=2000).fit((x - mu) / sd, data[source][1])
            acc = {l: float((clf.predict((feats(l, 2) - mu) / sd) == data[l][3]).mean()) for l in langs}
            zero = [a for l, a in acc.items() if l != source]
            result[(layer, centred)] = (acc[source], sum(zero) / len(zero))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer)")
    ap.add_argument("--sib", default=os.path.join(os.environ.get("XLMR_DATA", str(ROOT.parent / "shared" / "data")),
                                                  "sib200"))
    ap.add_argument("--source", default="eng_Latn")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-init copy")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    from xlmr.checkpoint import load
    from xlmr.model import Model
    from xlmr.tokenizer import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    sib = Path(args.sib)
    langs = sorted(p.name for p in sib.iterdir() if (p / "test.tsv").is_file())
    tok = Tokenizer.from_pretrained(args.model)
    pretrained = load(args.model, head="mlm").eval()
    torch.manual_seed(args.seed)
    scratch = Model(pretrained.config, "mlm").eval()
    rows = {name: probe(m, tok, sib, langs, args.source) for name, m in
            (("pretrained", pretrained), ("random init", scratch))}
    print(f"\nlinear probe, fit on {args.source} train, zero-shot average over {len(langs) - 1} test languages\n")
    print("| layer | centred | pretrained source | pretrained zero-shot | random init source | random init zero-shot |")
    print("|---:|---|---:|---:|---:|---:|")
    for key in rows["pretrained"]:
        (ps, pz), (rs, rz) = rows["pretrained"][key], rows["random init"][key]
        print(f"| {key[0]} | {'yes' if key[1] else 'no'} | {ps:.3f} | {pz:.3f} | {rs:.3f} | {rz:.3f} |")


if __name__ == "__main__":
    main()

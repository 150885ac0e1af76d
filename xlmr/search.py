"""Nearest-neighbour search over sentence embeddings, and margin-based bitext mining.

`knn(queries, keys, k)` is exact inner-product search (cosine on L2-normalised rows), done in
blocks of queries x blocks of keys so that memory stays at block x block scores whatever the
corpus size; faiss (IndexFlatIP, the same exact search) is used instead where it is installed and
asked for. Mining follows Artetxe & Schwenk (2019): the ratio margin

    margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)

scores candidate pairs from the k nearest neighbours in both directions, and a pair is kept when
each side is the other's best candidate (LASER's "intersect" mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 4096  # rows per block of the exact search: scores take BLOCK x BLOCK floats (64 MiB)


def knn(queries: np.ndarray, keys: np.ndarray, k: int, block: int = BLOCK,
        use_faiss: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The k best keys of every query by inner product: (scores (Q, k) descending, indices (Q, k))."""
    k = min(k, len(keys))
    q, x = np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(keys, np.float32)
    if use_faiss:
        import faiss

        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        return index.search(q, k)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for qs in range(0, len(q), block):
        s_q, i_q = best_s[qs:qs + block], best_i[qs:qs + block]
        for ks in range(0, len(x), block):
            scores = q[qs:qs + block] @ x[ks:ks + block].T  # (bq, bk)
            kk = min(k, scores.shape[1])
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # (bq, kk), unordered
            cand_s = np.concatenate([s_q, np.take_along_axis(scores, top, 1)], 1)
            cand_i = np.concatenate([i_q, top + ks], 1)
            keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
            s_q[:], i_q[:] = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    return best_s, best_i


def faiss_available() -> bool:
    """Whether `import faiss` works."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Mined:
    """Mined pairs: pairs[j] = (source index, target index), with their scores."""

    pairs: list[tuple[int, int]]
    scores: list[float]


def nearest(src: np.ndarray, tgt: np.ndarray, use_faiss: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Best target of every source and best source of every target, by cosine: (S,), (T,)."""
    return knn(src, tgt, 1, use_faiss=use_faiss)[1][:, 0], knn(tgt, src, 1, use_faiss=use_faiss)[1][:, 0]


def margin_scores(src: np.ndarray, tgt: np.ndarray, k: int = 4, use_faiss: bool = False):
    """Ratio-margin scores of each side's k nearest candidates: (fwd_scores (S, k), fwd_idx, bwd_scores
    (T, k), bwd_idx), where fwd_idx are target indices and bwd_idx source indices."""
    s2t_s, s2t_i = knn(src, tgt, k, use_faiss=use_faiss)
    t2s_s, t2s_i = knn(tgt, src, k, use_faiss=use_faiss)
    src_mean, tgt_mean = s2t_s.mean(1), t2s_s.mean(1)  # (S,), (T,): each row's k-NN neighbourhood
    fwd = s2t_s / ((src_mean[:, None] + tgt_mean[s2t_i]) / 2)
    bwd = t2s_s / ((tgt_mean[:, None] + src_mean[t2s_i]) / 2)
    return fwd, s2t_i, bwd, t2s_i


def mine(src: np.ndarray, tgt: np.ndarray, k: int = 4, margin: bool = True, use_faiss: bool = False) -> Mined:
    """Pairs (i, j) where j is source i's best target and i is target j's best source, by ratio margin
    (or, with margin=False, plain cosine nearest neighbours)."""
    if margin:
        fwd, fwd_i, bwd, bwd_i = margin_scores(src, tgt, k, use_faiss)
    else:
        fwd, fwd_i = knn(src, tgt, 1, use_faiss=use_faiss)
        bwd, bwd_i = knn(tgt, src, 1, use_faiss=use_faiss)
    best_t = fwd_i[np.arange(len(src)), fwd.argmax(1)]  # (S,)
    best_s = bwd_i[np.arange(len(tgt)), bwd.argmax(1)]  # (T,)
    pairs = [(i, int(j)) for i, j in enumerate(best_t) if best_s[j] == i]
    return Mined(pairs, [float(fwd[i].max()) for i, _ in pairs])


def prf(mined: list[tuple[int, int]], gold: set[tuple[int, int]]) -> dict[str, float]:
    """Precision, recall and F1 of mined pairs against gold pairs."""
    correct = sum(1 for p in mined if p in gold)
    p = correct / len(mined) if mined else 0.0
    r = correct / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

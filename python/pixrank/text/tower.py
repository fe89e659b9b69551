"""The text tower and its building block, a fast differentiable embedding bag.

:class:`TextTower`: token ids -> embedding bag -> Dense(relu) -> Dense (projection head) ->
L2 normalisation.

:func:`embedding_bag` computes, for ragged bags of token ids, the mean of their embedding
rows — the "bag of words and subwords" of fastText (Bojanowski et al., TACL 2017; Joulin et
al., "Bag of Tricks for Efficient Text Classification", EACL 2017) — with the same contract as
:func:`pixrank.autograd.embedding_bag` (mean mode, non-empty bags) but sort-and-segment-sum
forward and backward passes (``np.add.reduceat``) instead of ``np.add.at``, which is several
times slower on the tens of thousands of ids of a training batch.
"""
from __future__ import annotations

import numpy as np

from pixrank import autograd as ag
from pixrank.nn import layers as L
from pixrank.nn.models import Model

__all__ = ["embedding_bag", "TextTower"]


def embedding_bag(ids, offsets, table) -> "ag.Tensor":
    """Mean of the embedding rows of each bag.

    Args:
        ids: int ``(T,)`` token ids in ``[0, V)``.
        offsets: int ``(B + 1,)`` CSR boundaries: bag ``i`` is ``ids[offsets[i]:offsets[i+1]]``;
            ``offsets[0] == 0``, ``offsets[-1] == T``, every bag non-empty.
        table: ``(V, D)`` Tensor / Parameter.

    Returns:
        ``(B, D)`` Tensor: row ``i`` = mean of ``table[ids[offsets[i]:offsets[i+1]]]``.
        Backward: each id's row receives ``g[i] / len(bag i)`` (summed over repeats).

    Raises:
        ValueError: ids not integer / out of range; offsets not CSR over ``ids`` or an empty bag.
    """
    table = ag.as_tensor(table)
    if table.data.ndim != 2:
        raise ValueError(f"embedding_bag: table must be 2-D (V, D), got shape {table.data.shape}")
    ids = np.asarray(ids)
    off = np.asarray(offsets)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"embedding_bag: ids must be a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) < 1:
        raise ValueError(f"embedding_bag: offsets must be a 1-D integer array (B + 1,), got shape {off.shape}")
    V, D = table.data.shape
    T = len(ids)
    if T and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"embedding_bag: ids must be in [0, {V}), got range [{ids.min()}, {ids.max()}]")
    lengths = np.diff(off)
    if off[0] != 0 or off[-1] != T or (lengths <= 0).any():
        raise ValueError(f"embedding_bag: offsets must start at 0, end at len(ids) = {T} and give non-empty "
                         f"bags, got {off.tolist() if len(off) <= 10 else off}")
    B = len(lengths)
    if B == 0:
        return ag.Tensor(np.zeros((0, D), np.float32))
    starts = off[:-1]
    scale = (1.0 / lengths).astype(np.float32)[:, None]
    y = np.add.reduceat(table.data[ids], starts, axis=0) * scale
    if not (ag.is_grad_enabled() and table.requires_grad):
        return ag.Tensor(y)
    seg = np.repeat(np.arange(B), lengths)
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    uniq = sid[first]

    def backward(g):
        gr = (g * scale)[seg[order]]
        gt = np.zeros((V, D), dtype=np.float32)
        gt[uniq] = np.add.reduceat(gr, first, axis=0)
        return (gt,)

    # pixrank.autograd's recording hook (the same one its own functions use)
    return ag._make(y.astype(np.float32, copy=False), backward, (table,))


class TextTower(Model):
    """Embedding-bag text tower: token ids (CSR) -> L2-normalised ``(B, embed_dim)``.

    Args:
        num_ids: rows of the embedding table (``Tokenizer.num_ids``: words + buckets).
        token_dim: width of the token embeddings (default 128).
        hidden: width of the dense layer (default 256).
        embed_dim: output dimension ``d`` (default 64).

    Call with ``(ids, offsets)``: int64 ``(T,)`` and int64 ``(B + 1,)`` as returned by
    :meth:`pixrank.text.Tokenizer.encode_batch` (text ``i`` = ``ids[offsets[i]:offsets[i+1]]``).
    """

    def __init__(self, num_ids: int, token_dim: int = 128, hidden: int = 256, embed_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_ids, self.token_dim = int(num_ids), int(token_dim)
        self.hidden, self.embed_dim = int(hidden), int(embed_dim)
        self.bag = L.EmbeddingBag(self.num_ids, self.token_dim, mode="mean")
        # built here (input sizes known), so loading a saved tower needs no dry run
        self.dense = L.Dense(self.hidden, activation="relu", input_dim=self.token_dim)
        self.proj = L.Dense(self.embed_dim, input_dim=self.hidden)
        self.built = True

    def call(self, inputs, training=None):
        ids, offsets = inputs
        ids = np.asarray(ids, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        h = embedding_bag(ids, offsets, self.bag.embeddings)
        return ag.l2_normalize(self.proj(self.dense(h)))

    def get_config(self):
        return {"num_ids": self.num_ids, "token_dim": self.token_dim, "hidden": self.hidden,
                "embed_dim": self.embed_dim, "name": self.name}

"""pixrank's paired benchmark suite against numpy, PyTorch, hnswlib and FAISS.

Run ``python -m bench`` from the repository root (``--quick`` for small sizes and one
repeat, ``--only GROUP[,GROUP]``, ``--threads 1,2``); results go to
``bench/results/BENCHMARKS.md`` and PNG plots beside it. See :mod:`bench.run`.
"""
GROUPS = ("gemm", "layers", "training", "ranking", "hnsw")

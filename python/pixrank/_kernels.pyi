"""Type stub for pixrank._kernels, the compiled kernels (private: use pixrank.ops).

Every function takes C-contiguous numpy arrays of exactly the stated dtype (float32, or int64 for
labels/argmax), re-checks ranks and shapes, raises ValueError with the function name and the shapes
involved, releases the GIL while computing and returns new arrays. Letters: M rows, K inner,
N columns; B batch; H W C image (NHWC); F filters; OH OW output size; Q queries, n database rows.
"""
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

__version__: str

def matmul(
    a: F32, b: F32, bias: F32 | None = None, relu: bool = False, trans_a: bool = False, trans_b: bool = False
) -> F32:
    """relu?(op(a) @ op(b) + bias): a (M, K) or (K, M) stored when trans_a; b (K, N) or (N, K) when
    trans_b; bias (N,) or None. Returns (M, N). Bias and ReLU are fused into the GEMM epilogue."""

def matmul_naive(
    a: F32, b: F32, bias: F32 | None = None, relu: bool = False, trans_a: bool = False, trans_b: bool = False
) -> F32:
    """The plain triple-loop reference of matmul (double accumulation); slow, for tests."""

def linear_backward(x: F32, w: F32, dy: F32, y: F32 | None = None, relu: bool = False, need_dx: bool = True,
                    need_dw: bool = True) -> tuple[F32 | None, F32 | None, F32]:
    """Gradients of y = relu?(x @ w + b): x (M, K), w (K, N), dy (M, N), y (M, N) (needed when relu).
    Returns (dx (M, K), dw (K, N), db (N,))."""

def softmax(logits: F32) -> F32:
    """Row-wise softmax of (N, C)."""

def log_softmax(logits: F32) -> F32:
    """Row-wise log-softmax of (N, C)."""

def softmax_cross_entropy(logits: F32, labels: I64) -> tuple[float, F32]:
    """(mean loss, dlogits = (softmax - onehot) / N) for logits (N, C), labels int64 (N,) in [0, C)."""

def exp_f32(x: F32) -> F32:
    """exp of float32 (n,) by the vectorised expf of the SIMD path in use (the softmax family's
    exponential: Cody-Waite reduction + Cephes' degree-5 minimax polynomial, gradual underflow); for tests."""

def im2col(x: F32, kh: int, kw: int, sh: int, sw: int, pt: int, pb: int, pl: int, pr: int) -> F32:
    """x (B, H, W, C) -> (B*OH*OW, kh*kw*C), column order (i, j, c); OH = (H+pt+pb-kh)//sh + 1."""

def col2im(
    cols: F32, B: int, H: int, W: int, C: int, kh: int, kw: int, sh: int, sw: int, pt: int, pb: int, pl: int, pr: int
) -> F32:
    """Adjoint of im2col: cols (B*OH*OW, kh*kw*C) -> (B, H, W, C), overlapping taps summed."""

def conv2d(
    x: F32, w: F32, bias: F32 | None, sh: int, sw: int, pt: int, pb: int, pl: int, pr: int, relu: bool = False
) -> F32:
    """relu?(conv(x (B, H, W, C), w (kh, kw, C, F)) + bias (F,)) -> (B, OH, OW, F), via im2col + SGEMM."""

def conv2d_backward(
    x: F32,
    w: F32,
    dy: F32,
    sh: int,
    sw: int,
    pt: int,
    pb: int,
    pl: int,
    pr: int,
    y: F32 | None = None,
    relu: bool = False,
) -> tuple[F32, F32, F32]:
    """(dx (B, H, W, C), dw (kh, kw, C, F), db (F,)) for dy (B, OH, OW, F); y needed when relu."""

def max_pool2d(x: F32, ph: int, pw: int, sh: int, sw: int) -> tuple[F32, I64]:
    """'valid' max pooling of x (B, H, W, C) -> (y (B, OH, OW, C), argmax int64 flat indices into x)."""

def max_pool2d_backward(dy: F32, argmax: I64, B: int, H: int, W: int, C: int) -> F32:
    """dx (B, H, W, C) = scatter-add of dy (B, OH, OW, C) at argmax (each inside its own image)."""

def cosine_topk(queries: F32, database: F32, k: int) -> tuple[I64, F32]:
    """Exact cosine top-k: queries (Q, d), database (n, d) -> (indices (Q, min(k, n)), scores), scores
    descending, ties by lower index, zero vectors score 0; non-finite inputs raise ValueError."""

class CosineDatabase:
    """Rows L2-normalised and packed once for cosine_topk (see pixrank.ops.CosineDatabase); thread-safe."""

    def __init__(self, d: int) -> None: ...
    @property
    def dim(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def layout(self) -> str:
        """e.g. 'avx2 nr=16 kc=256 nb=256' (the SIMD variant and blocking the rows are packed for)."""
    def __len__(self) -> int: ...
    def reserve(self, rows: int) -> None: ...
    def append(self, vectors: F32) -> None:
        """vectors (m, d) appended; ValueError naming a non-finite row (nothing added)."""
    def set_rows(self, positions: I64, vectors: F32) -> None:
        """rows at positions (m,) replaced by vectors (m, d); ValueError on a position out of range."""
    def truncate(self, n: int) -> None: ...
    def row(self, i: int) -> F32:
        """Row i as stored (normalised), (d,)."""
    def topk(self, queries: F32, k: int) -> tuple[I64, F32]:
        """cosine_topk(queries (Q, d), rows, k), identical results."""

def adam_update(
    param: F32,
    grad: F32,
    m: F32,
    v: F32,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    t: int,
) -> None:
    """One Adam(W) step in place on param, m, v (same shape, float32), Keras' formula (eps added to
    sqrt(v); alpha = lr*sqrt(1-beta2^t)/(1-beta1^t)); decoupled weight decay first (param *= 1 - lr*wd);
    t >= 1. Bit-identical to the float32 numpy computation on every SIMD path (see ops.adam_update)."""

def set_num_threads(n: int) -> None:
    """Threads used by every kernel (1 <= n <= 1024; default: the CPUs this process may use)."""

def get_num_threads() -> int: ...
def set_simd(name: str) -> None:
    """Force a SIMD variant ("generic", "avx2", "avx512") among available_simd(); ValueError otherwise."""

def available_simd() -> list[str]:
    """SIMD variants compiled in and supported by this CPU, best last."""

def info() -> dict[str, Any]:
    """version, simd, simd_available, threads, threading ("openmp"/"serial"), compiler, gemm_tile,
    gemm_blocks, sanitize, avx512_emulated (True only in the SIMDe test build); simd_env_rejected when PIXRANK_SIMD named an unavailable variant;
    serial_after_fork in a process forked after its parent used threads (kernels then run serially)."""

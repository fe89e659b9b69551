"""Bad input to pixrank.ops: the exception type AND its message (function, argument,
expected and received), raised in Python before any kernel runs."""
from __future__ import annotations

import re

import numpy as np
import pytest

import pixrank
from pixrank import ops

F = np.float32
z = np.zeros
o = np.ones
x8 = z((1, 8, 8, 3), F)
w33 = z((3, 3, 3, 4), F)
pool_x = z((2, 4, 4, 1), F)
pool_y, pool_arg = None, None  # filled lazily (needs the kernels)


def _pool_out():
    return ops.max_pool2d(np.arange(32, dtype=F).reshape(pool_x.shape))


def esc(s: str) -> str:
    return re.escape(s)


# (id, thunk, exception type, regex the message must match)
CASES = [
    # ---- matmul ----
    ("matmul-a-1d", lambda: ops.matmul(o(3), o((3, 2))), ValueError,
     esc("matmul: a must be 2-D (M, K), got shape (3,)")),
    ("matmul-a-0d", lambda: ops.matmul(np.float32(2), o((3, 2))), ValueError,
     esc("matmul: a must be 2-D (M, K), got shape ()")),
    ("matmul-b-3d", lambda: ops.matmul(o((2, 3)), o((2, 3, 4))), ValueError,
     esc("matmul: b must be 2-D (K, N), got shape (2, 3, 4)")),
    ("matmul-a-1d-trans", lambda: ops.matmul(o(3), o((3, 2)), trans_a=True), ValueError,
     esc("matmul: a must be 2-D (K, M) with trans_a=True, got shape (3,)")),
    ("matmul-b-1d-trans", lambda: ops.matmul(o((2, 3)), o(3), trans_b=True), ValueError,
     esc("matmul: b must be 2-D (N, K) with trans_b=True, got shape (3,)")),
    ("matmul-inner", lambda: ops.matmul(o((2, 3)), o((4, 5))), ValueError,
     esc("matmul: inner dimensions differ: op(a) has shape (2, 3) and op(b) has shape (4, 5)")),
    ("matmul-inner-trans", lambda: ops.matmul(o((2, 3)), o((4, 5)), trans_a=True, trans_b=True), ValueError,
     esc("matmul: inner dimensions differ: op(a) has shape (3, 2) and op(b) has shape (5, 4) "
         "(a shape (2, 3), trans_a=True; b shape (4, 5), trans_b=True)")),
    ("matmul-bias-len", lambda: ops.matmul(o((2, 3)), o((3, 5)), bias=o(4)), ValueError,
     esc("matmul: bias must have shape (N,) = (5,), got shape (4,)")),
    ("matmul-bias-2d", lambda: ops.matmul(o((2, 3)), o((3, 5)), bias=o((1, 5))), ValueError,
     esc("matmul: bias must have shape (N,) = (5,), got shape (1, 5)")),
    ("matmul-complex", lambda: ops.matmul(o((2, 3), complex), o((3, 5))), TypeError,
     esc("matmul: a must have a real numeric dtype (float, int or bool), got dtype complex128")),
    ("matmul-object", lambda: ops.matmul(o((2, 3)), np.array([[1, None, 2]] * 3, dtype=object)), TypeError,
     esc("matmul: b must have a real numeric dtype (float, int or bool), got dtype object")),
    ("matmul-str", lambda: ops.matmul([["a", "b"]], o((2, 2))), TypeError,
     esc("matmul: a must have a real numeric dtype (float, int or bool), got dtype <U1")),
    ("matmul-datetime", lambda: ops.matmul(z((2, 2), "datetime64[s]"), o((2, 2))), TypeError,
     esc("matmul: a must have a real numeric dtype (float, int or bool), got dtype datetime64[s]")),
    ("matmul-bias-complex", lambda: ops.matmul(o((2, 3)), o((3, 2)), bias=o(2, complex)), TypeError,
     esc("matmul: bias must have a real numeric dtype (float, int or bool), got dtype complex128")),
    ("matmul-none", lambda: ops.matmul(None, o((3, 2))), TypeError,
     esc("matmul: a must be a numeric array, got None")),
    ("matmul-ragged", lambda: ops.matmul([[1, 2], [3]], o((2, 2))), ValueError,
     esc("matmul: a could not be read as an array")),
    ("matmul-relu-str", lambda: ops.matmul(o((2, 3)), o((3, 2)), relu="yes"), TypeError,
     esc("matmul: relu must be a bool, got str 'yes'")),
    ("matmul-trans-int", lambda: ops.matmul(o((2, 3)), o((3, 2)), trans_a=1), TypeError,
     esc("matmul: trans_a must be a bool, got int 1")),
    # ---- linear_backward ----
    ("linbwd-x-1d", lambda: ops.linear_backward(o(3), o((3, 2)), o((1, 2))), ValueError,
     esc("linear_backward: x must be 2-D (M, K), got shape (3,)")),
    ("linbwd-w-k", lambda: ops.linear_backward(o((4, 3)), o((5, 2)), o((4, 2))), ValueError,
     esc("linear_backward: w must have shape (K, N) with K = 3 to match x of shape (4, 3), got shape (5, 2)")),
    ("linbwd-dy", lambda: ops.linear_backward(o((4, 3)), o((3, 2)), o((4, 3))), ValueError,
     esc("linear_backward: dy must have shape (M, N) = (4, 2) (x (4, 3), w (3, 2)), got shape (4, 3)")),
    ("linbwd-dy-3d", lambda: ops.linear_backward(o((4, 3)), o((3, 2)), o((4, 2, 1))), ValueError,
     esc("linear_backward: dy must be 2-D (M, N), got shape (4, 2, 1)")),
    ("linbwd-relu-no-y", lambda: ops.linear_backward(o((4, 3)), o((3, 2)), o((4, 2)), relu=True), ValueError,
     esc("linear_backward: y (the layer's output, shape (4, 2)) is required when relu=True")),
    ("linbwd-y-shape", lambda: ops.linear_backward(o((4, 3)), o((3, 2)), o((4, 2)), y=o((2, 4)), relu=True), ValueError,
     esc("linear_backward: y must have shape (M, N) = (4, 2), got shape (2, 4)")),
    ("linbwd-complex", lambda: ops.linear_backward(o((4, 3)), o((3, 2)), o((4, 2), complex)), TypeError,
     esc("linear_backward: dy must have a real numeric dtype (float, int or bool), got dtype complex128")),
    # ---- softmax family ----
    ("softmax-1d", lambda: ops.softmax(o(5)), ValueError,
     esc("softmax: logits must be 2-D (N, C), got shape (5,) (for a single row use logits[None, :])")),
    ("log_softmax-3d", lambda: ops.log_softmax(o((2, 3, 4))), ValueError,
     esc("log_softmax: logits must be 2-D (N, C), got shape (2, 3, 4)")),
    ("softmax-c0", lambda: ops.softmax(o((3, 0))), ValueError,
     esc("softmax: logits must have at least one class (C >= 1), got shape (3, 0)")),
    ("softmax-complex", lambda: ops.softmax(o((3, 2), np.complex64)), TypeError,
     esc("softmax: logits must have a real numeric dtype (float, int or bool), got dtype complex64")),
    ("ce-label-high", lambda: ops.softmax_cross_entropy(o((4, 3)), [0, 3, 1, 2]), ValueError,
     esc("softmax_cross_entropy: labels must lie in [0, C) = [0, 3), got 3 at index 1")),
    ("ce-label-negative", lambda: ops.softmax_cross_entropy(o((4, 3)), [0, 1, -1, 2]), ValueError,
     esc("softmax_cross_entropy: labels must lie in [0, C) = [0, 3), got -1 at index 2")),
    ("ce-label-uint64-huge", lambda: ops.softmax_cross_entropy(o((1, 3)), np.array([2**64 - 1], np.uint64)), ValueError,
     esc("softmax_cross_entropy: labels must lie in [0, C) = [0, 3), got 18446744073709551615 at index 0")),
    ("ce-label-fraction", lambda: ops.softmax_cross_entropy(o((4, 3)), [0.0, 1.0, 1.5, 2.0]), ValueError,
     esc("softmax_cross_entropy: labels must be integer class ids, got 1.5 at index 2")),
    ("ce-label-nan", lambda: ops.softmax_cross_entropy(o((2, 3)), [np.nan, 1.0]), ValueError,
     esc("softmax_cross_entropy: labels must be integer class ids, got nan at index 0")),
    ("ce-label-inf", lambda: ops.softmax_cross_entropy(o((2, 3)), [1.0, np.inf]), ValueError,
     esc("softmax_cross_entropy: labels must be integer class ids, got inf at index 1")),
    ("ce-label-float-out-of-range", lambda: ops.softmax_cross_entropy(o((2, 3)), [1.0, 1e30]), ValueError,
     esc("softmax_cross_entropy: labels must lie in [0, C) = [0, 3), got 1e+30 at index 1")),
    ("ce-label-bool", lambda: ops.softmax_cross_entropy(o((2, 3)), [True, False]), TypeError,
     esc("softmax_cross_entropy: labels must be integer class ids, got dtype bool")),
    ("ce-label-str", lambda: ops.softmax_cross_entropy(o((2, 3)), ["a", "b"]), TypeError,
     esc("softmax_cross_entropy: labels must be integer class ids, got dtype <U1")),
    ("ce-label-complex", lambda: ops.softmax_cross_entropy(o((2, 3)), np.array([1, 2], complex)), TypeError,
     esc("softmax_cross_entropy: labels must be integer class ids, got dtype complex128")),
    ("ce-label-none", lambda: ops.softmax_cross_entropy(o((2, 3)), None), TypeError,
     esc("softmax_cross_entropy: labels must be an array of integer class ids, got None")),
    ("ce-label-onehot", lambda: ops.softmax_cross_entropy(o((2, 3)), np.eye(3)[:2]), ValueError,
     esc("softmax_cross_entropy: labels must be 1-D (N,) = (2,) integer class ids, got shape (2, 3) "
         "(for one-hot labels pass labels.argmax(axis=1))")),
    ("ce-label-count", lambda: ops.softmax_cross_entropy(o((4, 3)), [0, 1, 2]), ValueError,
     esc("softmax_cross_entropy: labels must have shape (N,) = (4,) to match logits of shape (4, 3), got shape (3,)")),
    ("ce-logits-1d", lambda: ops.softmax_cross_entropy(o(3), [0]), ValueError,
     esc("softmax_cross_entropy: logits must be 2-D (N, C), got shape (3,)")),
    ("ce-c0", lambda: ops.softmax_cross_entropy(o((2, 0)), [0, 0]), ValueError,
     esc("softmax_cross_entropy: logits must have at least one class (C >= 1), got shape (2, 0)")),
    # ---- im2col ----
    ("im2col-x-3d", lambda: ops.im2col(o((28, 28, 1)), 3, 3), ValueError,
     esc("im2col: x must be 4-D (N, H, W, C), got shape (28, 28, 1)")),
    ("im2col-h0", lambda: ops.im2col(o((1, 0, 4, 1)), 1, 1), ValueError,
     esc("im2col: x must have H, W, C >= 1 in its shape (N, H, W, C), got shape (1, 0, 4, 1)")),
    ("im2col-c0", lambda: ops.im2col(o((1, 4, 4, 0)), 1, 1), ValueError,
     esc("im2col: x must have H, W, C >= 1 in its shape (N, H, W, C), got shape (1, 4, 4, 0)")),
    ("im2col-kh0", lambda: ops.im2col(x8, 0, 3), ValueError, esc("im2col: kh must be >= 1, got 0")),
    ("im2col-kw-neg", lambda: ops.im2col(x8, 3, -2), ValueError, esc("im2col: kw must be >= 1, got -2")),
    ("im2col-kh-float", lambda: ops.im2col(x8, 2.0, 3), TypeError, esc("im2col: kh must be an int, got float 2.0")),
    ("im2col-kh-bool", lambda: ops.im2col(x8, True, 3), TypeError, esc("im2col: kh must be an int, got bool True")),
    ("im2col-stride0", lambda: ops.im2col(x8, 3, 3, stride=0), ValueError, esc("im2col: stride must be >= 1, got 0")),
    ("im2col-stride-pair", lambda: ops.im2col(x8, 3, 3, stride=(1, 0)), ValueError,
     esc("im2col: stride[1] must be >= 1, got 0")),
    ("im2col-stride-triple", lambda: ops.im2col(x8, 3, 3, stride=(1, 1, 1)), ValueError,
     esc("im2col: stride must be an int or an (h, w) pair, got (1, 1, 1)")),
    ("im2col-stride-str", lambda: ops.im2col(x8, 3, 3, stride="2"), TypeError,
     esc("im2col: stride must be an int or an (h, w) pair of ints, got str '2'")),
    ("im2col-stride-float", lambda: ops.im2col(x8, 3, 3, stride=(1, 1.5)), TypeError,
     esc("im2col: stride[1] must be an int, got float 1.5")),
    ("im2col-pad-neg", lambda: ops.im2col(x8, 3, 3, padding=-1), ValueError,
     esc("im2col: padding must be >= 0, got -1")),
    ("im2col-pad-word", lambda: ops.im2col(x8, 3, 3, padding="full"), ValueError,
     esc("im2col: padding must be an int, an (h, w) pair, 'same' or 'valid', got 'full'")),
    ("im2col-pad-float", lambda: ops.im2col(x8, 3, 3, padding=1.5), TypeError,
     esc("im2col: padding must be an int, an (h, w) pair, 'same' or 'valid', got float 1.5")),
    ("im2col-pad-none", lambda: ops.im2col(x8, 3, 3, padding=None), TypeError,
     esc("im2col: padding must be an int, an (h, w) pair, 'same' or 'valid', got NoneType None")),
    ("im2col-kernel-too-big", lambda: ops.im2col(o((1, 3, 3, 1)), 5, 5), ValueError,
     esc("im2col: the kernel (5, 5) is larger than the input (H, W) = (3, 3)")),
    ("im2col-kernel-too-big-padded", lambda: ops.im2col(o((1, 3, 3, 1)), 6, 2, padding=1), ValueError,
     esc("im2col: the kernel (6, 2) is larger than the padded input (H + 1 + 1, W + 1 + 1) = (5, 5)")),
    ("im2col-complex", lambda: ops.im2col(o((1, 3, 3, 1), complex), 2, 2), TypeError,
     esc("im2col: x must have a real numeric dtype (float, int or bool), got dtype complex128")),
    ("im2col-huge-padding", lambda: ops.im2col(o((1, 3, 3, 1)), 1, 1, padding=2**30), ValueError,
     r"im2col: the patch matrix would have shape \(\d+, 1\) \(\d+ elements\), more than the \d+ this library accepts"),
    # ---- col2im ----
    ("col2im-shape-int", lambda: ops.col2im(o((4, 4)), 9, 2, 2), TypeError,
     esc("col2im: x_shape must be a tuple of 4 ints (N, H, W, C), got int 9")),
    ("col2im-shape-len", lambda: ops.col2im(o((4, 4)), (3, 3, 1), 2, 2), ValueError,
     esc("col2im: x_shape must be a tuple of 4 ints (N, H, W, C), got (3, 3, 1)")),
    ("col2im-shape-neg", lambda: ops.col2im(o((4, 4)), (-1, 3, 3, 1), 2, 2), ValueError,
     esc("col2im: x_shape[0] (N) must be >= 0, got -1")),
    ("col2im-shape-h0", lambda: ops.col2im(o((4, 4)), (1, 0, 3, 1), 2, 2), ValueError,
     esc("col2im: x_shape[1] (H) must be >= 1, got 0")),
    ("col2im-shape-float", lambda: ops.col2im(o((4, 4)), (1, 3.0, 3, 1), 2, 2), TypeError,
     esc("col2im: x_shape[1] (H) must be an int, got float 3.0")),
    ("col2im-cols-shape", lambda: ops.col2im(o((8, 9)), (2, 3, 3, 2), 2, 2), ValueError,
     esc("col2im: cols must have shape (N * OH * OW, kh * kw * C) = (8, 8) for x_shape (2, 3, 3, 2), "
         "kernel (2, 2), stride (1, 1), pads (top, bottom, left, right) (0, 0, 0, 0); got shape (8, 9)")),
    ("col2im-cols-1d", lambda: ops.col2im(o(64), (2, 3, 3, 2), 2, 2), ValueError,
     esc("col2im: cols must have shape (N * OH * OW, kh * kw * C) = (8, 8)")),
    ("col2im-complex", lambda: ops.col2im(o((8, 8), complex), (2, 3, 3, 2), 2, 2), TypeError,
     esc("col2im: cols must have a real numeric dtype (float, int or bool), got dtype complex128")),
    # ---- conv2d ----
    ("conv2d-x-2d", lambda: ops.conv2d(o((28, 28)), w33), ValueError,
     esc("conv2d: x must be 4-D (N, H, W, C), got shape (28, 28)")),
    ("conv2d-w-3d", lambda: ops.conv2d(x8, o((3, 3, 3))), ValueError,
     esc("conv2d: w must be 4-D (kh, kw, C, F) (HWIO), got shape (3, 3, 3)")),
    ("conv2d-channels", lambda: ops.conv2d(x8, o((3, 3, 1, 4))), ValueError,
     esc("conv2d: w must have shape (kh, kw, C, F) with C = 3 to match x of shape (1, 8, 8, 3), got shape (3, 3, 1, 4)")),
    ("conv2d-f0", lambda: ops.conv2d(x8, o((3, 3, 3, 0))), ValueError,
     esc("conv2d: w must have kh, kw, F >= 1 in its shape (kh, kw, C, F), got shape (3, 3, 3, 0)")),
    ("conv2d-bias", lambda: ops.conv2d(x8, w33, bias=o(3)), ValueError,
     esc("conv2d: bias must have shape (F,) = (4,), got shape (3,)")),
    ("conv2d-kernel-too-big", lambda: ops.conv2d(x8, o((9, 3, 3, 4)), padding="valid"), ValueError,
     esc("conv2d: the kernel (9, 3) is larger than the input (H, W) = (8, 8)")),
    ("conv2d-stride0", lambda: ops.conv2d(x8, w33, stride=(0, 1)), ValueError,
     esc("conv2d: stride[0] must be >= 1, got 0")),
    ("conv2d-relu-none", lambda: ops.conv2d(x8, w33, relu=None), TypeError,
     esc("conv2d: relu must be a bool, got NoneType None")),
    ("conv2d-w-object", lambda: ops.conv2d(x8, w33.astype(object)), TypeError,
     esc("conv2d: w must have a real numeric dtype (float, int or bool), got dtype object")),
    # ---- conv2d_backward ----
    ("convbwd-dy", lambda: ops.conv2d_backward(x8, w33, o((1, 8, 8, 4)), stride=2, padding="same"), ValueError,
     esc("conv2d_backward: dy must have the output shape (N, OH, OW, F) = (1, 4, 4, 4) for x (1, 8, 8, 3), "
         "w (3, 3, 3, 4), stride (2, 2), pads (top, bottom, left, right) (0, 1, 0, 1); got shape (1, 8, 8, 4)")),
    ("convbwd-x-3d", lambda: ops.conv2d_backward(o((8, 8, 3)), w33, o((1, 6, 6, 4))), ValueError,
     esc("conv2d_backward: x must be 4-D (N, H, W, C), got shape (8, 8, 3)")),
    ("convbwd-relu-no-y", lambda: ops.conv2d_backward(x8, w33, o((1, 6, 6, 4)), relu=True), ValueError,
     esc("conv2d_backward: y (the forward output, shape (1, 6, 6, 4)) is required when relu=True")),
    ("convbwd-y-shape", lambda: ops.conv2d_backward(x8, w33, o((1, 6, 6, 4)), y=o((1, 6, 6, 3)), relu=True), ValueError,
     esc("conv2d_backward: y must have the output shape (N, OH, OW, F) = (1, 6, 6, 4), got shape (1, 6, 6, 3)")),
    ("convbwd-dy-complex", lambda: ops.conv2d_backward(x8, w33, o((1, 6, 6, 4), complex)), TypeError,
     esc("conv2d_backward: dy must have a real numeric dtype (float, int or bool), got dtype complex128")),
    # ---- max_pool2d ----
    ("pool-x-3d", lambda: ops.max_pool2d(o((4, 4, 1))), ValueError,
     esc("max_pool2d: x must be 4-D (N, H, W, C), got shape (4, 4, 1)")),
    ("pool-0", lambda: ops.max_pool2d(pool_x, pool=0), ValueError, esc("max_pool2d: pool must be >= 1, got 0")),
    ("pool-too-big", lambda: ops.max_pool2d(pool_x, pool=5), ValueError,
     esc("max_pool2d: the pooling window (5, 5) is larger than the input (H, W) = (4, 4)")),
    ("pool-stride0", lambda: ops.max_pool2d(pool_x, pool=2, stride=0), ValueError,
     esc("max_pool2d: stride must be >= 1, got 0")),
    ("pool-float", lambda: ops.max_pool2d(pool_x, pool=2.5), TypeError,
     esc("max_pool2d: pool must be an int or an (h, w) pair of ints, got float 2.5")),
    ("pool-complex", lambda: ops.max_pool2d(pool_x.astype(complex)), TypeError,
     esc("max_pool2d: x must have a real numeric dtype (float, int or bool), got dtype complex128")),
    # ---- max_pool2d_backward ----
    ("poolbwd-argmax-float", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), z((2, 2, 2, 1)), (2, 4, 4, 1)), TypeError,
     esc("max_pool2d_backward: argmax must be an integer array, got dtype float64")),
    ("poolbwd-argmax-bool", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), z((2, 2, 2, 1), bool), (2, 4, 4, 1)), TypeError,
     esc("max_pool2d_backward: argmax must be an integer array, got dtype bool")),
    ("poolbwd-argmax-shape", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), z((2, 2, 1, 1), int), (2, 4, 4, 1)), ValueError,
     esc("max_pool2d_backward: argmax must have the shape of dy (2, 2, 2, 1), got shape (2, 2, 1, 1)")),
    ("poolbwd-argmax-high", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), np.full((2, 2, 2, 1), 32), (2, 4, 4, 1)), ValueError,
     esc("max_pool2d_backward: argmax must hold flat indices into x (of shape (2, 4, 4, 1)) that lie in "
         "their own image, [0, 16) for image 0; got 32 at position (0, 0, 0, 0)")),
    ("poolbwd-argmax-other-image", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), np.array([0, 1, 2, 3, 4, 5, 6, 7]).reshape(2, 2, 2, 1), (2, 4, 4, 1)), ValueError,
     esc("lie in their own image, [16, 32) for image 1; got 4 at position (1, 0, 0, 0)")),
    ("poolbwd-argmax-negative", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), np.array([0, 1, 2, 3, -6, 17, 18, 19]).reshape(2, 2, 2, 1), (2, 4, 4, 1)), ValueError,
     esc("[16, 32) for image 1; got -6 at position (1, 0, 0, 0)")),
    ("poolbwd-batch", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), z((2, 2, 2, 1), int), (3, 4, 4, 1)), ValueError,
     esc("max_pool2d_backward: dy must have shape (N, OH, OW, C) with N = 3, C = 1, OH <= 4, OW <= 4 "
         "for x_shape (3, 4, 4, 1), got shape (2, 2, 2, 1)")),
    ("poolbwd-dy-3d", lambda: ops.max_pool2d_backward(o((2, 2, 2)), z((2, 2, 2), int), (2, 4, 4, 1)), ValueError,
     esc("max_pool2d_backward: dy must be 4-D (N, OH, OW, C), got shape (2, 2, 2)")),
    ("poolbwd-xshape-list3", lambda: ops.max_pool2d_backward(o((2, 2, 2, 1)), z((2, 2, 2, 1), int), [4, 4, 1]), ValueError,
     esc("max_pool2d_backward: x_shape must be a tuple of 4 ints (N, H, W, C), got (4, 4, 1)")),
    # ---- cosine_topk ----
    ("topk-k0", lambda: ops.cosine_topk(o((2, 4)), o((5, 4)), 0), ValueError, esc("cosine_topk: k must be >= 1, got 0")),
    ("topk-k-neg", lambda: ops.cosine_topk(o((2, 4)), o((5, 4)), -3), ValueError, esc("cosine_topk: k must be >= 1, got -3")),
    ("topk-k-float", lambda: ops.cosine_topk(o((2, 4)), o((5, 4)), 2.5), TypeError,
     esc("cosine_topk: k must be an int, got float 2.5")),
    ("topk-k-none", lambda: ops.cosine_topk(o((2, 4)), o((5, 4)), None), TypeError,
     esc("cosine_topk: k must be an int, got NoneType None")),
    ("topk-d", lambda: ops.cosine_topk(o((2, 4)), o((5, 3)), 2), ValueError,
     esc("cosine_topk: database must have shape (n, d) with d = 4 to match queries of shape (2, 4), got shape (5, 3)")),
    ("topk-q-1d", lambda: ops.cosine_topk(o(4), o((5, 4)), 2), ValueError,
     esc("cosine_topk: queries must be 2-D (Q, d), got shape (4,)")),
    ("topk-db-3d", lambda: ops.cosine_topk(o((2, 4)), o((5, 4, 1)), 2), ValueError,
     esc("cosine_topk: database must be 2-D (n, d), got shape (5, 4, 1)")),
    ("topk-d0", lambda: ops.cosine_topk(o((2, 0)), o((5, 0)), 2), ValueError,
     esc("cosine_topk: the vectors must have d >= 1 components, got queries of shape (2, 0)")),
    ("topk-complex", lambda: ops.cosine_topk(o((2, 4)), o((5, 4), complex), 2), TypeError,
     esc("cosine_topk: database must have a real numeric dtype (float, int or bool), got dtype complex128")),
    # ---- runtime ----
    ("threads-0", lambda: ops.set_num_threads(0), ValueError, esc("set_num_threads: n must be >= 1, got 0")),
    ("threads-float", lambda: ops.set_num_threads(1.5), TypeError, esc("set_num_threads: n must be an int, got float 1.5")),
    ("threads-bool", lambda: ops.set_num_threads(True), TypeError, esc("set_num_threads: n must be an int, got bool True")),
    ("threads-str", lambda: ops.set_num_threads("2"), TypeError, esc("set_num_threads: n must be an int, got str '2'")),
    ("threads-too-many", lambda: ops.set_num_threads(2**70), ValueError,
     esc(f"set_num_threads: n must be <= 1024, got {2**70}")),
    # ---- sizes past what the kernels take (32-bit geometry) ----
    ("conv2d-stride-huge", lambda: ops.conv2d(x8, w33, stride=2**70), ValueError,
     esc(f"conv2d: stride must be <= 2147483647, got {2**70}")),
    ("im2col-kh-huge", lambda: ops.im2col(x8, 2**31, 1), ValueError, esc("im2col: kh must be <= 2147483647, got 2147483648")),
    ("im2col-pad-huge", lambda: ops.im2col(x8, 1, 1, padding=(0, 2**40)), ValueError,
     esc(f"im2col: padding[1] must be <= 2147483647, got {2**40}")),
    ("pool-stride-huge", lambda: ops.max_pool2d(pool_x, 2, (1, 2**64)), ValueError,
     esc(f"max_pool2d: stride[1] must be <= 2147483647, got {2**64}")),
    ("col2im-xshape-huge", lambda: ops.col2im(o((1, 1)), (1, 2**31, 1, 1), 1, 1), ValueError,
     esc("col2im: x_shape[1] (H) must be <= 2147483647, got 2147483648")),
    ("topk-k-huge", lambda: ops.cosine_topk(o((2, 4)), o((5, 4)), 2**63), ValueError,
     esc(f"cosine_topk: k must be <= {2**62}, got {2**63}")),
]


@pytest.mark.parametrize("thunk, exc, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_with_message(thunk, exc, match):
    with pytest.raises(exc, match=match):
        thunk()


class _Poisoned:
    """Stands in for the kernels module: calling any kernel fails the test."""

    def __getattr__(self, name):
        def kernel(*args):
            raise AssertionError(f"_kernels.{name} was called before validation failed")

        return kernel


@pytest.mark.parametrize("thunk, exc, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_caught_before_any_kernel(monkeypatch, thunk, exc, match):
    monkeypatch.setattr(ops, "_K", _Poisoned())
    with pytest.raises(exc, match=match):
        thunk()


def test_messages_name_the_function():
    for name, thunk, exc, _ in CASES:
        with pytest.raises(exc) as info:
            thunk()
        fn = name.split("-")[0]
        prefix = {
            "linbwd": "linear_backward", "ce": "softmax_cross_entropy", "convbwd": "conv2d_backward",
            "pool": "max_pool2d", "poolbwd": "max_pool2d_backward", "topk": "cosine_topk",
            "threads": "set_num_threads",
        }.get(fn, fn)
        assert str(info.value).startswith(prefix + ": "), (name, str(info.value))


def test_pool_backward_accepts_the_forward_output():
    """The error cases above use hand-made argmax; the real one must pass validation."""
    y, arg = _pool_out()
    dx = ops.max_pool2d_backward(y, arg, pool_x.shape)
    assert dx.shape == pool_x.shape


def test_invalid_values_do_not_change_thread_count():
    before = pixrank.get_num_threads()
    for bad in (0, -1):
        with pytest.raises(ValueError):
            pixrank.set_num_threads(bad)
    assert pixrank.get_num_threads() == before


# Checks the kernels make themselves (documented in the ops docstrings): the values are
# only known to be bad once the kernel reads them, or the bound is the compiled module's.


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cosine_topk_rejects_non_finite_rows(bad):
    db = np.ones((5, 3), np.float32)
    db[3, 1] = bad
    with pytest.raises(ValueError, match=esc("cosine_topk: database row 3 contains a non-finite value")):
        ops.cosine_topk(np.ones((2, 3)), db, 2)
    q = np.ones((2, 3), np.float32)
    q[1, 0] = bad
    with pytest.raises(ValueError, match=esc("cosine_topk: queries row 1 contains a non-finite value")):
        ops.cosine_topk(q, np.ones((5, 3)), 2)


def test_set_num_threads_upper_bound():
    before = pixrank.get_num_threads()
    with pytest.raises(ValueError, match=esc("set_num_threads: n must be <= 1024, got 100000")):
        pixrank.set_num_threads(100_000)
    assert pixrank.get_num_threads() == before
    pixrank.set_num_threads(1024)  # the limit itself is accepted
    try:
        assert pixrank.get_num_threads() == 1024
    finally:
        pixrank.set_num_threads(before)


def test_cosine_topk_huge_k_is_clamped():
    idx, scores = ops.cosine_topk(np.eye(3), np.eye(3), 2**62)
    np.testing.assert_array_equal(idx, [[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    np.testing.assert_array_equal(scores[:, 0], 1)

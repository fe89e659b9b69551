"""pixrank.autograd: finite-difference gradient checks for every differentiable function,
graph mechanics (accumulation, shared nodes, residual paths, no_grad, grad()), and values
against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from nn_gradcheck import assert_grads_match_fd
from pixrank import autograd as ag


def away_from_zero(rng, shape, lo=0.1):
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < lo, np.sign(x + 1e-9) * lo, x)


# --------------------------------------------------------------------------- linear algebra

@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_grads(rng, ta, tb):
    a = rng.standard_normal((4, 5) if ta else (5, 4))
    b = rng.standard_normal((3, 4) if tb else (4, 3))
    assert_grads_match_fd(lambda a, b: ag.matmul(a, b, trans_a=ta, trans_b=tb), [a, b])
    y = ag.matmul(a, b, trans_a=ta, trans_b=tb).data
    np.testing.assert_allclose(y, (a.T if ta else a) @ (b.T if tb else b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_grads(rng, relu, bias):
    while True:  # keep pre-activations away from the ReLU kink (finite differences cross it)
        x = rng.standard_normal((6, 5))
        w = rng.standard_normal((5, 4))
        b = rng.standard_normal(4)
        if np.abs(x @ w + (b if bias else 0)).min() > 0.1:
            break
    inputs = [x, w, b] if bias else [x, w]
    fn = (lambda x, w, b: ag.linear(x, w, b, relu=relu)) if bias else (lambda x, w: ag.linear(x, w, relu=relu))
    assert_grads_match_fd(fn, inputs)
    ref = x @ w + (b if bias else 0)
    np.testing.assert_allclose(ag.linear(x, w, b if bias else None, relu=relu).data,
                               np.maximum(ref, 0) if relu else ref, rtol=1e-5, atol=1e-5)


def test_linear_without_input_grad_path(rng):
    """When x needs no gradient, dW and db come from the dx-free path; same values."""
    x = rng.standard_normal((7, 5)).astype(np.float32)
    w = ag.Parameter(rng.standard_normal((5, 3)))
    b = ag.Parameter(rng.standard_normal(3))
    proj = rng.standard_normal((7, 3)).astype(np.float32)
    (ag.linear(x, w, b, relu=True) * proj).sum().backward()
    xt = ag.Tensor(x, requires_grad=True)
    w2, b2 = ag.Parameter(w.data), ag.Parameter(b.data)
    (ag.linear(xt, w2, b2, relu=True) * proj).sum().backward()
    np.testing.assert_allclose(w.grad, w2.grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.grad, b2.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (1, "same"), (2, "same"), (2, "valid"),
                                            ((2, 1), "same"), (1, 1)])
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_grads(rng, stride, padding, relu):
    from pixrank import ops
    while True:  # keep pre-activations away from the ReLU kink (finite differences cross it)
        x = rng.standard_normal((2, 6, 5, 3))
        w = rng.standard_normal((3, 3, 3, 4)) * 0.5
        b = rng.standard_normal(4) * 0.1
        if not relu or np.abs(ops.conv2d(x, w, b, stride=stride, padding=padding)).min() > 0.05:
            break
    assert_grads_match_fd(lambda x, w, b: ag.conv2d(x, w, b, stride=stride, padding=padding, relu=relu), [x, w, b],
             max_points=40)


@pytest.mark.parametrize("pool,stride", [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_max_pool2d_grads(rng, pool, stride):
    x = rng.permutation(2 * 6 * 7 * 3).reshape(2, 6, 7, 3) / 50.0  # distinct values: no ties
    assert_grads_match_fd(lambda x: ag.max_pool2d(x, pool, stride), [x], eps=1e-3)


def test_global_avg_pool_grad_and_value(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert_grads_match_fd(ag.global_avg_pool2d, [x])
    np.testing.assert_allclose(ag.global_avg_pool2d(x).data, x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- activations

@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "softplus", "elu", "leaky_relu", "swish",
                                  "softmax", "log_softmax", "exp", "neg", "square", "abs"])
def test_unary_grads(rng, name):
    x = away_from_zero(rng, (4, 6))
    assert_grads_match_fd(getattr(ag, name), [x])


def test_unary_values(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    z = x - x.max(axis=1, keepdims=True)
    sm = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ag.softmax(x).data, sm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ag.log_softmax(x).data, np.log(sm), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ag.sigmoid(x).data, 1 / (1 + np.exp(-x)), rtol=1e-5)
    np.testing.assert_allclose(ag.softplus(x).data, np.log1p(np.exp(x)), rtol=1e-5)
    np.testing.assert_allclose(ag.leaky_relu(x).data, np.where(x > 0, x, 0.2 * x), rtol=1e-6)
    big = np.array([[1000.0, -1000.0]], np.float32)
    assert np.all(np.isfinite(ag.sigmoid(big).data)) and np.all(np.isfinite(ag.softplus(big).data))


def test_log_sqrt_power_grads(rng):
    x = rng.uniform(0.5, 2.0, (3, 4))
    assert_grads_match_fd(ag.log, [x])
    assert_grads_match_fd(ag.sqrt, [x])
    assert_grads_match_fd(lambda t: ag.power(t, 3), [x])
    assert_grads_match_fd(lambda t: t ** -0.5, [x])


def test_softmax_cross_entropy_grad_and_value(rng):
    z = rng.standard_normal((5, 4)) * 2
    labels = np.array([0, 3, 1, 1, 2])
    assert_grads_match_fd(lambda t: ag.softmax_cross_entropy(t, labels), [z])
    zs = z - z.max(axis=1, keepdims=True)
    ref = np.mean(np.log(np.exp(zs).sum(axis=1)) - zs[np.arange(5), labels])
    assert abs(ag.softmax_cross_entropy(z, labels).item() - ref) < 1e-5


def test_softmax_remembers_logits(rng):
    z = ag.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    p = ag.softmax(z)
    assert p._logits is z


# --------------------------------------------------------------------------- elementwise & shapes

@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1))])
def test_binary_broadcast_grads(rng, op, shapes):
    a = rng.uniform(0.5, 1.5, shapes[0]) * rng.choice([-1, 1], shapes[0])
    b = rng.uniform(0.5, 1.5, shapes[1]) + (0.37 if op == "maximum" else 0)
    assert_grads_match_fd(getattr(ag, op), [a, b])
    ref = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}[op]
    np.testing.assert_allclose(getattr(ag, op)(a, b).data, ref(a, b).astype(np.float32), rtol=1e-5, atol=1e-6)


def test_operators_with_numpy_and_scalars(rng):
    a = ag.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    n = rng.standard_normal((2, 3)).astype(np.float32)
    out = (2.0 * a + n) * a - a / 4.0 + (n - a) + (1 - a)
    assert isinstance(n + a, ag.Tensor) and isinstance(n * a, ag.Tensor)
    out.sum().backward()
    np.testing.assert_allclose(a.grad, 4 * a.data + n - 0.25 - 1 - 1, rtol=1e-5, atol=1e-5)


def test_clip_grad(rng):
    x = rng.uniform(-2, 2, (4, 5))
    x = np.where(np.abs(np.abs(x) - 1) < 0.05, 0.5, x)
    assert_grads_match_fd(lambda t: ag.clip(t, -1.0, 1.0), [x])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_mean_grads(rng, axis, keepdims):
    x = rng.standard_normal((3, 4, 2))
    assert_grads_match_fd(lambda t: ag.sum(t, axis, keepdims), [x])
    assert_grads_match_fd(lambda t: ag.mean(t, axis, keepdims), [x])
    np.testing.assert_allclose(ag.mean(x, axis, keepdims).data, x.mean(axis=axis, keepdims=keepdims), rtol=1e-5, atol=1e-6)


def test_shape_ops_grads(rng):
    x = rng.standard_normal((2, 3, 4))
    assert_grads_match_fd(lambda t: ag.reshape(t, (6, 4)), [x])
    assert_grads_match_fd(lambda t: ag.transpose(t, (2, 0, 1)), [x])
    assert_grads_match_fd(lambda t: t.T, [x])
    assert_grads_match_fd(ag.flatten, [x])
    assert_grads_match_fd(lambda t: t[:, 1:, ::2], [x])
    assert_grads_match_fd(lambda t: t[np.array([1, 1, 0])], [x])
    assert_grads_match_fd(lambda t: ag.take(t, np.array([2, 0, 2, 3]), axis=2), [x])
    y = rng.standard_normal((2, 1, 4))
    assert_grads_match_fd(lambda a, b: ag.concat([a, b], axis=1), [x, y])
    assert_grads_match_fd(lambda a, b: ag.stack([a, b], axis=1), [x, x + 1])
    with pytest.raises(ValueError, match="cannot reshape"):
        ag.reshape(x, (5, 5))


def test_l2_normalize_grad_and_value(rng):
    x = rng.standard_normal((4, 6))
    assert_grads_match_fd(ag.l2_normalize, [x])
    assert_grads_match_fd(lambda t: ag.l2_normalize(t, axis=0), [x])
    y = ag.l2_normalize(x).data
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-5)
    z = ag.l2_normalize(np.zeros((1, 3))).data  # zero vector: stays zero, no NaN
    assert np.all(z == 0)


# --------------------------------------------------------------------------- embeddings

def test_embedding_grad_with_repeats(rng):
    table = rng.standard_normal((7, 3))
    ids = np.array([[1, 4, 1], [6, 0, 1]])
    t = assert_grads_match_fd(lambda tb: ag.embedding(ids, tb), [table])[0]
    np.testing.assert_allclose(ag.embedding(ids, table).data, table[ids].astype(np.float32))
    assert t.grad[2].sum() == 0 and t.grad[1].any()  # unused row: zero gradient
    with pytest.raises(ValueError, match="out of range"):
        ag.embedding(np.array([7]), table)
    with pytest.raises(ValueError, match="integers"):
        ag.embedding(np.array([1.5]), table)


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_embedding_bag(rng, mode):
    table = rng.standard_normal((6, 4))
    ids = np.array([0, 2, 2, 5, 1, 3])
    offsets = np.array([0, 3, 3, 4])  # bags: [0,2,2], [], [5], [1,3]
    assert_grads_match_fd(lambda tb: ag.embedding_bag(ids, offsets, tb, mode), [table])
    out = ag.embedding_bag(ids, offsets, table, mode).data
    bags = [[0, 2, 2], [], [5], [1, 3]]
    for i, bag in enumerate(bags):
        ref = table[bag].sum(axis=0) if bag else np.zeros(4)
        if mode == "mean" and bag:
            ref = ref / len(bag)
        np.testing.assert_allclose(out[i], ref, rtol=1e-5, atol=1e-6)
    trailing = ag.embedding_bag(ids, np.array([0, 6, 6]), table, mode).data  # empty bags at the end
    np.testing.assert_allclose(trailing[0], table[ids].mean(0) if mode == "mean" else table[ids].sum(0), rtol=1e-5)
    assert np.all(trailing[1:] == 0)
    assert np.all(ag.embedding_bag(np.zeros(0, np.int64), np.array([0, 0]), table, mode).data == 0)
    assert_grads_match_fd(lambda tb: ag.embedding_bag(ids, np.array([0, 0, 2, 6, 6]), tb, mode), [table])
    with pytest.raises(ValueError, match="offsets"):
        ag.embedding_bag(ids, np.array([1, 3]), table)
    with pytest.raises(ValueError, match="offsets"):
        ag.embedding_bag(ids, np.array([0, 4, 2]), table)


# --------------------------------------------------------------------------- regularisation / norm

def test_dropout_grad_and_statistics(rng):
    x = rng.standard_normal((20, 30))
    assert_grads_match_fd(lambda t: ag.dropout(t, 0.3, np.random.default_rng(5)), [x])
    y = ag.dropout(np.ones((200, 200)), 0.25, np.random.default_rng(1)).data
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert np.allclose(y[y != 0], 1 / 0.75)
    t = ag.Tensor(x)
    assert ag.dropout(t, 0.5, rng, training=False) is t
    with pytest.raises(ValueError, match="rate"):
        ag.dropout(t, 1.0, rng)


def test_batch_norm_train_grads_and_stats(rng):
    x = rng.standard_normal((6, 2, 3, 4)) * 2 + 1
    g = rng.uniform(0.5, 1.5, 4)
    b = rng.standard_normal(4)
    assert_grads_match_fd(lambda x, g, b: ag.batch_norm(x, g, b, 1e-3)[0], [x, g, b], max_points=80)
    y, mu, var = ag.batch_norm(x, g, b, 1e-3)
    axes = (0, 1, 2)
    np.testing.assert_allclose(mu, x.mean(axis=axes), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, x.var(axis=axes), rtol=1e-4)
    ref = (x - x.mean(axis=axes)) / np.sqrt(x.var(axis=axes) + 1e-3) * g + b
    np.testing.assert_allclose(y.data, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- graph mechanics

def test_residual_graph_shared_node(rng):
    """h used twice (residual): its gradient is the sum over both paths."""
    x = rng.standard_normal((5, 4))
    w1 = rng.standard_normal((4, 4)) * 0.5
    w2 = rng.standard_normal((4, 4)) * 0.5

    def block(x, w1, w2):
        h = ag.linear(x, w1, relu=True)
        return ag.tanh(ag.add(ag.linear(h, w2), h)) * h

    assert_grads_match_fd(block, [x, w1, w2])


def test_backward_accumulates_and_grad_does_not_touch(rng):
    w = ag.Parameter(rng.standard_normal((3, 2)))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    loss = lambda: ag.matmul(x, w).sum()  # noqa: E731
    loss().backward()
    g1 = w.grad.copy()
    loss().backward()
    np.testing.assert_allclose(w.grad, 2 * g1, rtol=1e-6)
    w.grad = None
    (g,) = ag.grad(loss(), [w])
    np.testing.assert_allclose(g, g1, rtol=1e-6)
    assert w.grad is None
    other = ag.Parameter(np.ones(2))
    g_w, g_o = ag.grad(loss(), [w, other])
    assert np.all(g_o == 0)


def test_no_grad_records_nothing(rng):
    w = ag.Parameter(rng.standard_normal((3, 2)))
    with ag.no_grad():
        y = ag.matmul(np.ones((1, 3)), w)
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match="non-scalar"):
        ag.matmul(np.ones((1, 3)), w).backward()


def test_parameter_is_float32_copy():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    p = ag.Parameter(a, name="p")
    assert p.data.dtype == np.float32 and p.trainable and p.requires_grad
    a[0, 0] = 99
    assert p.data[0, 0] == 0
    with pytest.raises(ValueError, match="cannot assign shape"):
        p.assign(np.zeros(3))
    frozen = ag.Parameter(np.zeros(2), trainable=False)
    assert not frozen.requires_grad


def test_grad_mode_is_thread_local():
    """no_grad in one thread must not switch recording off in another (as in PyTorch)."""
    import threading

    from pixrank import autograd as ag

    inside = threading.Event()
    release = threading.Event()

    def other():
        with ag.no_grad():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(5)
    try:
        assert ag.is_grad_enabled()
        w = ag.Parameter(np.ones((2, 2), np.float32))
        y = ag.sum(ag.mul(w, w))
        assert y.requires_grad
        y.backward()
        np.testing.assert_allclose(w.grad, 2 * np.ones((2, 2)))
    finally:
        release.set()
        t.join()
    assert ag.is_grad_enabled()

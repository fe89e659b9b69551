"""Layers: Dense+ReLU, softmax cross-entropy, Conv2D, max-pool; pixrank against PyTorch.

Two pixrank sides per operation where it matters:

* ``(ops)``: the bare kernels (``ops.matmul(..., relu=True)`` + ``ops.linear_backward``,
  ``ops.softmax_cross_entropy``, ``ops.conv2d`` + ``ops.conv2d_backward``,
  ``ops.max_pool2d`` + ``ops.max_pool2d_backward``);
* ``(autograd)``: the framework as a model uses it (``pixrank.autograd.linear``,
  ``conv2d``, ``max_pool2d``, ``softmax_cross_entropy`` on ``Tensor``s, then
  ``.backward``), i.e. kernels plus the Python graph.

The PyTorch side is always its autograd as a PyTorch user writes it (``F.linear``/
``F.relu``, ``F.cross_entropy``, ``F.conv2d``, ``F.max_pool2d``, ``.backward``), in its
natural **NCHW** layout with (out, in) Linear weights; forward-only rows run under
``torch.no_grad()``. Gradients are reset to None between iterations, as
``optimizer.zero_grad()`` does. Every input of a fwd+bwd row requires its gradient on both
sides (the same work: dx, dw, db).

Shapes (batch 128, the ``mlp`` and ``cnn`` models): Dense 128x784->200, 128x200->60,
1024x784->200; softmax CE (128, 10), (1024, 10), (256, 1000); Conv2D 3x3 'same' + ReLU
28x28x1->32 and 14x14x32->64, and the cnn's Dense 3136->128 + ReLU; max-pool 2x2 over
28x28x32 and 14x14x64. ``--quick``: batch 16.

Checks: pixrank's outputs and gradients against PyTorch's, ``max |diff| / max |ref| <= 1e-4``
(convolution gradients: PyTorch's under pixrank's ReLU mask, so that a pre-activation that
rounds to the other side of 0 in one library does not count as a mismatch).
"""
from __future__ import annotations

import numpy as np

from .common import (NotAvailable, check_close, fmt_s, import_optional, import_pixrank_ops, make_row,
                     merge_checks, paired_time, raiser, set_threads)

GROUP = "layers"
PROFILES = {"machine": ["torch"]}
RTOL = 1e-4


def _autograd():
    try:
        from pixrank import autograd
        return autograd
    except Exception as exc:
        raise NotAvailable(f"pixrank.autograd does not import ({type(exc).__name__}: {exc})") from exc


def _cases(quick: bool):
    b = 16 if quick else 128
    big = 32 if quick else 1024
    dense = [(b, 784, 200), (b, 200, 60), (big, 784, 200)]
    ce = [(b, 10), (big, 10), (32 if quick else 256, 1000)]
    conv = [("conv1 28x28x1->32 3x3 same", (b, 28, 28, 1), 32),
            ("conv2 14x14x32->64 3x3 same", (b, 14, 14, 32), 64)]
    pool = [(b, 28, 28, 32), (b, 14, 14, 64)]
    return dense, ce, conv, pool, b


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rng = np.random.default_rng(4321)
    try:
        ops = import_pixrank_ops()
        ops_err = None
    except NotAvailable as exc:
        ops, ops_err = None, exc
    try:
        ag = _autograd()
        ag_err = None
    except NotAvailable as exc:
        ag, ag_err = None, exc
    try:
        torch = import_optional("torch")
        F = torch.nn.functional
        t_err = None
    except NotAvailable as exc:
        torch, F, t_err = None, None, exc

    reps = 1 if quick else 7
    warm = 1 if quick else 3
    mst = 0.002 if quick else 0.05
    dense, ce, conv, pool, batch = _cases(quick)
    rows = []

    def emit(name, nt, sides, check, flops=None, notes=None):
        timing = paired_time(sides, repeats=reps, warmup=warm, min_sample_s=mst)
        row = make_row(GROUP, name, nt, timing, ["torch"], flops=flops, check=check, notes=notes)
        rows.append(row)
        p, t = row["pixrank_s"], row["refs"]["torch"]
        log(f"  layers {name} t={nt}: pixrank {fmt_s(p)}, torch {fmt_s(t)}")

    def tt(a, grad=False):
        x = torch.from_numpy(np.ascontiguousarray(a)).clone()
        x.requires_grad_(grad)
        return x

    for nt in threads:
        set_threads(nt)
        # ---------------------------------------------------------------- Dense + ReLU
        for m, k, n in dense:
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = (rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
            b = rng.standard_normal(n, dtype=np.float32) * 0.1
            dy = rng.standard_normal((m, n), dtype=np.float32)
            fl_f = 2.0 * m * k * n
            # forward
            sides, check = {}, {}
            sides["pixrank"] = raiser(ops_err) if ops is None else (lambda: ops.matmul(x, w, b, relu=True))
            if torch is None:
                sides["torch"] = raiser(t_err)
            else:
                tx, tW, tb = tt(x), tt(w.T), tt(b)

                def torch_fwd(tx=tx, tW=tW, tb=tb):
                    with torch.no_grad():
                        return F.relu(F.linear(tx, tW, tb))
                sides["torch"] = torch_fwd
                if ops is not None:
                    check["torch"] = check_close("y", ops.matmul(x, w, b, relu=True), torch_fwd().numpy(), RTOL)
            emit(f"Dense+ReLU fwd {m}x{k}->{n} (ops)", nt, sides, check, flops=fl_f)

            # forward + backward
            t_ref = None
            if torch is not None:
                tx, tW, tb = tt(x, True), tt(w.T, True), tt(b, True)
                tdy = tt(dy)

                def torch_fb(tx=tx, tW=tW, tb=tb, tdy=tdy):
                    tx.grad = tW.grad = tb.grad = None
                    y = F.relu(F.linear(tx, tW, tb))
                    y.backward(tdy)
                torch_fb()
                t_ref = (tx.grad.numpy().copy(), tW.grad.numpy().T.copy(), tb.grad.numpy().copy())

            def pix_ops_fb(x=x, w=w, b=b, dy=dy):
                y = ops.matmul(x, w, b, relu=True)
                return ops.linear_backward(x, w, dy, y, relu=True)

            def pix_ag_fb(x=x, w=w, b=b, dy=dy):
                X = ag.Tensor(x, requires_grad=True)
                W = ag.Parameter(w)
                B = ag.Parameter(b)
                y = ag.linear(X, W, B, relu=True)
                y.backward(dy)
                return X.grad, W.grad, B.grad

            for label, fn, err in (("ops", pix_ops_fb, ops_err if ops is None else None),
                                   ("autograd", pix_ag_fb, ag_err if ag is None else (ops_err if ops is None else None))):
                sides, check = {}, {}
                sides["pixrank"] = raiser(err) if err else fn
                sides["torch"] = raiser(t_err) if torch is None else torch_fb
                if err is None and t_ref is not None:
                    got = fn()
                    check["torch"] = merge_checks(*(check_close(nm, g, r, RTOL) for nm, g, r in zip(("dx", "dw", "db"), got, t_ref)))
                emit(f"Dense+ReLU fwd+bwd {m}x{k}->{n} ({label})", nt, sides, check, flops=3 * fl_f)

        # ---------------------------------------------------------------- softmax CE
        for n, c in ce:
            logits = rng.standard_normal((n, c), dtype=np.float32) * 3
            labels = rng.integers(0, c, n).astype(np.int64)
            t_ref = None
            if torch is not None:
                tl, tlab = tt(logits, True), torch.from_numpy(labels)

                def torch_ce(tl=tl, tlab=tlab):
                    tl.grad = None
                    loss = F.cross_entropy(tl, tlab)
                    loss.backward()
                    return loss
                loss = torch_ce()
                t_ref = (float(loss), tl.grad.numpy().copy())

            def pix_ops_ce(logits=logits, labels=labels):
                return ops.softmax_cross_entropy(logits, labels)

            def pix_ag_ce(logits=logits, labels=labels):
                L = ag.Tensor(logits, requires_grad=True)
                loss = ag.softmax_cross_entropy(L, labels)
                loss.backward()
                return loss.item(), L.grad

            for label, fn, err in (("ops", pix_ops_ce, ops_err if ops is None else None),
                                   ("autograd", pix_ag_ce, ag_err if ag is None else (ops_err if ops is None else None))):
                sides, check = {}, {}
                sides["pixrank"] = raiser(err) if err else fn
                sides["torch"] = raiser(t_err) if torch is None else torch_ce
                if err is None and t_ref is not None:
                    lg, dg = fn()
                    check["torch"] = merge_checks(check_close("loss", np.array([lg]), np.array([t_ref[0]]), RTOL),
                                                  check_close("dlogits", dg, t_ref[1], RTOL))
                emit(f"softmax CE fwd+bwd ({n}, {c}) ({label})", nt, sides, check)

        # ---------------------------------------------------------------- Conv2D + ReLU
        for name, (B, H, W, C), Fo in conv:
            x = rng.random((B, H, W, C), dtype=np.float32)
            w = (rng.standard_normal((3, 3, C, Fo), dtype=np.float32) / np.sqrt(9 * C)).astype(np.float32)
            b = rng.standard_normal(Fo, dtype=np.float32) * 0.1
            dy = rng.standard_normal((B, H, W, Fo), dtype=np.float32)
            fl_f = 2.0 * B * H * W * Fo * 9 * C
            sides, check = {}, {}
            sides["pixrank"] = raiser(ops_err) if ops is None else (
                lambda x=x, w=w, b=b: ops.conv2d(x, w, b, padding="same", relu=True))
            t_ref = None
            if torch is None:
                sides["torch"] = raiser(t_err)
                sides2 = raiser(t_err)
            else:
                tx = tt(x.transpose(0, 3, 1, 2))
                tw = tt(w.transpose(3, 2, 0, 1))
                tb = tt(b)

                def torch_cf(tx=tx, tw=tw, tb=tb):
                    with torch.no_grad():
                        return F.relu(F.conv2d(tx, tw, tb, padding=1))
                sides["torch"] = torch_cf
                if ops is not None:
                    check["torch"] = check_close("y", ops.conv2d(x, w, b, padding="same", relu=True),
                                                 torch_cf().numpy().transpose(0, 2, 3, 1), RTOL)
                gx, gw, gb = tt(x.transpose(0, 3, 1, 2), True), tt(w.transpose(3, 2, 0, 1), True), tt(b, True)
                tdy = tt(dy.transpose(0, 3, 1, 2))

                def sides2(gx=gx, gw=gw, gb=gb, tdy=tdy):
                    gx.grad = gw.grad = gb.grad = None
                    y = F.relu(F.conv2d(gx, gw, gb, padding=1))
                    y.backward(tdy)
                sides2()
                t_ref = (gx.grad.numpy().transpose(0, 2, 3, 1).copy(), gw.grad.numpy().transpose(2, 3, 1, 0).copy(),
                         gb.grad.numpy().copy())
            emit(f"Conv2D+ReLU fwd {name} B={B}", nt, sides, check, flops=fl_f)

            def pix_ops_cb(x=x, w=w, b=b, dy=dy):
                y = ops.conv2d(x, w, b, padding="same", relu=True)
                return ops.conv2d_backward(x, w, dy, padding="same", y=y, relu=True)

            def pix_ag_cb(x=x, w=w, b=b, dy=dy):
                X = ag.Tensor(x, requires_grad=True)
                Wt, Bt = ag.Parameter(w), ag.Parameter(b)
                y = ag.conv2d(X, Wt, Bt, padding="same", relu=True)
                y.backward(dy)
                return X.grad, Wt.grad, Bt.grad

            if t_ref is not None and ops is not None:
                # The reference gradients under pixrank's own ReLU mask: where a pre-activation
                # rounds to either side of 0 in the two libraries, the masks differ and so would
                # the gradients, by design rather than by error. Forward outputs are checked above.
                ymask = ops.conv2d(x, w, b, padding="same", relu=True) > 0
                rx, rw, rb = tt(x.transpose(0, 3, 1, 2), True), tt(w.transpose(3, 2, 0, 1), True), tt(b, True)
                F.conv2d(rx, rw, rb, padding=1).backward(tt((dy * ymask).transpose(0, 3, 1, 2)))
                t_ref = (rx.grad.numpy().transpose(0, 2, 3, 1).copy(), rw.grad.numpy().transpose(2, 3, 1, 0).copy(),
                         rb.grad.numpy().copy())
            for label, fn, err in (("ops", pix_ops_cb, ops_err if ops is None else None),
                                   ("autograd", pix_ag_cb, ag_err if ag is None else (ops_err if ops is None else None))):
                sides, check = {}, {}
                sides["pixrank"] = raiser(err) if err else fn
                sides["torch"] = sides2
                if err is None and t_ref is not None:
                    got = fn()
                    check["torch"] = merge_checks(*(check_close(nm, g, r, RTOL) for nm, g, r in zip(("dx", "dw", "db"), got, t_ref)))
                emit(f"Conv2D+ReLU fwd+bwd {name} B={B} ({label})", nt, sides, check, flops=3 * fl_f)

        # the cnn's Dense 3136 -> 128 + ReLU (after the second pool)
        m, k, n = batch, 3136, 128
        x = rng.random((m, k), dtype=np.float32)
        w = (rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n, dtype=np.float32) * 0.1
        dy = rng.standard_normal((m, n), dtype=np.float32)
        sides, check = {}, {}
        sides["pixrank"] = raiser(ops_err) if ops is None else (lambda: ops.matmul(x, w, b, relu=True))
        t_ref = None
        if torch is None:
            sides["torch"] = raiser(t_err)
            torch_fb = raiser(t_err)
        else:
            tx, tW, tb = tt(x), tt(w.T), tt(b)

            def torch_fwd():
                with torch.no_grad():
                    return F.relu(F.linear(tx, tW, tb))
            sides["torch"] = torch_fwd
            if ops is not None:
                check["torch"] = check_close("y", ops.matmul(x, w, b, relu=True), torch_fwd().numpy(), RTOL)
            gx, gW, gb = tt(x, True), tt(w.T, True), tt(b, True)
            tdy = tt(dy)

            def torch_fb():
                gx.grad = gW.grad = gb.grad = None
                F.relu(F.linear(gx, gW, gb)).backward(tdy)
            torch_fb()
            t_ref = (gx.grad.numpy().copy(), gW.grad.numpy().T.copy(), gb.grad.numpy().copy())
        emit(f"Dense+ReLU fwd 3136->128 (cnn) B={m} (ops)", nt, sides, check, flops=2.0 * m * k * n)

        def pix_ag_d():
            X = ag.Tensor(x, requires_grad=True)
            W_, B_ = ag.Parameter(w), ag.Parameter(b)
            ag.linear(X, W_, B_, relu=True).backward(dy)
            return X.grad, W_.grad, B_.grad
        err = ag_err if ag is None else (ops_err if ops is None else None)
        sides, check = {"pixrank": raiser(err) if err else pix_ag_d, "torch": torch_fb}, {}
        if err is None and t_ref is not None:
            check["torch"] = merge_checks(*(check_close(nm, g, r, RTOL) for nm, g, r in zip(("dx", "dw", "db"), pix_ag_d(), t_ref)))
        emit(f"Dense+ReLU fwd+bwd 3136->128 (cnn) B={m} (autograd)", nt, sides, check, flops=6.0 * m * k * n)

        # ---------------------------------------------------------------- max-pool 2x2
        for (B, H, W, C) in pool:
            x = rng.standard_normal((B, H, W, C), dtype=np.float32)
            dy = rng.standard_normal((B, H // 2, W // 2, C), dtype=np.float32)
            t_ref = None
            if torch is not None:
                tx = tt(x.transpose(0, 3, 1, 2))

                def torch_pf(tx=tx):
                    with torch.no_grad():
                        return F.max_pool2d(tx, 2)
                gx = tt(x.transpose(0, 3, 1, 2), True)
                tdy = tt(dy.transpose(0, 3, 1, 2))

                def torch_pb(gx=gx, tdy=tdy):
                    gx.grad = None
                    F.max_pool2d(gx, 2).backward(tdy)
                torch_pb()
                t_ref = (torch_pf().numpy().transpose(0, 2, 3, 1).copy(), gx.grad.numpy().transpose(0, 2, 3, 1).copy())
            sides, check = {}, {}
            sides["pixrank"] = raiser(ops_err) if ops is None else (lambda x=x: ops.max_pool2d(x, 2))
            sides["torch"] = raiser(t_err) if torch is None else torch_pf
            if ops is not None and t_ref is not None:
                check["torch"] = check_close("y", ops.max_pool2d(x, 2)[0], t_ref[0], RTOL)
            emit(f"MaxPool2D 2x2 fwd {H}x{W}x{C} B={B} (ops)", nt, sides, check)

            def pix_ops_pb(x=x, dy=dy):
                y, arg = ops.max_pool2d(x, 2)
                return ops.max_pool2d_backward(dy, arg, x.shape)

            def pix_ag_pb(x=x, dy=dy):
                X = ag.Tensor(x, requires_grad=True)
                ag.max_pool2d(X, 2).backward(dy)
                return X.grad

            for label, fn, err in (("ops", pix_ops_pb, ops_err if ops is None else None),
                                   ("autograd", pix_ag_pb, ag_err if ag is None else (ops_err if ops is None else None))):
                sides, check = {}, {}
                sides["pixrank"] = raiser(err) if err else fn
                sides["torch"] = raiser(t_err) if torch is None else torch_pb
                if err is None and t_ref is not None:
                    check["torch"] = check_close("dx", fn(), t_ref[1], RTOL)
                emit(f"MaxPool2D 2x2 fwd+bwd {H}x{W}x{C} B={B} ({label})", nt, sides, check)
    return rows

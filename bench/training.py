"""Training: seconds per epoch on Fashion-MNIST and test accuracy, pixrank against PyTorch.

Models (``pixrank.apps.train_cmd.build_model``, the ones ``pixrank train`` trains):

* ``mlp`` — the classic Keras model: Flatten -> Dense(200, relu) -> Dense(60, relu) ->
  Dense(10, softmax);
* ``cnn`` — Conv2D(32, 3, relu, same) -> MaxPool2D -> Conv2D(64, 3, relu, same) ->
  MaxPool2D -> Flatten -> Dense(128, relu) -> Dense(10, softmax).

Both sides: full Fashion-MNIST (60,000 training, 10,000 test images from
``/usr/share/datasets/fashion-mnist``, or wherever ``pixrank.datasets.fashion_mnist``
finds them), pixels / 255, batch 128 with a fresh shuffle every epoch (the last, partial
batch included), Adam (lr 1e-3 constant, betas 0.9/0.999, epsilon 1e-7 as Keras; note that
``pixrank train`` itself defaults to a cosine schedule, not used here), sparse categorical
cross-entropy on the logits (PyTorch's ``F.cross_entropy``; pixrank's fused softmax
cross-entropy kernel).

**The same starting point and the same batches on both sides.** pixrank's model is built
with its Keras defaults (Glorot-uniform kernels, zero biases) from a seeded generator, and
PyTorch's layers get *those very values* (transposed to PyTorch's ``(out, in)`` and
``(out, in, kh, kw)`` layouts; the cnn's 3136 -> 128 Dense has its rows permuted from
pixrank's NHWC flatten order to PyTorch's NCHW one). Each epoch's order comes from
``numpy.random.default_rng(seed).permutation(60000)``: pixrank's ``fit`` draws it from
``pixrank.utils.get_rng()`` re-seeded with that seed just before the first epoch, the
PyTorch loop from its own generator of the same seed, so both sides see the same batches in
the same order. Why: the test accuracy of one run after 2–3 epochs of constant-rate Adam
varies by about ±1 point with the random initialisation and shuffle (measured, the mlp
after 3 epochs over four seeds: pixrank 84.8–86.9 %, PyTorch 86.3–87.0 %), more than the
0.5-point target, so two runs from *different* random starts cannot show "equal accuracy";
from the same start and batches the two implementations track each other (training loss
equal to 3 decimals) and the gap measures the implementations, not the draw.
(Without PyTorch's Glorot values from pixrank, e.g. when pixrank does not import, PyTorch
uses ``nn.init.xavier_uniform_`` and ``zeros_`` itself.)

PyTorch runs its natural NCHW layout with a plain loop over index tensors (no DataLoader,
whose worker overhead would flatter pixrank); pixrank runs ``model.fit(..., epochs=1,
verbose=0)`` once per epoch (this reproduces ``fit(..., epochs=N)`` exactly: the same
generator draws each epoch's order, and the optimizer keeps its state and step count).

The epochs of the two sides alternate (pixrank, PyTorch, then PyTorch, pixrank, ...),
with a pause of :func:`bench.common.settle_seconds` before each epoch at 2 threads (idle
worker threads of the other library stop spinning first). Each row (model, thread count)
trains afresh from its own seeds: the mlp 3 runs of 3 epochs (a run is quick; the accuracy
is the mean over the 3 runs, which shrinks the epoch-to-epoch jitter of a single run's test
accuracy, about ±0.6 points even from the same start), the cnn 1 run of 2 epochs. The row
reports each side's median seconds per epoch over all its epochs (for the cnn the mean of
its first, warm-up epoch and its second), the test accuracy after the last epoch and the
mean training loss of the last epoch (equal to about 3 decimals when the two
implementations compute the same thing). ``--quick``: 512 training
and 256 test images, one epoch.

Check: each side's accuracy is above chance (0.2 with 10 classes) in quick mode; the full
run records both accuracies and their gap (the target is equal accuracy within 0.5
points).
"""
from __future__ import annotations

import time

import numpy as np

from .common import NotAvailable, fmt_s, import_optional, make_row, set_threads, settle_seconds

GROUP = "training"
PROFILES = {"machine": ["torch"]}
MODELS = ("mlp", "cnn")
EPOCHS_FULL = {"mlp": 3, "cnn": 2}
#: independent runs (each from its own shared start) per row; accuracy is their mean
SEEDS_FULL = {"mlp": 3, "cnn": 1}
BATCH = 128
SEED = 1234


def load_data(quick: bool):
    """Fashion-MNIST as float32 NHWC in [0, 1] and int64 labels (subset when quick)."""
    from pixrank.datasets import fashion_mnist
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data()
    if quick:
        rng = np.random.default_rng(SEED)
        tr = rng.choice(len(xtr), 512, replace=False)
        te = rng.choice(len(xte), 256, replace=False)
        xtr, ytr, xte, yte = xtr[tr], ytr[tr], xte[te], yte[te]
    prep = lambda x: x.reshape(-1, 28, 28, 1).astype(np.float32) / 255  # noqa: E731
    return prep(xtr), ytr.astype(np.int64), prep(xte), yte.astype(np.int64)


def torch_model(torch, kind: str):
    """The same architecture in PyTorch (NCHW), Glorot-uniform weights, zero biases."""
    nn = torch.nn
    if kind == "mlp":
        m = nn.Sequential(nn.Flatten(), nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 60), nn.ReLU(),
                          nn.Linear(60, 10))
    elif kind == "cnn":
        m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        raise ValueError(f"torch_model: kind must be 'mlp' or 'cnn', got {kind!r}")
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)
    return m


def copy_pixrank_weights(torch, tmodel, pmodel, kind: str) -> None:
    """Give the PyTorch model ``tmodel`` the weights of the pixrank model ``pmodel``.

    Dense kernels ``(in, out)`` -> Linear weights ``(out, in)``; Conv2D kernels
    ``(kh, kw, in, out)`` -> Conv2d weights ``(out, in, kh, kw)``; for the cnn's first Dense
    (after Flatten), pixrank's input rows in NHWC order ``(h, w, c)`` are reordered to
    PyTorch's NCHW flatten order ``(c, h, w)``. Biases are copied as they are.

    Raises:
        ValueError: the two models' layers do not correspond (count or shapes).
    """
    pl = [layer for layer in pmodel.layers if getattr(layer, "kernel", None) is not None]
    tl = [m for m in tmodel.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if len(pl) != len(tl):
        raise ValueError(f"copy_pixrank_weights: {len(pl)} pixrank layers with weights, {len(tl)} PyTorch ones")
    with torch.no_grad():
        for p, t in zip(pl, tl):
            k = np.asarray(p.kernel.data, dtype=np.float32)
            if isinstance(t, torch.nn.Conv2d):
                w = k.transpose(3, 2, 0, 1)
            elif kind == "cnn" and k.shape[0] == 3136:  # Flatten of a (7, 7, 64) NHWC map
                w = k.reshape(7, 7, 64, k.shape[1]).transpose(3, 2, 0, 1).reshape(k.shape[1], 3136)
            else:
                w = k.T
            if tuple(w.shape) != tuple(t.weight.shape):
                raise ValueError(f"copy_pixrank_weights: pixrank kernel {k.shape} does not fit PyTorch weight "
                                 f"{tuple(t.weight.shape)}")
            t.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            b = getattr(p, "bias", None)
            if b is not None and t.bias is not None:
                t.bias.copy_(torch.from_numpy(np.asarray(b.data, dtype=np.float32)))


class TorchTrainer:
    """A plain PyTorch training loop equivalent to Keras' ``fit(batch_size=128, shuffle=True)``.

    ``init_from``: a pixrank model whose weights to start from (else Glorot uniform drawn
    by PyTorch); ``seed``: seeds the generator of the epochs' permutations
    (``numpy.random.default_rng(seed).permutation(n)`` per epoch, as pixrank's ``fit``).
    """

    def __init__(self, torch, kind, xtr, ytr, xte, yte, seed=SEED, init_from=None):
        self.torch = torch
        torch.manual_seed(seed)
        self.model = torch_model(torch, kind)
        self.shared_init = False
        if init_from is not None:
            copy_pixrank_weights(torch, self.model, init_from, kind)
            self.shared_init = True
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
        self.xtr, self.ytr = nchw(xtr), torch.from_numpy(ytr)
        self.xte, self.yte = nchw(xte), torch.from_numpy(yte)
        self.rng = np.random.default_rng(seed)

    def epoch(self):
        torch, F = self.torch, self.torch.nn.functional
        self.model.train()
        n = self.xtr.shape[0]
        perm = torch.from_numpy(self.rng.permutation(n))
        losses = []
        for s in range(0, n, BATCH):
            idx = perm[s:s + BATCH]
            xb, yb = self.xtr[idx], self.ytr[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()
            losses.append(loss.detach())  # summed after the epoch, as Keras' running mean
        w = torch.tensor([min(BATCH, n - s) for s in range(0, n, BATCH)], dtype=torch.float32)
        self.last_loss = float((torch.stack(losses) * w).sum() / n)

    def accuracy(self):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            pred = torch.cat([self.model(self.xte[s:s + 1024]).argmax(1) for s in range(0, self.xte.shape[0], 1024)])
        return float((pred == self.yte).float().mean())


class PixrankTrainer:
    """``pixrank train``'s model, compiled as ``pixrank train --schedule constant`` compiles it.

    The weights are drawn from ``pixrank.utils`` seeded with ``seed``; the generator is then
    re-seeded with ``seed`` so that ``fit`` draws the epochs' permutations as
    ``numpy.random.default_rng(seed).permutation(n)``, the same as :class:`TorchTrainer`'s.
    """

    def __init__(self, kind, xtr, ytr, xte, yte, seed=SEED):
        try:
            import pixrank
            from pixrank import optimizers, utils
            from pixrank.apps.train_cmd import build_model
        except Exception as exc:
            raise NotAvailable(f"the pixrank framework does not import ({type(exc).__name__}: {exc})") from exc
        utils.set_random_seed(seed)
        self.model = build_model(kind)
        self.model.compile(optimizer=optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        utils.set_random_seed(seed)  # the shuffles: the same stream as TorchTrainer's
        self.data = (xtr, ytr, xte, yte)
        self.pixrank = pixrank

    def epoch(self):
        xtr, ytr, _, _ = self.data
        hist = self.model.fit(xtr, ytr, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        self.last_loss = float(hist.history["loss"][-1])

    def accuracy(self):
        _, _, xte, yte = self.data
        probs = self.model.predict(xte, batch_size=1024)
        return float(np.mean(np.asarray(probs).argmax(axis=1) == yte))


def _train_pair(kind, data, torch, t_err, seed, epochs, times, cpu, failed, notes):
    """Train pixrank and PyTorch from one shared start for ``epochs`` interleaved epochs.

    Appends each epoch's wall and CPU seconds to ``times[side]`` / ``cpu[side]``; records a
    side that raises in ``failed``; returns ``({side: test accuracy}, {side: last-epoch
    training loss})``.
    """
    trainers = {}
    try:
        trainers["pixrank"] = PixrankTrainer(kind, *data, seed=seed)
    except NotAvailable as exc:
        failed.setdefault("pixrank", f"pixrank not available: {exc}")
    except Exception as exc:  # the framework is there but incomplete
        failed.setdefault("pixrank", f"pixrank not available: building/compiling the model failed "
                                     f"({type(exc).__name__}: {exc})")
    if torch is None:
        failed.setdefault("torch", f"torch not available: {t_err}")
    else:
        init = trainers["pixrank"].model if "pixrank" in trainers else None
        try:
            trainers["torch"] = TorchTrainer(torch, kind, *data, seed=seed, init_from=init)
        except ValueError as exc:  # the layers do not correspond: PyTorch's own Glorot draw
            msg = f"PyTorch starts from its own Glorot draw ({exc})"
            if msg not in notes:
                notes.append(msg)
            trainers["torch"] = TorchTrainer(torch, kind, *data, seed=seed)
    for e in range(epochs):
        order = list(trainers) if e % 2 == 0 else list(trainers)[::-1]
        for name in order:
            if name in failed:
                continue
            settle = settle_seconds()
            if settle:
                time.sleep(settle)
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                trainers[name].epoch()
            except Exception as exc:
                failed[name] = f"{name} failed: {type(exc).__name__}: {exc}"
                continue
            times.setdefault(name, []).append(time.perf_counter() - t0)
            cpu.setdefault(name, []).append(time.process_time() - c0)
    acc, loss = {}, {}
    for name, tr in trainers.items():
        if name not in failed:
            acc[name] = tr.accuracy()
            loss[name] = getattr(tr, "last_loss", None)
    shared = bool(trainers.get("torch") is not None and trainers["torch"].shared_init)
    return acc, loss, shared


def run(refs: list[str], threads: list[int], quick: bool, log=print) -> list[dict]:
    rows = []
    try:
        data = load_data(quick)
        data_err = None
    except Exception as exc:
        data, data_err = None, exc
    try:
        torch = import_optional("torch")
        t_err = None
    except NotAvailable as exc:
        torch, t_err = None, exc
    for kind in MODELS:
        epochs = 1 if quick else EPOCHS_FULL[kind]
        n_seeds = 1 if quick else SEEDS_FULL[kind]
        for nt in threads:
            set_threads(nt)
            notes, failed = [], {}
            times, cpu = {}, {}
            seeds = [SEED + 100 * nt + i for i in range(n_seeds)]  # each row trains afresh
            accs, losses, shared = [], [], []
            if data is None:
                notes.append(f"not available: Fashion-MNIST does not load ({type(data_err).__name__}: {data_err})")
            else:
                for seed in seeds:
                    a, lo, sh = _train_pair(kind, data, torch, t_err, seed, epochs, times, cpu, failed, notes)
                    accs.append(a)
                    losses.append(lo)
                    shared.append(sh)
            notes += list(failed.values())
            sides = [s for s in ("pixrank", "torch") if s not in failed and times.get(s)]
            acc = {s: float(np.mean([a[s] for a in accs])) for s in sides if all(s in a for a in accs) and accs}
            loss = {s: float(np.mean([lo[s] for lo in losses])) for s in sides
                    if losses and all(lo.get(s) is not None for lo in losses)}
            if shared and all(shared):
                notes.append("both sides start from the same Glorot-uniform weights and see the same batches"
                             + (f"; accuracy: mean over {n_seeds} such runs (seeds)" if n_seeds > 1 else ""))
            timing = {name: {"median_s": float(np.median(ts)), "min_s": float(min(ts)), "samples": ts,
                             "cpu_median_s": float(np.median(cpu[name]))}
                      for name, ts in times.items() if ts and name not in failed}
            check = {}
            if "pixrank" in acc and "torch" in acc:
                gap = acc["pixrank"] - acc["torch"]
                floor = 0.2
                ok = min(acc.values()) > floor
                runs = f" (mean of {n_seeds} runs)" if n_seeds > 1 else ""
                detail = (f"test accuracy{runs} pixrank {acc['pixrank']:.4f}, torch {acc['torch']:.4f} "
                          f"(gap {gap * 100:+.2f} points; both above {floor}: {ok})")
                if "pixrank" in loss and "torch" in loss:
                    detail += (f"; training loss in the last epoch pixrank {loss['pixrank']:.4f}, "
                               f"torch {loss['torch']:.4f}")
                check["torch"] = {"ok": ok, "acc_gap": gap, "detail": detail}
            n_train = data[0].shape[0] if data is not None else 0
            row = make_row(GROUP, f"{kind} (batch {BATCH}, Adam, {n_train} images)", nt, timing, ["torch"],
                           unit="epoch", check=check, notes=notes,
                           extra={"epochs": epochs, "accuracy": acc, "train_loss": loss, "model": kind,
                                  "n_train": n_train, "seeds": seeds,
                                  "accuracy_per_seed": accs, "train_loss_per_seed": losses,
                                  "shared_init": bool(shared) and all(shared)})
            rows.append(row)
            log(f"  training {kind} t={nt}: " + ", ".join(
                f"{s} {fmt_s(t['median_s'])}/epoch acc {acc.get(s, float('nan')):.4f}" for s, t in timing.items())
                + (f" [{'; '.join(notes)}]" if notes else ""))
    return rows

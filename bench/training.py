"""Training: seconds per epoch on Fashion-MNIST and test accuracy, pixrank against PyTorch.

Models (``pixrank.apps.train_cmd.build_model``, the ones ``pixrank train`` trains):

* ``mlp`` — the classic Keras model: Flatten -> Dense(200, relu) -> Dense(60, relu) ->
  Dense(10, softmax);
* ``cnn`` — Conv2D(32, 3, relu, same) -> MaxPool2D -> Conv2D(64, 3, relu, same) ->
  MaxPool2D -> Flatten -> Dense(128, relu) -> Dense(10, softmax).

Both sides: full Fashion-MNIST (60,000 training, 10,000 test images from
``/usr/share/datasets/fashion-mnist``, or wherever ``pixrank.datasets.fashion_mnist``
finds them), pixels / 255, batch 128 with a fresh shuffle every epoch (the last, partial
batch included), Adam (lr 1e-3, betas 0.9/0.999, epsilon 1e-7 as Keras), sparse
categorical cross-entropy on the logits (PyTorch's ``F.cross_entropy``; pixrank's fused
softmax cross-entropy kernel), Glorot-uniform weights and zero biases (PyTorch:
``nn.init.xavier_uniform_`` and ``zeros_``, the same fans for Linear and Conv2d). PyTorch
runs its natural NCHW layout with a plain loop over index tensors (no DataLoader, whose
worker overhead would flatter pixrank); pixrank runs ``model.fit(..., epochs=1,
verbose=0)`` once per epoch.

The epochs of the two sides alternate (pixrank, PyTorch, then PyTorch, pixrank, ...);
the row reports each side's median seconds per epoch (3 epochs of the mlp, 2 of the cnn,
whose median is then the mean of its first, warm-up epoch and its second) and the test
accuracy after the same number of epochs. ``--quick``: 512 training and 256 test images,
one epoch.

Check: each side's accuracy is above chance (0.2 with 10 classes) in quick mode; the full
run records both accuracies and their gap (the target is equal accuracy within 0.5
points).
"""
from __future__ import annotations

import time

import numpy as np

from .common import NotAvailable, fmt_s, import_optional, make_row, set_threads

GROUP = "training"
PROFILES = {"machine": ["torch"]}
EPOCHS_FULL = {"mlp": 3, "cnn": 2}
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


class TorchTrainer:
    """A plain PyTorch training loop equivalent to Keras' ``fit(batch_size=128, shuffle=True)``."""

    def __init__(self, torch, kind, xtr, ytr, xte, yte):
        self.torch = torch
        torch.manual_seed(SEED)
        self.model = torch_model(torch, kind)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
        nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
        self.xtr, self.ytr = nchw(xtr), torch.from_numpy(ytr)
        self.xte, self.yte = nchw(xte), torch.from_numpy(yte)
        self.gen = torch.Generator().manual_seed(SEED)

    def epoch(self):
        torch, F = self.torch, self.torch.nn.functional
        self.model.train()
        n = self.xtr.shape[0]
        perm = torch.randperm(n, generator=self.gen)
        for s in range(0, n, BATCH):
            idx = perm[s:s + BATCH]
            xb, yb = self.xtr[idx], self.ytr[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()

    def accuracy(self):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            pred = torch.cat([self.model(self.xte[s:s + 1024]).argmax(1) for s in range(0, self.xte.shape[0], 1024)])
        return float((pred == self.yte).float().mean())


class PixrankTrainer:
    """``pixrank train``'s model, compiled as ``pixrank train`` compiles it."""

    def __init__(self, kind, xtr, ytr, xte, yte):
        try:
            import pixrank
            from pixrank import optimizers, utils
            from pixrank.apps.train_cmd import build_model
        except Exception as exc:
            raise NotAvailable(f"the pixrank framework does not import ({type(exc).__name__}: {exc})") from exc
        utils.set_random_seed(SEED)
        self.model = build_model(kind)
        self.model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                           metrics=["accuracy"])
        self.data = (xtr, ytr, xte, yte)
        self.pixrank = pixrank

    def epoch(self):
        xtr, ytr, _, _ = self.data
        self.model.fit(xtr, ytr, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)

    def accuracy(self):
        _, _, xte, yte = self.data
        probs = self.model.predict(xte, batch_size=1024)
        return float(np.mean(np.asarray(probs).argmax(axis=1) == yte))


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
    for kind in ("mlp", "cnn"):
        epochs = 1 if quick else EPOCHS_FULL[kind]
        for nt in threads:
            set_threads(nt)
            notes = []
            trainers = {}
            if data is None:
                notes.append(f"not available: Fashion-MNIST does not load ({type(data_err).__name__}: {data_err})")
            else:
                try:
                    trainers["pixrank"] = PixrankTrainer(kind, *data)
                except NotAvailable as exc:
                    notes.append(f"pixrank not available: {exc}")
                except Exception as exc:  # the framework is there but incomplete
                    notes.append(f"pixrank not available: building/compiling the model failed "
                                 f"({type(exc).__name__}: {exc})")
                if torch is None:
                    notes.append(f"torch not available: {t_err}")
                else:
                    trainers["torch"] = TorchTrainer(torch, kind, *data)
            times = {name: [] for name in trainers}
            cpu = {name: [] for name in trainers}
            failed = {}
            for e in range(epochs):
                order = list(trainers) if e % 2 == 0 else list(trainers)[::-1]
                for name in order:
                    if name in failed:
                        continue
                    c0, t0 = time.process_time(), time.perf_counter()
                    try:
                        trainers[name].epoch()
                    except Exception as exc:
                        failed[name] = f"{name} failed: {type(exc).__name__}: {exc}"
                        continue
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            notes += list(failed.values())
            acc = {}
            for name, tr in trainers.items():
                if name not in failed:
                    acc[name] = tr.accuracy()
            timing = {name: {"median_s": float(np.median(ts)), "min_s": float(min(ts)), "samples": ts,
                             "cpu_median_s": float(np.median(cpu[name]))}
                      for name, ts in times.items() if ts and name not in failed}
            check = {}
            if "pixrank" in acc and "torch" in acc:
                gap = acc["pixrank"] - acc["torch"]
                floor = 0.2
                ok = min(acc.values()) > floor
                check["torch"] = {"ok": ok, "acc_gap": gap,
                                  "detail": f"test accuracy pixrank {acc['pixrank']:.4f}, torch {acc['torch']:.4f} "
                                            f"(gap {gap * 100:+.2f} points; both above {floor}: {ok})"}
            n_train = data[0].shape[0] if data is not None else 0
            row = make_row(GROUP, f"{kind} (batch {BATCH}, Adam, {n_train} images)", nt, timing, ["torch"],
                           unit="epoch", check=check, notes=notes,
                           extra={"epochs": epochs, "accuracy": acc, "model": kind, "n_train": n_train})
            rows.append(row)
            log(f"  training {kind} t={nt}: " + ", ".join(
                f"{s} {fmt_s(t['median_s'])}/epoch acc {acc.get(s, float('nan')):.4f}" for s, t in timing.items())
                + (f" [{'; '.join(notes)}]" if notes else ""))
    return rows

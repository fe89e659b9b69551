"""``pixrank train`` and ``pixrank evaluate``: train the reference Fashion-MNIST models.

``pixrank train --model mlp|cnn --epochs N --batch-size B [--data DIR] [--seed S] --out model.pxr``

* ``mlp``: the classic Keras model — Flatten -> Dense(200, relu) -> Dense(60, relu) ->
  Dense(10, softmax).
* ``cnn``: Conv2D(32, 3, relu, same) -> MaxPool2D -> Conv2D(64, 3, relu, same) -> MaxPool2D
  -> Flatten -> Dense(128, relu) -> Dense(10, softmax).

Both train with Adam (``--lr``, default 1e-3, decayed to 0 over the run by a cosine schedule
unless ``--schedule constant``) on sparse categorical cross-entropy (the
softmax output trains through the fused softmax cross-entropy kernel on its logits), print
the progress bar, the seconds per epoch and the final test accuracy, and save the model.

``pixrank evaluate model.pxr [--data DIR]`` prints the test loss and accuracy of a saved model.

Data: ``--data DIR`` (four MNIST-format IDX files), else ``$PIXRANK_DATA``, else
``/usr/share/datasets/fashion-mnist``, else the embedded sample.
"""
from __future__ import annotations

import os
import time


def build_model(kind: str):
    """The ``mlp`` or ``cnn`` reference model (uncompiled), input ``(28, 28, 1)``."""
    import pixrank as keras

    L = keras.layers
    if kind == "mlp":
        return keras.Sequential([
            L.Flatten(input_shape=(28, 28, 1)),
            L.Dense(200, activation="relu"),
            L.Dense(60, activation="relu"),
            L.Dense(10, activation="softmax"),
        ], name="mlp")
    if kind == "cnn":
        return keras.Sequential([
            L.Conv2D(32, 3, activation="relu", padding="same", input_shape=(28, 28, 1)),
            L.MaxPool2D(),
            L.Conv2D(64, 3, activation="relu", padding="same"),
            L.MaxPool2D(),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dense(10, activation="softmax"),
        ], name="cnn")
    raise ValueError(f"unknown model {kind!r}; choose mlp or cnn")


def _load(data):
    from pixrank.data import resolve_fashion_mnist_dir
    from pixrank.datasets import fashion_mnist

    folder = resolve_fashion_mnist_dir(data)
    (xtr, ytr), (xte, yte) = fashion_mnist.load_data(folder)
    prep = lambda x: x.reshape(-1, 28, 28, 1).astype("float32") / 255  # noqa: E731
    return folder, (prep(xtr), ytr.astype("int64")), (prep(xte), yte.astype("int64"))


def _check_out(out) -> None:
    """Refuse, before any training, an ``--out`` that could not be saved or would destroy a file
    that is not a pixrank model (an existing ``.pxr`` model is replaced, as Keras's ``save`` does)."""
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out: folder {out_dir!r} does not exist")
    if os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a folder; give a file name such as "
                         f"{os.path.join(out, 'model.pxr')!r}")
    if os.path.lexists(out):
        import zipfile
        try:
            with zipfile.ZipFile(out) as z:
                is_model = "pixrank.json" in z.namelist()
        except (OSError, zipfile.BadZipFile):
            is_model = False
        if not is_model:
            raise ValueError(f"--out {out!r} exists and is not a pixrank model; refusing to overwrite it "
                             f"(remove it or choose another name)")


def _train(args) -> int:
    import pixrank
    from pixrank import callbacks, optimizers, utils

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads} (leave it out to use all cores)")
    _check_out(args.out)
    if args.threads:
        pixrank.set_num_threads(args.threads)
    if args.seed is not None:
        utils.set_random_seed(args.seed)
    folder, (xtr, ytr), (xte, yte) = _load(args.data)
    print(f"data: {folder} ({len(xtr)} train, {len(xte)} test images)")
    model = build_model(args.model)
    lr = args.lr
    if args.schedule == "cosine":
        steps = -(-len(xtr) // args.batch_size) * args.epochs
        lr = optimizers.schedules.CosineDecay(args.lr, decay_steps=steps)
    model.compile(optimizer=optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if args.verbose:
        model.summary()
    times = []

    class _Timer(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(xtr, ytr, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose,
              validation_data=(xte, yte) if args.validate else None,
              callbacks=[_Timer(), callbacks.TerminateOnNaN()])
    loss, acc = model.evaluate(xte, yte, batch_size=1024, verbose=0)
    model.save(args.out)
    per = sorted(times)[len(times) // 2] if times else float("nan")
    print(f"seconds per epoch: median {per:.2f} (all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {acc:.4f}")
    print(f"saved {args.out}")
    return 0


def _evaluate(args) -> int:
    import numpy as np

    from pixrank.nn import load_model

    model = load_model(args.model_path)
    folder, _, (xte, yte) = _load(args.data)
    probs = model.predict(xte, batch_size=args.batch_size)
    if probs.ndim != 2 or probs.shape[1] != 10:
        raise ValueError(f"{args.model_path}: the model outputs shape {probs.shape[1:]}, expected 10 class scores")
    acc = float(np.mean(probs.argmax(axis=1) == yte))
    print(f"data: {folder} ({len(xte)} test images)")
    if getattr(model, "loss", None) is not None:
        res = model.evaluate(xte, yte, batch_size=args.batch_size, verbose=0, return_dict=True)
        print(f"test loss: {res['loss']:.4f}")
    print(f"test accuracy: {acc:.4f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train the mlp or cnn reference model on Fashion-MNIST",
                       description="Train a reference model on Fashion-MNIST and save it (.pxr).")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning-rate schedule: cosine decay to 0 over the run (default) or constant")
    p.add_argument("--data", default=None, help="folder with the four IDX files (default: $PIXRANK_DATA, "
                   "/usr/share/datasets/fashion-mnist, else the embedded sample)")
    p.add_argument("--seed", type=int, default=None, help="random seed (repeatable run)")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    p.add_argument("--validate", action="store_true", help="report test loss/accuracy after every epoch")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    p.add_argument("--out", required=True, help="where to save the trained model (.pxr)")
    p.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test accuracy of a saved model on Fashion-MNIST",
                       description="Evaluate a saved model (.pxr) on the Fashion-MNIST test set.")
    e.add_argument("model_path", metavar="model.pxr")
    e.add_argument("--data", default=None, help="folder with the IDX files (default as for train)")
    e.add_argument("--batch-size", type=int, default=1024)
    e.set_defaults(func=_evaluate)

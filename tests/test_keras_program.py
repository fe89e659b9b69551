"""The Keras program of issue 3, unmodified except ``import pixrank as keras`` (and, to fit
the test budget, 2 epochs instead of 10), on the embedded sample (6,000 train / 1,000 test).

Accuracy floor: over seeds 0-7 this program reached 0.782-0.810 test accuracy on the
sample after 2 epochs (measured 2026-11-29, this machine); the floor 0.72 is safely below
and far above chance (0.10). The program itself sets no seed, so the floor must hold for
any initialisation.
"""
from __future__ import annotations

import ast
import contextlib
import io

import pytest

from pixrank.data import SAMPLE_DIR

PROGRAM = """
import pixrank as keras          # the only line changed
model = keras.Sequential([
    keras.layers.Flatten(input_shape=(28, 28, 1)),
    keras.layers.Dense(200, activation='relu'),
    keras.layers.Dense(60, activation='relu'),
    keras.layers.Dense(10, activation='softmax'),
])
model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
(x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
x_train = x_train.reshape(-1, 28, 28, 1).astype('float32') / 255
x_test = x_test.reshape(-1, 28, 28, 1).astype('float32') / 255
model.fit(x_train, keras.utils.to_categorical(y_train, 10), batch_size=128, epochs=10,
          validation_data=(x_test, keras.utils.to_categorical(y_test, 10)))
print(model.evaluate(x_test, keras.utils.to_categorical(y_test, 10)))
"""

FLOOR = 0.72


def run_program(monkeypatch, epochs):
    monkeypatch.setenv("PIXRANK_DATA", SAMPLE_DIR)
    src = PROGRAM.replace("epochs=10", f"epochs={epochs}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(src, "keras_program.py", "exec"), {"__name__": "__main__"})
    return out.getvalue()


def test_keras_program_on_the_sample(monkeypatch):
    text = run_program(monkeypatch, 2)
    lines = text.strip().splitlines()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "val_accuracy: " in text
    assert "47/47 [==============================]" in text  # 6000 / 128 steps
    loss, acc = ast.literal_eval(lines[-1])
    assert 0 < loss < 1.0
    assert acc >= FLOOR, f"test accuracy {acc} below the measured floor {FLOOR}"


@pytest.mark.slow
def test_keras_program_full_data(monkeypatch):
    """The issue's bar: >= 89.0 % on the full Fashion-MNIST within 10 epochs (PIXRANK_SLOW=1)."""
    import os
    full = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(full):
        pytest.skip("full Fashion-MNIST not installed")
    monkeypatch.setenv("PIXRANK_DATA", full)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(PROGRAM, "keras_program.py", "exec"), {"__name__": "__main__"})
    loss, acc = ast.literal_eval(out.getvalue().strip().splitlines()[-1])
    assert acc >= 0.89

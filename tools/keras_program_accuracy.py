"""The issue's Keras program (``import pixrank as keras``), run for EPOCHS epochs with a seed, printing
the test accuracy after every epoch and the final ``evaluate`` as one JSON line.

Usage: ``python tools/keras_program_accuracy.py SEED [EPOCHS=20]`` (full Fashion-MNIST where
``pixrank.datasets.fashion_mnist.load_data()`` finds it, e.g. Debian's dataset-fashion-mnist).
The same recipe in PyTorch, for comparison: ``tools/keras_program_accuracy_torch.py``.
"""
import sys, time, json
import pixrank as keras
seed = int(sys.argv[1]); epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
keras.utils.set_random_seed(seed)
model = keras.Sequential([
    keras.layers.Flatten(input_shape=(28, 28, 1)),
    keras.layers.Dense(200, activation='relu'),
    keras.layers.Dense(60, activation='relu'),
    keras.layers.Dense(10, activation='softmax'),
])
model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
(x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
assert x_train.shape[0] == 60000
x_train = x_train.reshape(-1, 28, 28, 1).astype('float32') / 255
x_test = x_test.reshape(-1, 28, 28, 1).astype('float32') / 255
t = time.time()
h = model.fit(x_train, keras.utils.to_categorical(y_train, 10), batch_size=128, epochs=epochs,
          validation_data=(x_test, keras.utils.to_categorical(y_test, 10)), verbose=0)
ev = model.evaluate(x_test, keras.utils.to_categorical(y_test, 10), verbose=0)
va = h.history['val_accuracy']
print(json.dumps({"seed": seed, "epochs": epochs, "val": [round(a, 4) for a in va], "final": ev, "s": time.time() - t}))

"""The Keras program's recipe in PyTorch (``pip install '.[bench]'``): Linear 784-200-60-10 with ReLU,
``xavier_uniform_`` weights and zero biases (Keras' Glorot-uniform/zeros), Adam(lr 1e-3, eps 1e-7 as
Keras), batch 128 with a fresh shuffle per epoch, ``F.cross_entropy`` on the logits; prints the test
accuracy after every epoch as one JSON line.

Usage: ``python tools/keras_program_accuracy_torch.py SEED [EPOCHS=20]``.
"""
import sys, json, time, numpy as np, torch
import pixrank
torch.set_num_threads(1)
seed = int(sys.argv[1]); epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
torch.manual_seed(seed); rng = np.random.default_rng(seed)
(x, y), (xt, yt) = pixrank.datasets.fashion_mnist.load_data()
x = torch.from_numpy(x.reshape(-1, 784).astype(np.float32) / 255); y = torch.from_numpy(y.astype(np.int64))
xt = torch.from_numpy(xt.reshape(-1, 784).astype(np.float32) / 255); yt = torch.from_numpy(yt.astype(np.int64))
m = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 60), torch.nn.ReLU(), torch.nn.Linear(60, 10))
for mod in m:
    if isinstance(mod, torch.nn.Linear):
        torch.nn.init.xavier_uniform_(mod.weight); torch.nn.init.zeros_(mod.bias)
opt = torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-7)
val = []
for ep in range(epochs):
    perm = torch.from_numpy(rng.permutation(60000))
    for s in range(0, 60000, 128):
        idx = perm[s:s + 128]
        loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        val.append(round(float((m(xt).argmax(1) == yt).float().mean()), 4))
print(json.dumps({"seed": seed, "val": val}))

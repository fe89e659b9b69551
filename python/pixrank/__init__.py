"""pixrank: an image search engine on its own small deep-learning framework.

The top-level namespace is Keras-shaped, so that the classic Keras programs run with
``import pixrank as keras``::

    import pixrank as keras
    model = keras.Sequential([keras.layers.Flatten(input_shape=(28, 28, 1)),
                              keras.layers.Dense(10, activation="softmax")])

Sub-modules are imported lazily (on first attribute access) so that ``import pixrank``
and the ``pixrank`` command start fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# attribute -> (module, attribute or None for the module itself)
_LAZY = {
    # kernels / runtime
    "ops": ("pixrank.ops", None),
    "info": ("pixrank.ops", "info"),
    "set_num_threads": ("pixrank.ops", "set_num_threads"),
    "get_num_threads": ("pixrank.ops", "get_num_threads"),
    "autograd": ("pixrank.autograd", None),
    # framework (Keras names)
    "nn": ("pixrank.nn", None),
    "layers": ("pixrank.nn.layers", None),
    "losses": ("pixrank.nn.losses", None),
    "optimizers": ("pixrank.nn.optimizers", None),
    "metrics": ("pixrank.nn.metrics", None),
    "callbacks": ("pixrank.nn.callbacks", None),
    "initializers": ("pixrank.nn.initializers", None),
    "Sequential": ("pixrank.nn", "Sequential"),
    "Model": ("pixrank.nn", "Model"),
    "load_model": ("pixrank.nn", "load_model"),
    "datasets": ("pixrank.datasets", None),
    "utils": ("pixrank.utils", None),
    "data": ("pixrank.data", None),
    # search engine
    "text": ("pixrank.text", None),
    "search": ("pixrank.search", None),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'pixrank' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

"""Keras-style data sets: ``pixrank.datasets.fashion_mnist.load_data()`` and
``pixrank.datasets.mnist.load_data()`` (uint8 arrays like ``keras.datasets``)."""
from . import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]

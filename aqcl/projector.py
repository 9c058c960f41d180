"""AQCL projector g(.) (Sec. 4.1): z = g(h), a 3-layer MLP with leaky-ReLU activations."""
from __future__ import annotations

import tf_keras as keras

__all__ = ["Projector"]


class Projector(keras.layers.Layer):
    """Dense(h1) -> LeakyReLU -> Dense(h2) -> LeakyReLU -> Dense(z_dim) (linear output).

    Args:
      z_dim: output dimension (paper: >= 32 needed; default 64).
      hidden_units: the two hidden widths (default (128, 128)).
      negative_slope: leaky-ReLU slope (default 0.01, PyTorch's default; the paper used PyTorch).
    """

    def __init__(self, z_dim=64, hidden_units=(128, 128), negative_slope=0.01, **kwargs):
        super().__init__(**kwargs)
        self.z_dim = int(z_dim)
        self.hidden_units = tuple(int(h) for h in hidden_units)
        self.negative_slope = float(negative_slope)
        if len(self.hidden_units) != 2:
            raise ValueError("the projector has 3 layers: give exactly 2 hidden widths")
        self.dense = [keras.layers.Dense(h, name=f"dense_{i}")
                      for i, h in enumerate(self.hidden_units)]
        self.act = [keras.layers.LeakyReLU(alpha=self.negative_slope, name=f"act_{i}")
                    for i in range(len(self.hidden_units))]
        self.out = keras.layers.Dense(self.z_dim, name="dense_out")

    def call(self, h):
        x = h
        for d, a in zip(self.dense, self.act):
            x = a(d(x))
        return self.out(x)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(z_dim=self.z_dim, hidden_units=list(self.hidden_units),
                   negative_slope=self.negative_slope)
        return cfg

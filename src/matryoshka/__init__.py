"""matryoshka: Matryoshka Representation Learning, from training to serving.

Train embeddings whose every prefix ``z[:, :m]`` is useful, compare them with the baselines at
every size, and search at any size. ``import matryoshka`` loads neither faiss, matplotlib,
torchvision nor sentence-transformers; those load inside the functions that need them.
"""

from matryoshka.dims import interpolated_dims, nesting_dims, truncate, validate_dims

__version__ = "0.1.0"

__all__ = ["__version__", "interpolated_dims", "nesting_dims", "truncate", "validate_dims"]

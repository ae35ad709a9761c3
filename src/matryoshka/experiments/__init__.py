"""Side-by-side comparisons and reproductions, built on every layer below; nothing imports them.

- :mod:`~matryoshka.experiments.compare`: MRL, MRL-E, FF per size, PCA and truncation at every
  size (``matryoshka demo``);
- :mod:`~matryoshka.experiments.cifar10`: the paper's image claims (``reproduce cifar10``);
- :mod:`~matryoshka.experiments.scifact`: Matryoshka fine-tuning of a sentence encoder
  (``reproduce scifact``);
- :mod:`~matryoshka.experiments.cache`: trained text models and encoded matrices, reused;
- ``*_report`` modules render each report from its results dict alone (``--report-only``);
  :mod:`~matryoshka.experiments.html_report` renders any of them as one HTML page
  (``matryoshka report``).
"""

from matryoshka.experiments.cifar10 import reproduce_cifar10
from matryoshka.experiments.cifar10_report import render_cifar10
from matryoshka.experiments.compare import (
    METHODS,
    EncodedSplits,
    compare_methods,
    render_comparison,
    run_demo,
)
from matryoshka.experiments.html_report import render_report, write_report
from matryoshka.experiments.scifact import ScifactConfig, reproduce_scifact
from matryoshka.experiments.scifact_report import render_scifact

__all__ = [
    "METHODS",
    "EncodedSplits",
    "ScifactConfig",
    "compare_methods",
    "render_cifar10",
    "render_comparison",
    "render_report",
    "render_scifact",
    "reproduce_cifar10",
    "reproduce_scifact",
    "run_demo",
    "write_report",
]

"""Search Matryoshka embeddings at any prefix size: one stored copy, exact or funnel search.

``MatryoshkaIndex`` stores each vector once and searches any prefix or a funnel of prefixes;
``exact_search(xq, xb, k)`` is the blocked brute-force search it is built on; funnels are written
as text with ``parse_funnel`` / ``format_funnel`` and checked with ``check_funnel``;
``recall_at_k`` compares a search with an exact one; ``plan_storage`` picks a size and a precision
for a memory budget (``matryoshka.viz.plan_table`` renders the plan). faiss
(``pip install 'matryoshka[index]'``) loads only when an approximate first stage is built.
"""

from matryoshka.index.core import MatryoshkaIndex
from matryoshka.index.exact import METRICS, exact_search
from matryoshka.index.funnel import FunnelError, check_funnel, format_funnel, parse_funnel
from matryoshka.index.metrics import recall_at_k
from matryoshka.index.planner import parse_bytes, plan_storage
from matryoshka.index.storage import PRECISIONS, bytes_per_vector
from matryoshka.index.vectors import FORMATS, TRANSFORMS, apply_transform, read_vectors

__all__ = [
    "FORMATS",
    "METRICS",
    "TRANSFORMS",
    "apply_transform",
    "read_vectors",
    "PRECISIONS",
    "MatryoshkaIndex",
    "bytes_per_vector",
    "FunnelError",
    "check_funnel",
    "exact_search",
    "format_funnel",
    "parse_bytes",
    "parse_funnel",
    "plan_storage",
    "recall_at_k",
]

"""Search Matryoshka embeddings at any prefix size: one stored copy, exact or funnel search.

``MatryoshkaIndex`` stores each vector once and searches any prefix or a funnel of prefixes;
``exact_search`` is the blocked brute-force search it is built on; ``plan_storage`` picks a size
and a precision for a memory budget. faiss (``pip install 'matryoshka[index]'``) loads only when
an approximate first stage is built.
"""

from matryoshka.index.core import MatryoshkaIndex, check_funnel
from matryoshka.index.exact import METRICS, exact_search
from matryoshka.index.planner import parse_bytes, plan_storage, plan_table
from matryoshka.index.storage import PRECISIONS, bytes_per_vector

__all__ = [
    "METRICS",
    "PRECISIONS",
    "MatryoshkaIndex",
    "bytes_per_vector",
    "check_funnel",
    "exact_search",
    "parse_bytes",
    "plan_storage",
    "plan_table",
]

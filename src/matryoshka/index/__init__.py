"""Search at any prefix size: exact blocked search (more backends arrive with the index issue)."""

from matryoshka.index.exact import METRICS, exact_search

__all__ = ["METRICS", "exact_search"]

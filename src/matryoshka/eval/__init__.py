"""Evaluation at every size from one encoded matrix: classification, 1-NN, result tables,
zero-shot classification and cross-modal recall of dual encoders."""

from matryoshka.eval.adaptive import (
    adaptive_classification,
    cascade,
    pareto_front,
    select_operating_point,
    softmax_confidence,
    thresholds_for_precision,
)
from matryoshka.eval.classification import (
    PCABaseline,
    encode,
    encode_batches,
    evaluate_embeddings,
    head_top1,
    knn1_top1,
    linear_probe_top1,
)
from matryoshka.eval.embeddings import load_embeddings, save_embeddings
from matryoshka.eval.gradcam import gradcam_per_size
from matryoshka.eval.report import int_keys, load_results, merge_results, read_json, save_results
from matryoshka.eval.retrieval import (
    knn_label_accuracy,
    recall_at_k,
    retrieval_metrics,
    run_from_search,
)
from matryoshka.eval.rows import EmbeddingRows, open_embeddings
from matryoshka.eval.shards import Shard, ShardWrite, parse_shard, write_shard
from matryoshka.eval.text import (
    pca_baseline,
    prefix_cosine,
    retention,
    retrieval_per_size,
    spearman,
    sts_per_size,
)
from matryoshka.eval.zeroshot import (
    class_embeddings_at,
    cross_modal_recall_per_size,
    zero_shot_per_size,
)

__all__ = [
    "class_embeddings_at",
    "cross_modal_recall_per_size",
    "zero_shot_per_size",
    "pca_baseline",
    "prefix_cosine",
    "retention",
    "retrieval_per_size",
    "spearman",
    "sts_per_size",
    "adaptive_classification",
    "cascade",
    "pareto_front",
    "select_operating_point",
    "softmax_confidence",
    "thresholds_for_precision",
    "gradcam_per_size",
    "knn_label_accuracy",
    "load_embeddings",
    "recall_at_k",
    "retrieval_metrics",
    "run_from_search",
    "save_embeddings",
    "EmbeddingRows",
    "open_embeddings",
    "Shard",
    "ShardWrite",
    "parse_shard",
    "write_shard",
    "PCABaseline",
    "encode",
    "encode_batches",
    "evaluate_embeddings",
    "head_top1",
    "knn1_top1",
    "linear_probe_top1",
    "load_results",
    "merge_results",
    "int_keys",
    "read_json",
    "save_results",
]

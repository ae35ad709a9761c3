"""``matryoshka report RUN_DIR``: one self-contained HTML page of a run's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from matryoshka.cli._common import add_common, dims_arg

__all__ = ["add_report_command"]


def _run(args: argparse.Namespace) -> int:
    from matryoshka.experiments.html_report import write_report

    if args.map_sample < 3:
        raise ValueError(f"--map-sample must be at least 3 points, got {args.map_sample}")
    out = write_report(
        args.run_dir,
        args.out,
        embeddings=args.embeddings,
        labels=args.labels,
        map_method=args.map_method,
        map_sample=args.map_sample,
        map_sizes=args.map_sizes,
        seed=args.seed,
        auto_map=not args.no_map,
    )
    print(f"wrote {out} ({Path(out).stat().st_size / 1e3:.0f} kB)")
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``matryoshka`` subcommands."""
    p = add_common(
        sub.add_parser(
            "report",
            help="one self-contained HTML page of a run's results (charts, tables, map)",
            description="Write one HTML file (no network needed to view it) from what RUN_DIR "
            "holds: a docs folder with cifar10.json and/or scifact.json (matryoshka reproduce), "
            "or a run folder with results.json (matryoshka demo / compare). Charts show every "
            "value on hover, sizes never trained drawn hollow. With --embeddings (a folder from "
            "matryoshka embed, or an .npy of shape (N, d)) the page adds a 2-D map of the "
            "embedding space with a size slider; a demo / compare run gets one from its MRL model "
            "on the test split unless --no-map.",
        ),
        quiet=False,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a docs folder or a run folder")
    p.add_argument(
        "--out", metavar="FILE.html", help="where to write (default: RUN_DIR/report.html)"
    )
    p.add_argument("--embeddings", metavar="PATH", help="embeddings folder or .npy (N, d) to map")
    p.add_argument("--labels", metavar="PATH", help="labels for --embeddings: .npy or one per line")
    p.add_argument(
        "--map-method", choices=["auto", "pca", "tsne", "umap"], default="auto",
        help="2-D projection of each size (default auto: tsne where openTSNE is installed, "
        "else pca; tsne: openTSNE, umap: umap-learn, extra 'maps')",
    )  # fmt: skip
    p.add_argument("--map-sample", type=int, default=2000, help="points on the map (default 2000)")
    p.add_argument("--map-sizes", type=dims_arg, metavar="M,M,...",
                   help="sizes on the map (default: the trained sizes)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the map's sample and projection")
    p.add_argument("--no-map", action="store_true", help="no map, even for a demo run")
    p.set_defaults(func=_run)

import subprocess
import sys


def test_import_loads_no_optional_dependency():
    code = (
        "import sys, matryoshka, matryoshka.nn, matryoshka.train, matryoshka.eval, "
        "matryoshka.index, matryoshka.data, matryoshka.viz, matryoshka.experiments, "
        "matryoshka.experiments.cifar10, matryoshka.experiments.scifact, matryoshka.cli, "
        "matryoshka.serve, matryoshka.index.engines\n"
        "heavy = [m for m in ('faiss', 'matplotlib', 'torchvision', 'sentence_transformers', "
        "'fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'qdrant_edge', "
        "'qdrant_client', 'pymilvus', 'psycopg', 'pgserver') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

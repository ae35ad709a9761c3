"""The pgvector back end against a real PostgreSQL with the vector extension (from ``pgserver``).

One server for the session in a temporary folder, stopped at the end; every test gets a database
of its own. The generated SQL is parsed with pglast (PostgreSQL's own parser) and run with the
server's psql.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from itertools import count

import engine_contract as contract
import numpy as np
import pytest

pgserver = pytest.importorskip("pgserver", reason="the pgvector tests need pgserver (dev extra)")
psycopg = pytest.importorskip("psycopg", reason="the pgvector back end needs matryoshka[pgvector]")
pglast = pytest.importorskip("pglast", reason="the SQL is checked with pglast (dev extra)")

from matryoshka.index import recall_at_k  # noqa: E402
from matryoshka.index.engines import EngineError, open_engine  # noqa: E402
from matryoshka.index.engines.pgvector import (  # noqa: E402
    PgvectorIndex,
    pgvector_sql,
    write_pgvector_sql,
)
from matryoshka.index.engines.pgvector_sql import vector_text  # noqa: E402

_DATABASES = count()


@pytest.fixture(scope="session")
def server():
    # its own folder, not pytest's: another pytest run's clean-up of old tmp_path folders
    # would delete a running server's data
    folder = tempfile.mkdtemp(prefix="matryoshka-pg-")
    srv = pgserver.get_server(folder, cleanup_mode="stop")
    yield srv
    srv.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def vector_version(server) -> tuple[int, ...]:
    with psycopg.connect(server.get_uri()) as conn:
        (text,) = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    return tuple(int(v) for v in text.split("."))


@pytest.fixture()
def url(server):
    """A fresh database on the session's server."""
    name = f"test_{next(_DATABASES)}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.get_uri(name)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _psql(server, url: str, path) -> subprocess.CompletedProcess:
    psql = pgserver._commands.POSTGRES_BIN_PATH / "psql"
    return subprocess.run([str(psql), url, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _plan(engine: PgvectorIndex, stages, exact: bool = False) -> str:
    """EXPLAIN of the statement a search runs, for one query, under the search's settings."""
    array = "{" + f'"{vector_text(np.ones(engine.d))}"' + "}"
    with engine._conn.transaction(), engine._conn.cursor() as cur:
        for statement in engine._settings(stages[0], exact):
            cur.execute(statement)
        rows = cur.execute("EXPLAIN " + engine.search_sql(stages, exact), [array]).fetchall()
    return "\n".join(r[0] for r in rows)


# ---------------------------------------------------------------- the shared contract
def test_full_shortlist_is_exact(url):
    contract.check_full_shortlist_is_exact(PgvectorIndex, url)


def test_recall_of_the_hnsw_funnel(url):
    def uses_the_graph(engine: PgvectorIndex) -> None:
        assert "Index Scan using recall_m16" in _plan(engine, [(16, 100), (64, 10)])
        assert "Index Scan using recall_m16" not in _plan(engine, [(16, 100), (64, 10)], True)

    contract.check_recall_against_index(PgvectorIndex, url, prepare=uses_the_graph)


def test_export_keeps_ids_and_names(url):
    contract.check_export_keeps_ids_and_names(PgvectorIndex, url)


def test_interrupted_export_resumes(url, monkeypatch):
    contract.check_interrupted_export_resumes(PgvectorIndex, url, monkeypatch)


def test_layout_errors(url):
    contract.check_layout_errors(PgvectorIndex, url)


# ---------------------------------------------------------------- pgvector's own
def test_shortlists_are_not_cut_to_pgvectors_default_ef_search(url):
    index, xq = contract.source_index("ip")
    with contract.export(PgvectorIndex, url, index, "long") as engine:
        D, I = engine.search(xq, funnel=[(16, 300), (32, 300)])  # default ef_search is 40
        assert (I >= 0).all()
        D0, I0 = index.search(xq, funnel=[(16, 300), (32, 300)])
        assert recall_at_k(I, I0, 300) >= 0.97
        # a prefix-sized query: the engine pads it, the prefix expressions ignore the rest
        D1, I1 = engine.search(xq[:, :16], 5, dim=16, exact=True)
        np.testing.assert_array_equal(I1, index.search(xq[:, :16], 5, dim=16)[1])


def test_first_shortlists_past_1000_rows(url, vector_version, monkeypatch):
    index, xq = contract.source_index("cosine")
    with contract.export(PgvectorIndex, url, index, "wide") as engine:
        monkeypatch.setattr(engine, "vector_version", lambda: (0, 7, 4))
        with pytest.raises(EngineError, match="at most 1,000 rows from an HNSW scan"):
            engine.search(xq, funnel=[(16, 1200), (64, 10)])
        _, I = engine.search(xq, 1600)  # size d has no graph here: the scan returns every row
        assert (I[:, : contract.N] >= 0).all() and (I[:, contract.N :] == -1).all()
        monkeypatch.undo()
        if vector_version < (0, 8):
            pytest.skip(f"pgvector {vector_version} has no iterative scans (0.8 and later)")
        _, I = engine.search(xq, funnel=[(16, contract.N), (64, 10)])  # iterative scan
    np.testing.assert_array_equal(I, index.search(xq, 10)[1])


def test_vector_prefix_index_without_halfvec(url):
    index, xq = contract.source_index("l2")
    with contract.export(PgvectorIndex, url, index, "plain", halfvec=False,
                         full_index=True) as engine:  # fmt: skip
        assert "vector_l2_ops" in engine.table.index_sql()[0]
        assert "Index Scan using plain_m16" in _plan(engine, [(16, 100), (64, 10)])
        assert "Index Scan using plain_m64" in _plan(engine, [(64, 10)])  # full_index
        _, I = engine.search(xq, funnel=[(16, 100), (64, 10)])
    assert recall_at_k(I, index.search(xq, funnel=[(16, 100), (64, 10)])[1], 10) >= 0.99


def test_array_flavour_engine_equals_the_index(url):
    # the spelling for pgvector < 0.7; it runs on every version
    index, xq = contract.source_index("cosine")
    with contract.export(PgvectorIndex, url, index, "arr", flavour="array") as engine:
        assert "real[]" in engine.table.index_sql()[0]
        assert "Index Scan using arr_m16" in _plan(engine, [(16, 100), (64, 10)])
        _, I = engine.search(xq, funnel=[(16, 200), (64, 10)])
        D, I_exact = engine.search(xq, funnel=[(16, contract.N), (64, 10)], exact=True)
    D0, I0 = index.search(xq, 10)
    np.testing.assert_array_equal(I_exact, I0)
    np.testing.assert_allclose(D, D0, atol=1e-5)
    assert recall_at_k(I, I0, 10) >= 0.99


def test_bad_addresses_and_tables(url, vector_version):
    with pytest.raises(EngineError, match="cannot reach PostgreSQL at postgresql://nobody@"):
        PgvectorIndex("postgresql://nobody@127.0.0.1:1/x", d=8)
    with pytest.raises(EngineError, match="'mysql://x' is not a PostgreSQL address"):
        PgvectorIndex("mysql://x", d=8)
    with pytest.raises(EngineError) as err:
        PgvectorIndex("postgresql://me:secret@127.0.0.1:1/x", d=8)
    assert "secret" not in str(err.value) and "me:***@127.0.0.1:1" in str(err.value)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE plain (id bigint, embedding real[])")
    with pytest.raises(EngineError, match="'plain' .* was not written by matryoshka"):
        open_engine("pgvector", url, collection="plain", d=8)
    with PgvectorIndex(url, d=8, sizes=[4], collection="small") as engine:
        assert engine.table.flavour == ("subvector" if vector_version >= (0, 7) else "array")
    with pytest.raises(EngineError, match="dimension mismatch.*holds d=8 vectors, not d=16"):
        PgvectorIndex(url, d=16, collection="small")
    with pytest.raises(EngineError, match="created with flavour='.*', not 'bogus'"):
        PgvectorIndex(url, collection="small", flavour="bogus")


def test_bytes_per_vector_matches_what_postgres_stores(url):
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 256)).astype(np.float32)
    with PgvectorIndex(url, d=256, sizes=[64], build_indexes=False) as engine:
        engine.add(xb)
        engine.create_indexes()
        with engine._conn.cursor() as cur:
            heap, pkey, graph = cur.execute(
                "SELECT pg_table_size('matryoshka'), pg_relation_size('matryoshka_pkey'), "
                "pg_relation_size('matryoshka_m64')"
            ).fetchone()
        est = PgvectorIndex.bytes_per_vector(256, [64], halfvec=engine.table.halfvec)
    assert est["vectors"] == pytest.approx(heap / 3000, rel=0.05)
    assert est["ids"] == pytest.approx((pkey - 2 * 8192) / 3000, rel=0.1)  # less meta and root
    assert est["index"] == pytest.approx(graph / 3000, rel=0.05)
    big = PgvectorIndex.bytes_per_vector(1024, [256], name_bytes=10, halfvec=False)
    assert big["vectors"] > 4 * 1024 and big["names"] == 11
    assert big["total"] == pytest.approx(sum(v for k, v in big.items() if k != "total"))


# ---------------------------------------------------------------- the SQL file
def _without_copy_data(text: str) -> str:
    """The file less COPY's data lines (rows, not SQL), for the parser."""
    return re.sub(r"(FROM stdin;\n).*?\n\\\.\n", r"\1", text, flags=re.S)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("flavour", ["subvector", "array"])
def test_pgvector_sql_parses(metric, flavour):
    sql = pgvector_sql(512, metric, m=128, k1=300, k=20, flavour=flavour, table="docs")
    statements = pglast.parse_sql(sql)
    kinds = [type(s.stmt).__name__ for s in statements]
    assert kinds == ["VariableSetStmt", "CreateExtensionStmt", "CreateStmt", "CommentStmt",
                     "IndexStmt", "VacuumStmt", "CreateFunctionStmt"]  # fmt: skip
    op = {"cosine": "<=>", "ip": "<#>", "l2": "<->"}[metric]
    ops = f"{'halfvec' if flavour == 'subvector' else 'vector'}_{metric}_ops"
    assert "USING hnsw (" in sql and ops in sql
    body = sql.split("$$")[1]  # the function's body: q and k are its arguments
    assert len(pglast.parse_sql(body)) == 1
    assert body.count("LIMIT") == 2 and "LIMIT 300" in body and f"s1.embedding {op} q" in body
    assert "SET hnsw.ef_search = 300" in sql


@pytest.mark.parametrize("flavour", ["subvector", "array"])
def test_sql_file_runs_and_matches_the_engine(server, url, vector_version, tmp_path, flavour):
    index, xq = contract.source_index("cosine")
    funnel = [(16, 200), (contract.D, 10)]
    path = write_pgvector_sql(index, tmp_path / "ix.sql", funnel=funnel, table="docs",
                              flavour=flavour, batch_size=400)  # fmt: skip
    text = path.read_text()
    statements = pglast.parse_sql(_without_copy_data(text))
    assert sum(type(s.stmt).__name__ == "CopyStmt" for s in statements) == 4  # 1500 / 400
    assert not list(tmp_path.glob(".ix.sql.*"))  # the temporary file was renamed into place
    if flavour == "subvector" and vector_version < (0, 7):  # parsed above, cannot run here
        pytest.skip(f"pgvector {vector_version} has no subvector (0.7 and later)")
    for _ in range(2):  # loading twice leaves one copy of each row
        done = _psql(server, url, path)
        assert done.returncode == 0, done.stderr
    with PgvectorIndex(url, collection="docs") as engine:  # the layout comes from the file
        assert (engine.count(), engine.sizes, engine.table.flavour) == (contract.N, (16, 64),
                                                                        flavour)  # fmt: skip
        D, I = engine.search(xq, funnel=funnel)
        names = engine.names_of(I)
        with engine._conn.cursor() as cur:
            rows = [cur.execute("SELECT id, name, distance FROM docs_search(%s::vector(64))",
                                [vector_text(q)]).fetchall() for q in xq]  # fmt: skip
    np.testing.assert_array_equal([[r[0] for r in q] for q in rows], I)
    assert [[r[1] for r in q] for q in rows] == names
    np.testing.assert_allclose([[1 - r[2] for r in q] for q in rows], D, atol=1e-6)
    assert recall_at_k(I, index.search(xq, funnel=funnel)[1], 10) >= 0.99


def test_docstring_example_runs():
    import doctest

    from matryoshka.index.engines import pgvector_sql as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_command_line_writes_the_sql_and_loads_the_database(url, tmp_path, capsys):
    from matryoshka.cli import main
    from matryoshka.index import MatryoshkaIndex

    xb, xq = contract.data(n=300, nq=4)
    ids = 50 + np.arange(300)
    MatryoshkaIndex(64).add(xb, ids=ids, names=[f"d{i}" for i in ids]).save(tmp_path / "ix")
    np.save(tmp_path / "q.npy", xq)
    export = ["index", "export", str(tmp_path / "ix"), "--to", "pgvector", "--funnel",
              "16:300,64:5", "--quiet"]  # fmt: skip
    assert main([*export, "--out", str(tmp_path / "ix.sql")]) == 0
    sql = (tmp_path / "ix.sql").read_text()
    assert "CREATE INDEX" in sql and "USING hnsw" in sql and "COPY" in sql
    assert main([*export, "--url", url]) == 0
    assert "it holds 300, sizes [16, 64]" in capsys.readouterr().out
    query = ["--queries", str(tmp_path / "q.npy"), "--funnel", "16:300,64:5", "--quiet"]
    assert main(["search", "--engine", "pgvector", "--url", url, "--exact", *query]) == 0
    engine = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert main(["search", str(tmp_path / "ix"), *query]) == 0
    index = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [r["ids"] for r in engine] == [r["ids"] for r in index]
    assert [r["names"] for r in engine] == [r["names"] for r in index]


def test_index_builds_get_the_memory_their_graphs_need(url, monkeypatch):
    from matryoshka.index.engines.pgvector_sql import PgTable

    xb, _ = contract.data(n=2000)
    record = (
        "CREATE TEMP TABLE IF NOT EXISTS seen AS "
        "SELECT current_setting('maintenance_work_mem') AS v"
    )
    monkeypatch.setattr(PgTable, "index_sql", lambda self: [record])  # what a build would see

    def built_with(engine: PgvectorIndex, **kw) -> str:
        engine.create_indexes(**kw)
        (value,) = engine._conn.execute("SELECT v FROM seen").fetchone()
        engine._conn.execute("DROP TABLE seen")
        return value

    with PgvectorIndex(url, d=64, sizes=[16], build_indexes=False) as engine:
        engine.add(xb)
        assert built_with(engine) == "64MB"  # 2,000 small rows: PostgreSQL's default is plenty
        big = {"index": 100_000.0}  # graphs of 100 kB a row: 2,000 rows want 229 MB
        monkeypatch.setattr(PgvectorIndex, "bytes_per_vector", classmethod(lambda c, *a, **k: big))
        assert built_with(engine) == f"{int(1.2 * 100_000 * 2000) >> 20}MB"
        assert built_with(engine, build_memory="100MB") == f"{10**8 >> 20}MB"  # the cap
        assert built_with(engine, build_memory=None) == "64MB"  # the server's own setting
        (after,) = engine._conn.execute("SHOW maintenance_work_mem").fetchone()
    assert after == "64MB"  # reset once the builds are done

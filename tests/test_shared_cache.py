"""Caches that processes and hosts share: one SQLite file per host, read by all."""

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shiftlab._sqlite_cache import SharedCache, cache_files, cache_problem
from shiftlab.errors import DamagedFile, OutOfSpace

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from shiftlab.judges import CachedJudge, JudgeReply, JudgeRequest
    from shiftlab.shift import EmbeddingCache
    from shiftlab._sqlite_cache import SharedCache

    root, name, host = sys.argv[1], sys.argv[2], sys.argv[3] or None

    class Echo:
        name = "echo"
        def complete(self, requests):
            return [JudgeReply(r.messages[0]["content"].upper()) for r in requests]

    judge = CachedJudge(Echo(), f"{root}/judge.sqlite", chunk_size=5)
    embeddings = EmbeddingCache(f"{root}/embeddings.sqlite")
    where = {"host": host} if host else {}
    rows = SharedCache(f"{root}/rows.sqlite", "rows", ("value",), **where)
    for i in range(60):  # many small transactions, interleaved with the other writer's
        asks = [JudgeRequest(({"role": "user", "content": f"{name}-{i}-{j}"},)) for j in range(5)]
        judge.complete(asks)
        embeddings.put({f"{name}-{i}": np.full(384, i, dtype=np.float32)})
        rows.put({f"{name}-{i}": (f"{name} wrote {i}",)})
    print("done")
    """
)


def _write_together(tmp_path, hosts):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name, host],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, host in zip(("a", "b"), hosts, strict=True)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "done", err


def test_two_processes_write_one_cache(tmp_path):
    from shiftlab.judges import CachedJudge, JudgeRequest
    from shiftlab.shift import EmbeddingCache

    _write_together(tmp_path, ["", ""])
    asks = [
        JudgeRequest(({"role": "user", "content": f"{name}-{i}-{j}"},))
        for name in "ab"
        for i in range(60)
        for j in range(5)
    ]

    class Unreachable:
        name = "echo"

        def complete(self, requests):
            raise AssertionError(f"{len(requests)} requests were not cached")

    replies = CachedJudge(Unreachable(), tmp_path / "judge.sqlite").complete(asks)
    assert [r.text for r in replies] == [a.messages[0]["content"].upper() for a in asks]
    vectors = EmbeddingCache(tmp_path / "embeddings.sqlite").get([f"b-{i}" for i in range(60)])
    assert all(np.array_equal(vectors[f"b-{i}"], np.full(384, i, np.float32)) for i in range(60))
    for path in tmp_path.glob("*.sqlite"):
        assert cache_problem(path, rows=True) is None


def test_two_hosts_write_their_own_files_and_read_each_other(tmp_path):
    _write_together(tmp_path, ["node-a", "node-b"])
    files = cache_files(tmp_path / "rows.sqlite")
    assert [p.name for p in files] == ["rows@node-a.sqlite", "rows@node-b.sqlite"]
    reader = SharedCache(tmp_path / "rows.sqlite", "rows", ("value",), host="node-c")
    found = reader.get([f"{name}-{i}" for name in "ab" for i in range(60)])
    assert found["a-7"] == ("a wrote 7",) and found["b-59"] == ("b wrote 59",)
    assert len(found) == 120


def test_a_damaged_row_is_named_in_this_hosts_file_and_skipped_in_anothers(tmp_path):
    path = tmp_path / "rows.sqlite"
    SharedCache(path, "rows", ("value",), host="other").put({"k": ("theirs",)})
    mine = SharedCache(path, "rows", ("value",), host="me")
    mine.put({"k2": ("mine",)})
    for host in ("me", "other"):
        with sqlite3.connect(tmp_path / f"rows@{host}.sqlite") as db:
            db.execute("UPDATE rows SET value = 'tampered'")
    with pytest.raises(DamagedFile) as caught:
        mine.get(["k2"])
    assert str(caught.value) == (
        f"{tmp_path / 'rows@me.sqlite'}: damaged: the row for key k2 is not what was written; "
        "delete it: it only holds cached results, which the next run computes again"
    )
    with pytest.warns(UserWarning, match="rows@other.sqlite: damaged: the row for key k"):
        assert SharedCache(path, "rows", ("value",), host="third").get(["k"]) == {}
    assert cache_problem(tmp_path / "rows@other.sqlite") is None  # whole, but...
    assert "the row for key k " in cache_problem(tmp_path / "rows@other.sqlite", rows=True)


def test_a_cache_from_before_per_host_files_is_still_read(tmp_path):
    with sqlite3.connect(tmp_path / "judge.sqlite") as db:
        db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, judge, request, reply)")
        db.execute("INSERT INTO replies VALUES ('k', 'j', '{}', 'yes')")
    cache = SharedCache(tmp_path / "judge.sqlite", "replies", ("judge", "request", "reply"))
    assert cache.get(["k"]) == {"k": ("j", "{}", "yes")}


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    (tmp_path / "rows@me.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DamagedFile, match=r"rows@me.sqlite: damaged: not a readable SQLite"):
        SharedCache(tmp_path / "rows.sqlite", "rows", ("value",), host="me")


def test_a_full_disk_while_caching_is_named_and_writes_no_row(tmp_path, monkeypatch):
    cache = SharedCache(tmp_path / "rows.sqlite", "rows", ("value",), host="here")
    cache.put({"kept": ("written before the disk filled",)})
    connect = sqlite3.connect

    def full(*args, **kwargs):
        """A connection to a database that may not grow: SQLite's own SQLITE_FULL."""
        db = connect(*args, **kwargs)
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(sqlite3, "connect", full)
    rows = {f"k{i}": ("x" * 4096,) for i in range(50)}
    with pytest.raises(OutOfSpace) as caught:
        cache.put(rows)
    message = str(caught.value)
    assert message.startswith(f"{cache.writer}: no space left on the device (")
    assert "free on /" in message and "\n" not in message
    monkeypatch.undo()
    assert cache.get(["kept", *rows]) == {"kept": ("written before the disk filled",)}
    assert cache_problem(cache.writer, rows=True) is None

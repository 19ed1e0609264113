"""Leases: owner and expiry in a file; a dead or stalled holder's job is taken over."""

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from shiftlab._lease import HOST, Lease, LeaseLost
from shiftlab.errors import StoreError
from shiftlab.store import Store


def _plant(path, **record) -> None:
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": None,
                                "token": "theirs", **record}))  # fmt: skip


def test_a_live_lease_of_another_host_is_respected_until_it_expires(tmp_path):
    path = tmp_path / ".job.lease"
    _plant(path, expires=time.time() + 0.6)
    lease = Lease(path, ttl=5)
    assert not lease.acquire(blocking=False)
    assert lease.acquire(timeout=5)  # expired after 0.6 s: taken over
    record = json.loads(path.read_text())
    assert record["token"] == lease.token and record["host"] == HOST
    assert record["expires"] > time.time() + 4
    lease.release()
    assert not path.exists()


def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    path = tmp_path / ".job.lease"
    holder = subprocess.run(
        [sys.executable, "-c", f"from shiftlab._lease import Lease; "
         f"Lease({str(path)!r}, ttl=3600).acquire(); import os; os._exit(0)"],
        check=True,
    )  # fmt: skip
    assert holder.returncode == 0 and json.loads(path.read_text())["expires"] > time.time() + 3000
    assert Lease(path).acquire(blocking=False)


def test_renewal_keeps_a_lease_past_its_ttl(tmp_path):
    path = tmp_path / ".job.lease"
    held = Lease(path, ttl=0.6)
    assert held.acquire(blocking=False)
    time.sleep(1.5)
    assert not Lease(path, ttl=0.6).acquire(blocking=False) or pytest.fail("renewal stopped")
    # Nested acquisition is re-entrant; the file goes with the outermost release.
    assert held.acquire(blocking=False)
    held.release()
    assert path.exists()
    held.release()
    assert not path.exists()


def _race(path: str, barrier, results) -> None:
    lease = Lease(path, ttl=30)
    barrier.wait()
    results.put(lease.acquire(blocking=False))
    time.sleep(1.0)  # hold it while the others try


def test_only_one_of_many_takers_gets_an_expired_lease(tmp_path):
    path = tmp_path / ".job.lease"
    _plant(path, expires=time.time() - 1)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_race, args=(str(path), barrier, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = [results.get(timeout=5) for _ in workers]
    assert outcomes.count(True) == 1, outcomes
    assert os.listdir(tmp_path) == [".job.lease"]  # no temporaries or set-aside leases left


def test_a_stalled_holder_that_lost_its_lease_cannot_publish(tmp_path):
    store = Store.open(tmp_path)
    with (
        pytest.raises(LeaseLost, match="the lease expired while held"),
        store.artefact("runs", "r1", {"x": 1}) as folder,
    ):
        (folder / "a.txt").write_text("a")
        lease = store.lock("runs", "r1")
        _plant(lease.path, expires=time.time() + 60)  # another worker took it over
        lease.lost = True  # what the renewer finds on its next round
    assert not store.is_finished("runs", "r1")
    assert not list((tmp_path / "runs").glob(".tmp-*"))
    assert issubclass(LeaseLost, StoreError)


def test_lease_files_do_not_outlive_their_holder(tmp_path):
    store = Store.open(tmp_path)
    with store.artefact("runs", "r1", {"x": 1}) as folder:
        (folder / "a.txt").write_text("a")
        assert (tmp_path / "runs" / ".r1.lease").exists()
    assert sorted(os.listdir(tmp_path / "runs")) == ["r1"]


def test_the_renewer_notices_a_takeover(tmp_path):
    path = tmp_path / ".job.lease"
    lease = Lease(path, ttl=0.6)
    assert lease.acquire(blocking=False)
    _plant(path, expires=time.time() + 60)
    time.sleep(0.5)
    with pytest.raises(LeaseLost):
        lease.check()
    lease.release()
    assert json.loads(path.read_text())["token"] == "theirs"  # not ours to remove


def test_a_holder_on_another_boot_or_machine_waits_for_expiry(tmp_path):
    from shiftlab._lease import BOOT

    path = tmp_path / ".job.lease"
    # Our host name, but another boot (or a container sharing the name): pid says nothing.
    path.write_text(json.dumps({"host": HOST, "boot": f"not-{BOOT}", "pid": 999999,
                                "started": None, "token": "theirs",
                                "expires": time.time() + 60}))  # fmt: skip
    assert not Lease(path).acquire(blocking=False)


def test_an_unreadable_lease_expires_by_age(tmp_path):
    path = tmp_path / ".job.lease"
    path.write_text("")  # a writer died mid-write
    assert not Lease(path, ttl=60).acquire(blocking=False)
    old = time.time() - 120
    os.utime(path, (old, old))
    lease = Lease(path, ttl=60)
    assert lease.acquire(timeout=2)
    lease.release()


def test_a_stalled_holder_finds_its_own_lease_expired(tmp_path):
    lease = Lease(tmp_path / ".job.lease", ttl=30)
    assert lease.acquire(blocking=False)
    lease.check()
    lease._expires = time.time() - 1  # what a process paused past its expiry finds
    with pytest.raises(LeaseLost):
        lease.check()
    lease.release()


def test_sweep_removes_what_killed_workers_left(tmp_path):
    store = Store.open(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    _plant(runs / ".dead.lease", expires=time.time() - 5)
    _plant(runs / ".live.lease", expires=time.time() + 60)
    (runs / ".r.lease.abc.tmp").write_text("{")
    (runs / ".r.lease.abc.stale").write_text("{")
    (runs / ".fresh.lease.def.tmp").write_text("{")
    old = time.time() - 3600
    for name in (".r.lease.abc.tmp", ".r.lease.abc.stale"):
        os.utime(runs / name, (old, old))
    assert store.sweep_leases() == 3
    assert sorted(os.listdir(runs)) == [".fresh.lease.def.tmp", ".live.lease"]


def test_the_lease_time_is_read_when_a_lease_is_made(tmp_path, monkeypatch):
    """A worker forked from a server started earlier reads its creator's setting."""
    monkeypatch.setenv("SHIFTLAB_LEASE_SECONDS", "7.5")
    assert Lease(tmp_path / "a.lease").ttl == 7.5
    monkeypatch.delenv("SHIFTLAB_LEASE_SECONDS")
    assert Lease(tmp_path / "a.lease").ttl == 60.0

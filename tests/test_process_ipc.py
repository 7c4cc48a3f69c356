"""SPEC R7: the process pool talks to its own children only, over anonymous pipes.

Inspects /proc: the descriptors of the parent and of every worker, the system's
listening sockets (/proc/net/unix, tcp, udp) and /dev/shm. A pool must add no socket,
no file, and nothing in /dev/shm to the parent; its workers must hold no listening
socket and no world-writable file; and the pipes a worker uses must lead to the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import sys

import pytest

from ferropool import ProcessPoolExecutor

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux"),
]

ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix: a listening socket
TCP_LISTEN = "0A"


def worker_pid(_=None):
    return os.getpid()


def descriptors(pid: int) -> dict:
    """fd -> what it refers to (``pipe:[inode]``, ``socket:[inode]``, a path...)."""
    found = {}
    folder = f"/proc/{pid}/fd"
    for name in os.listdir(folder):
        try:
            found[int(name)] = os.readlink(f"{folder}/{name}")
        except OSError:
            pass  # closed meanwhile
    return found


def inodes(targets, kind: str) -> set:
    prefix = f"{kind}:["
    return {int(t[len(prefix) : -1]) for t in targets if t.startswith(prefix)}


def listening_sockets() -> set:
    listening = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[3], 16) & ACCEPTING:
                listening.add(int(fields[6]))
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{name}") as table:
                next(table)
                for line in table:
                    fields = line.split()
                    if name.startswith("udp") or fields[3] == TCP_LISTEN:
                        listening.add(int(fields[9]))
        except FileNotFoundError:
            pass
    return listening


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_only_anonymous_pipes_between_the_parent_and_its_workers(method):
    parent = os.getpid()
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    before = descriptors(parent)
    with ProcessPoolExecutor(2, mp_context=mp.get_context(method)) as ex:
        pids = set(ex.map(worker_pid, range(50)))
        pids |= set(ex._processes)
        during = descriptors(parent)
        workers = {pid: descriptors(pid) for pid in pids}
        listening = listening_sockets()

    # The parent gained pipes and nothing else: no socket, no file.
    added = {fd: target for fd, target in during.items() if before.get(fd) != target}
    assert added, "the pool holds no descriptor at all?"
    assert all(target.startswith("pipe:[") for target in added.values()), added
    parent_pipes = inodes(added.values(), "pipe")

    for pid, fds in workers.items():
        targets = list(fds.values())
        # No listening socket anywhere in the worker.
        assert not inodes(targets, "socket") & listening, (pid, fds)
        # No world-writable file.
        for fd, target in fds.items():
            if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
                try:
                    mode = os.stat(target).st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode):
                    assert not mode & stat.S_IWOTH, f"worker {pid} has {target} world-writable"
        # The worker's pipes lead to its parent.
        assert inodes(targets, "pipe") & parent_pipes, (pid, fds, added)

    # Nothing listens on the parent's side either, and nothing was left in /dev/shm.
    assert not inodes(during.values(), "socket") & listening
    shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    assert not shm_after - shm_before

"""A lock in the store: mutual exclusion between processes that apply deletions (or unlearn), on any host.

The lock is a create-only document naming its holder. The holder refreshes it while it works (unlearning a
large model can take longer than ``STALE_LOCK_SECONDS``), so only a holder that stopped refreshing it — or a
dead process on this host — leaves a lock that the next taker breaks.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks import layout
from tasks.errors import Locked
from tasks.storage import Store

STALE_LOCK_SECONDS = 900


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_abandoned(holder: dict[str, Any], host: str) -> bool:
    """A holder that died on this host, or that has not refreshed the lock for ``STALE_LOCK_SECONDS``."""
    dead = holder.get("host") == host and not _pid_alive(int(holder.get("pid", 0)))
    return dead or time.time() - float(holder.get("at", 0)) > STALE_LOCK_SECONDS


def _acquire(store: Store, key: str, me: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not store.write_new(key, json.dumps(me).encode()):
        try:
            holder = store.read_json(key)
        except (FileNotFoundError, json.JSONDecodeError):  # released, or being written: try again
            continue
        if _is_abandoned(holder, me["host"]):
            store.delete(key)
            continue
        if time.monotonic() > deadline:
            raise Locked(f"{store.uri(key)} is held by pid {holder.get('pid')} on {holder.get('host')}")
        time.sleep(0.2)


@contextmanager
def store_lock(store: Store, key: str = layout.APPLY_LOCK, timeout: float = 600.0) -> Iterator[None]:
    """Hold ``key`` for the ``with`` block; an abandoned lock is broken, a live one waited for.

    Raises:
        Locked: a live holder kept the lock for longer than ``timeout`` seconds.
    """
    me = {"pid": os.getpid(), "host": socket.gethostname(), "at": time.time(), "token": uuid.uuid4().hex}
    _acquire(store, key, me, timeout)
    done = threading.Event()
    heartbeat = threading.Thread(target=_refresh, args=(store, key, me, done), daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        done.set()
        heartbeat.join()
        if store.exists(key) and store.read_json(key).get("token") == me["token"]:
            store.delete(key)


def _refresh(store: Store, key: str, me: dict[str, Any], done: threading.Event) -> None:
    """Keep a held lock fresh until ``done``; never re-create one that another process took over."""
    while not done.wait(STALE_LOCK_SECONDS / 6):
        try:
            if store.read_json(key).get("token") != me["token"]:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            return
        store.write_json(key, {**me, "at": time.time()})

"""One writer per store (or per shard of a sharded harvest).

Local stores use an OS file lock (``flock``): the kernel drops it when the holder dies, even on kill -9, so a
rerun after a crash never finds a stale lock. Object stores have no such primitive; there the lock is a lease
object that the holder refreshes every few seconds and that a new writer may take over once it has expired.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType

from store.errors import StoreLockedError
from store.location import StoreLocation

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""A remote lease not refreshed for this long belongs to a dead writer and may be taken over."""


class WriterLock:
    """Exclusive writer lock on ``key`` inside a store; use as a context manager."""

    def __init__(self, location: StoreLocation, key: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.location = location
        self.key = key
        self.lease_seconds = lease_seconds
        self._fd: int | None = None
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.lost = False
        """Set when another process took over the lease (ours lapsed): the holder must stop writing."""

    def _describe(self) -> dict[str, object]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "token": self._token, "time": time.time()}

    def acquire(self) -> WriterLock:
        if self.location.is_local:
            self._acquire_local()
        else:
            self._acquire_lease()
        return self

    def _acquire_local(self) -> None:
        import fcntl

        path = self.location.path(self.key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.read(fd, 4096))
            os.close(fd)
            raise StoreLockedError(
                f"another process is writing to {self.location} (held by {holder}): "
                "wait for it to finish or stop it; two writers on one store are not allowed"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self._describe()).encode())
        self._fd = fd

    def _read_lease(self) -> dict | None:
        try:
            return json.loads(self.location.read_bytes(self.key))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return None

    def _acquire_lease(self) -> None:
        lease = self._read_lease()
        if lease is not None:
            age = time.time() - float(lease.get("time", 0))
            if age < self.lease_seconds:
                raise StoreLockedError(
                    f"another process (pid {lease.get('pid')} on {lease.get('host')}) is writing to "
                    f"{self.location}, last seen {age:.0f}s ago: wait for it, or if it died wait "
                    f"{self.lease_seconds - age:.0f}s for its lease to expire"
                )
            log.warning("taking over an expired writer lease on %s (%.0fs old)", self.location, age)
        self.location.write_bytes_atomic(self.key, json.dumps(self._describe()).encode())
        # Last writer wins on object stores: read back to learn whether a concurrent writer overtook us.
        time.sleep(0.2)
        lease = self._read_lease()
        if lease is None or lease.get("token") != self._token:
            raise StoreLockedError(f"another process took the writer lease on {self.location} at the same moment")
        self._heartbeat = threading.Thread(target=self._refresh, name="store-lease", daemon=True)
        self._heartbeat.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                lease = self._read_lease()
                if lease is not None and lease.get("token") != self._token:
                    self.lost = True
                    log.error("another process took over the writer lease on %s", self.location)
                    return
                self.location.write_bytes_atomic(self.key, json.dumps(self._describe()).encode())
            except OSError as exc:  # a missed heartbeat is survivable; the next one may succeed
                log.warning("could not refresh the writer lease on %s: %s", self.location, exc)

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            return
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join()
            self._heartbeat = None
            lease = self._read_lease()
            if lease is not None and lease.get("token") == self._token:
                self.location.remove(self.key)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _holder(raw: bytes) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on {info['host']}"
    except (ValueError, KeyError):
        return "holder unknown"

"""Group commit: one thread owns the landing store's write connection; concurrent requests share commits.

With synchronous=FULL each commit is an fsync (milliseconds on a disk), so committing every request on
its own would cap throughput at fsyncs per second. A request puts an operation (a function of the
connection) on a queue and waits; the writer thread takes everything queued, runs each operation in its
own SAVEPOINT inside ONE transaction, commits once (one fsync for the group) and only then answers each
request. An operation that raises is rolled back alone, the rest of its group commits; a commit that
fails fails every request of the group, none of which is then stored. A request that gave up waiting
before its operation started is dropped, never applied.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """More requests are waiting for the store than ingest_service.max_pending: answer 503."""


class CommitTimeout(RuntimeError):
    """The request's commit did not finish in time (it may still land: a retry is safe, being idempotent)."""


class WriterClosed(RuntimeError):
    """The writer is not running (starting, or shut down)."""


@dataclass
class _Op:
    fn: Operation
    future: Future[Any] = field(default_factory=Future)


class GroupCommitWriter:
    """The landing store's single writer. `await writer.call(fn)` runs `fn(conn)` durably, in a group."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        max_pending: int = 20_000,
        max_group: int = 2_000,
        on_group: Callable[[int, float], None] | None = None,
    ) -> None:
        self._connect = connect
        self._queue: queue.Queue[_Op | None] = queue.Queue(maxsize=max_pending)
        self._max_group = max_group
        self._on_group = on_group  # (operations, seconds from BEGIN to COMMIT): for metrics
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Open the write connection and start the thread."""
        self._conn = self._connect()
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Operation) -> Future[Any]:
        """Queue `fn`; its future resolves after the commit that made it durable."""
        if not self.alive:
            raise WriterClosed("the landing store's writer is not running")
        op = _Op(fn)
        try:
            self._queue.put_nowait(op)
        except queue.Full:
            raise Overloaded(f"{self._queue.maxsize} requests already wait for the landing store") from None
        return op.future

    async def call(self, fn: Callable[[sqlite3.Connection], T], timeout: float) -> T:
        """Run `fn` in the next group commit and wait for it (CommitTimeout after `timeout` seconds)."""
        fut = self.submit(fn)
        try:
            # on timeout wait_for cancels the wrapped future, which cancels `fut` if not started yet
            result: T = await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except TimeoutError:
            raise CommitTimeout(f"the landing store did not commit within {timeout:g} s") from None
        return result

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, stop the thread, close the connection."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()
        self._thread = None

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            while len(group) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_Op]) -> None:
        live = [op for op in group if op.future.set_running_or_notify_cancel()]
        if not live:
            return
        conn = self._conn
        assert conn is not None
        t0 = time.perf_counter()
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_in_savepoint(conn, op.fn) for op in live]
            conn.execute("COMMIT")  # the fsync: every operation of the group is durable from here on
        except Exception as err:  # the transaction failed: none of the group is stored
            log.error("landing store commit failed for %d request(s): %s", len(live), err)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in live:
                op.future.set_exception(err)
            return
        if self._on_group is not None:
            self._on_group(len(live), time.perf_counter() - t0)
        for op, (ok, value) in zip(live, outcomes, strict=True):
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)


def _in_savepoint(conn: sqlite3.Connection, fn: Operation) -> tuple[bool, Any]:
    """(True, result) or (False, the exception): a failing operation is rolled back alone."""
    conn.execute("SAVEPOINT op")
    try:
        result = fn(conn)
    except Exception as err:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return False, err
    conn.execute("RELEASE op")
    return True, result

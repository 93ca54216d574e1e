"""Several statements in one round trip on a psycopg asyncio connection, with one write to the socket.

psycopg's pipeline mode sends each statement as it is executed: per statement a poll of the socket
and a ``sendto``, and its cursor's work around them (bench/README.md, P3 ninth pass: 13 ``sendto`` and
about 40% of the hub's CPU per creation went to psycopg). The hub's busiest statements are prebuilt
(``hub.db.raw``), so a batch of them needs none of that: ``run_batch`` queues every statement in
libpq (pipeline mode), ends the batch with one sync, writes it to the socket once and reads the
results back, converting parameters and rows with the connection's own adapters (psycopg's
``Transformer``), as its cursors do. Each statement is prepared on the server the first time a
connection runs it (in the same round trip), so later runs send only its parameters.

Its connections must leave preparing to it (``BATCH_CONNECT_ARGS``: psycopg's own automatic preparing
off): psycopg, rolling back a transaction on a connection where it prepared statements of its own, sends
``DEALLOCATE ALL``, which would drop this module's too while it still counts them as prepared.

An error of a statement aborts the batch's later statements (the server skips them up to the
sync) and is raised as psycopg raises it: inside a transaction, the transaction has failed. A batch
can also be a transaction of its own (``begin`` and ``commit``): BEGIN, the statements and COMMIT in
one round trip, the COMMIT skipped if a statement fails, and then the transaction rolled back (one
more round trip) before the error is raised, so the connection is left idle either way. A
batch interrupted while it waits for the server (cancelled, or the connection lost) leaves the
connection closed: results still on their way could not be told apart from a later batch's.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

BATCH_CONNECT_ARGS: dict[str, Any] = {"prepare_threshold": None}
"""psycopg's connect arguments for connections ``run_batch`` is given: psycopg prepares no statement of its own"""

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%s")


@dataclass(frozen=True)
class BatchStatement:
    """A statement as SQLAlchemy's psycopg dialect compiles it (``%(name)s`` placeholders) and its parameters:
    one mapping, or (``many``) a list of them, each run."""

    sql: str
    params: Any = None
    many: bool = False


@dataclass
class BatchResult:
    """One statement's rows (tuples, converted by the connection's adapters) and its columns' (name, type oid);
    ``columns`` is None for a statement that returns no rows (an insert)."""

    columns: Optional[list[tuple[str, int]]]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class _Converted:
    query: bytes
    names: tuple[str, ...]


_CONVERTED: dict[str, _Converted] = {}
_STATEMENT_NAMES: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
_NAME_NUMBERS = itertools.count()
_prepared: "weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], set[bytes]]" = weakref.WeakKeyDictionary()


def _converted(sql: str) -> _Converted:
    """``sql`` with ``$1, $2, ...`` for its named placeholders (a name used twice is one parameter)."""
    found = _CONVERTED.get(sql)
    if found is None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            if m.group(1) is None:
                raise ValueError(f"positional placeholder in a batch statement: {sql!r}")
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        found = _Converted(_PLACEHOLDER.sub(number, sql).encode(), tuple(names))
        _CONVERTED[sql] = found
    return found


def _statement_name(query: bytes, types: tuple[int, ...]) -> bytes:
    """The name this process prepares ``query`` under, for parameters of ``types`` (psycopg's own are ``_pg3_*``):
    one per statement, never two statements under one name (loops of several threads ask at once)."""
    key = (query, types)
    name = _STATEMENT_NAMES.get(key)
    if name is None:
        name = _STATEMENT_NAMES.setdefault(key, f"_pairio_{next(_NAME_NUMBERS)}".encode())
    return name


async def run_batch(
    connection: psycopg.AsyncConnection[Any], statements: Sequence[BatchStatement], begin: bool = False, commit: bool = False,
) -> list[BatchResult]:
    """Run ``statements`` in order in one round trip (``begin``: a BEGIN first; ``commit``: a COMMIT last, and a
    ROLLBACK after a failed statement); the results in the same order."""
    if connection.prepare_threshold is not None:
        raise psycopg.ProgrammingError(
            "run_batch needs a connection opened with BATCH_CONNECT_ARGS (prepare_threshold=None): psycopg's rollback"
            " deallocates every prepared statement of a connection where it prepared some of its own"
        )
    async with connection.lock:
        prepared = _prepared.setdefault(connection, set())
        tx = Transformer.from_context(connection)
        # every parameter converted first: a value the connection cannot adapt fails the batch before anything is sent
        executions: list[tuple[int, bytes, bytes, tuple[int, ...], Sequence[Any], Sequence[Any]]] = []
        for index, statement in enumerate(statements):
            converted = _converted(statement.sql)
            for params in statement.params if statement.many else [statement.params]:
                values = [params[n] for n in converted.names]
                dumped = tx.dump_sequence(values, [PyFormat.AUTO] * len(values))
                types = tuple(tx.types or ())
                executions.append((index, _statement_name(converted.query, types), converted.query, types, list(dumped), list(tx.formats or [])))
        pgconn = connection.pgconn
        if pgconn.pipeline_status != pq.PipelineStatus.OFF:
            raise psycopg.ProgrammingError("run_batch on a connection in pipeline mode")
        streams: list[tuple[int, Optional[bytes]]] = []  # per result stream: the statement's index (-1: none), a name it prepares
        preparing: set[bytes] = set()
        pgconn.enter_pipeline_mode()
        finished = False
        try:
            if begin:
                pgconn.send_query_params(b"BEGIN", None)
                streams.append((-1, None))
            for index, name, query, types, dumped, formats in executions:
                if name not in prepared and name not in preparing:
                    pgconn.send_prepare(name, query, param_types=types)
                    preparing.add(name)
                    streams.append((-1, name))
                pgconn.send_query_prepared(name, dumped, param_formats=formats)
                streams.append((index, None))
            if commit:
                pgconn.send_query_params(b"COMMIT", None)
                streams.append((-1, None))
            pgconn.pipeline_sync()
            results = await _exchange(pgconn, len(streams))
            if commit and pgconn.transaction_status != pq.TransactionStatus.IDLE:  # a statement failed: COMMIT skipped
                pgconn.send_query_params(b"ROLLBACK", None)
                pgconn.pipeline_sync()
                await _exchange(pgconn, 1)
            finished = True
        finally:
            if finished:
                pgconn.exit_pipeline_mode()
            else:  # sent in part, or results still to come: the connection cannot be trusted any more
                pgconn.finish()
    out = [BatchResult(None, []) for _ in statements]
    error: Optional[psycopg.Error] = None
    for (index, prepares), stream in zip(streams, results):
        for res in stream:
            if res.status == pq.ExecStatus.FATAL_ERROR:
                error = error or errors.error_from_result(res, encoding=connection.info.encoding)
            elif res.status == pq.ExecStatus.PIPELINE_ABORTED:
                error = error or errors.PipelineAborted("a statement before this one failed")
            elif prepares is not None:
                prepared.add(prepares)
            elif index >= 0 and res.status == pq.ExecStatus.TUPLES_OK:
                tx.set_pgresult(res)
                out[index].columns = [(res.fname(i).decode(), res.ftype(i)) for i in range(res.nfields)]  # type: ignore[union-attr]
                out[index].rows.extend(tx.load_rows(0, res.ntuples, tuple))
    if error is not None:
        raise error
    return out


async def _exchange(pgconn: pq.abc.PGconn, streams: int) -> list[list[pq.abc.PGresult]]:
    """Send what libpq holds, then read ``streams`` statements' results and the sync's."""
    fd = pgconn.socket
    loop = asyncio.get_running_loop()
    try:
        while pgconn.flush():  # 1: the socket took part of it; wait until it can take more (reading meanwhile)
            if await _ready(loop, fd, write=True):
                pgconn.consume_input()
        results: list[list[pq.abc.PGresult]] = []
        stream: list[pq.abc.PGresult] = []
        while True:
            while pgconn.is_busy():
                await _ready(loop, fd, write=False)
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:  # the end of one statement's results
                results.append(stream)
                stream = []
            elif res.status == pq.ExecStatus.PIPELINE_SYNC:
                if len(results) != streams:
                    raise psycopg.InternalError(f"batch: {len(results)} results for {streams} statements")
                return results
            else:
                stream.append(res)
    except OSError as e:
        raise psycopg.OperationalError(f"connection socket failed: {e}") from e


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> bool:
    """Wait until ``fd`` is readable (or, with ``write``, writable); True when it is readable."""
    future: asyncio.Future[bool] = loop.create_future()

    def wake(readable: bool) -> None:
        if not future.done():
            future.set_result(readable)

    loop.add_reader(fd, wake, True)
    if write:
        loop.add_writer(fd, wake, False)
    try:
        return await future
    finally:
        loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)

"""Prebuilt Core statements run on the driver's cursor: the busiest reads and inserts, without SQLAlchemy's per-call work.

A statement is still written once, as a SQLAlchemy Core ``select()`` (the one home of its SQL);
``RawReads`` compiles it once per dialect and runs it on the DBAPI connection, converting
parameters and results with the same type processors SQLAlchemy applies. Through a ``Connection``
each execution costs several times what SQLite takes to run such a statement (execution context,
result metadata, events), and checking a connection out (``BEGIN``, ``ROLLBACK``, events) as much
again.

Only statements without expanding or post-compile parameters (and inserts that need no Python-side
default) run this way; ``RawReads.execute`` hands any other statement to a SQLAlchemy connection
(of the same engine, opened on first need; or the one ``on_connection`` was given).
Errors are raised as SQLAlchemy raises them (``DBAPIError`` subclasses), and a connection the
driver reports lost is invalidated, as SQLAlchemy does.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Optional, Union

from sqlalchemy import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Processor = Optional[Callable[[Any], Any]]


@dataclass
class _Compiled:
    compiled: Any  # SQLAlchemy's SQLCompiler: its construct_params gives the values, fixed ones included
    sql: str
    param_names: Optional[tuple[str, ...]]  # the order of positional parameters; None: named
    bind_processors: dict[str, Callable[[Any], Any]]
    keys: tuple[str, ...]
    row_type: Any
    result_types: tuple[Any, ...]
    processors: Optional[tuple[Processor, ...]] = None  # from the first execution's cursor description
    converts: bool = False  # some processor is not None


# The statements registered with ``prebuilt``, compiled per dialect on first use. Keyed by the
# statement's id, the statement kept alive here so that the id is never reused.
_REGISTERED: dict[int, tuple[ClauseElement, Optional[tuple[str, ...]]]] = {}
_COMPILED: dict[tuple[int, str], Optional[_Compiled]] = {}


def prebuilt(statement: Any, column_keys: Optional[Sequence[str]] = None) -> Any:
    """Mark a statement built once (at import) as one ``RawReads`` runs on the cursor; returns it.
    ``column_keys``: an insert's columns, the keys of every parameter set it is given."""
    _REGISTERED[id(statement)] = (statement, tuple(column_keys) if column_keys is not None else None)
    return statement


def _compile(statement: ClauseElement, column_keys: Optional[tuple[str, ...]], dialect: Dialect) -> Optional[_Compiled]:
    """The statement's SQL and processors for ``dialect``; None when it cannot run on the cursor as is (then it
    goes through SQLAlchemy: also when this SQLAlchemy's compiled form lacks what is read here)."""
    try:
        return _compile_for_cursor(statement, column_keys, dialect)
    except (AttributeError, TypeError, KeyError):  # a SQLAlchemy whose internals differ: the slower, sure way
        return None


def _compile_for_cursor(statement: ClauseElement, column_keys: Optional[tuple[str, ...]], dialect: Dialect) -> Optional[_Compiled]:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None)
    if (
        compiled.literal_execute_params or compiled.post_compile_params or any(b.expanding for b in compiled.binds.values())
        or compiled.insert_prefetch or compiled.update_prefetch
    ):
        return None
    keys = tuple(c.keyname for c in compiled._result_columns)
    result_types = tuple(c.type for c in compiled._result_columns)
    if not all(callable(getattr(t, "_cached_result_processor", None)) for t in result_types):
        return None
    return _Compiled(
        compiled=compiled,
        sql=compiled.string,
        param_names=tuple(compiled.positiontup) if compiled.positional else None,
        bind_processors=dict(compiled._bind_processors),
        keys=keys,
        row_type=namedtuple("RawRow", keys, rename=True),  # type: ignore[misc]
        result_types=result_types,
    )


def _compiled_for(statement: Any, dialect: Dialect) -> Optional[_Compiled]:
    registered = _REGISTERED.get(id(statement))
    if registered is None:
        return None
    key = (id(statement), dialect.name)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(*registered, dialect)
    return _COMPILED[key]


class RawResult:
    """Rows of a statement as ``Result`` gives them, for what the callers use: ``all``, ``first``, ``scalar``, iteration."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [r[0] for r in self._rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class RawReads:
    """Statements on one DBAPI connection: ``raw_reads``' outside any transaction (each statement sees one
    snapshot), ``on_connection``'s in the connection's transaction. Statements that ``prebuilt`` did not
    mark go to a SQLAlchemy connection (``fallback``'s)."""

    def __init__(
        self, dialect: Dialect, dbapi_connection: Any, fallback: Callable[[], Connection], on_lost: Optional[Callable[[], None]] = None
    ) -> None:
        self.dialect = dialect
        self._on_lost = on_lost
        self._dbapi = dbapi_connection
        self._fallback = fallback
        self._connection: Optional[Connection] = None
        self._lost = False
        """the driver reported the connection lost: ``raw_reads`` invalidates it"""
        can_batch = getattr(dbapi_connection, "can_pipeline", False)
        self._batch: Optional[Callable[..., list[Any]]] = getattr(dbapi_connection, "batch", None) if can_batch else None
        """runs statements in one round trip (a psycopg asyncio connection with libpq 14 or newer: hub/db/pg_batch.py)"""

    @property
    def sends_together(self) -> bool:
        """Whether ``execute_all`` sends its statements in one round trip (else one by one)."""
        return self._batch is not None

    @property
    def lost(self) -> bool:
        """The driver reported the connection lost: whoever lent it replaces it."""
        return self._lost

    def execute(self, statement: Any, params: Optional[Mapping[str, Any] | Sequence[Mapping[str, Any]]] = None) -> Any:
        """``params``: one set, or (an insert) a list of sets, each with the statement's ``column_keys``."""
        compiled = _compiled_for(statement, self.dialect)
        if compiled is None:
            if self._connection is None:
                self._connection = self._fallback()
            return self._connection.execute(statement, params or {})
        return RawResult(self._run(compiled, params or {}))

    def scalar(self, statement: Any, params: Optional[Mapping[str, Any]] = None) -> Any:
        return self.execute(statement, params).scalar()

    def scalars(self, statement: Any, params: Optional[Mapping[str, Any]] = None) -> Any:
        return self.execute(statement, params).scalars()

    def _args(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        values = compiled.compiled.construct_params(params)
        for name, process in compiled.bind_processors.items():
            if name in values:
                values[name] = process(values[name])
        return values if compiled.param_names is None else tuple(values[n] for n in compiled.param_names)

    def send_all(self, statements: Sequence[tuple[Any, Any]]) -> None:
        """Statements whose results nobody reads (inserts, locks), each with its ``execute`` parameters, in order:
        in one round trip where the connection can (``execute_all``), else one by one."""
        self.execute_all(statements)

    def execute_after(self, first: Sequence[tuple[Any, Any]], statement: Any, params: Any = None) -> Any:
        """``send_all(first)``, then ``execute(statement, params)`` (None: nothing), in one round trip where the
        connection can (``execute_all``). An error of any of them is raised (the transaction has failed)."""
        statements = [*first, (statement, params)] if statement is not None else list(first)
        results = self.execute_all(statements)
        return None if statement is None else results[-1]

    def execute_all(self, statements: Sequence[tuple[Any, Any]]) -> list[Any]:
        """Each statement with its ``execute`` parameters, in order, and their results: in one round trip where the
        connection can (``batch``: PostgreSQL on the event loop), else one by one. An error of any of them is raised
        (in a transaction, the transaction has failed); the later ones may not have run."""
        compiled = self._batchable(statements)
        if compiled is None or len(statements) <= 1:
            return [self.execute(s, p) for s, p in statements]
        return self._run_batch(compiled)

    def commit_all(self, statements: Sequence[tuple[Any, Any]]) -> list[Any]:
        """``execute_all`` in a transaction of their own, begun and committed in the same round trip (a connection
        outside any transaction, where ``sends_together``): all or nothing. Every statement must be ``prebuilt``."""
        compiled = self._batchable(statements)
        if compiled is None:
            raise ValueError("commit_all needs a connection that sends statements together, and prebuilt statements")
        return self._run_batch(compiled, transaction=True)

    def _batchable(self, statements: Sequence[tuple[Any, Any]]) -> Optional[list[tuple[_Compiled, Any]]]:
        """``statements`` compiled for ``batch`` (each with its parameters); None when this connection cannot batch
        them (no ``batch``, or a statement not ``prebuilt`` or with positional parameters)."""
        if self._batch is None:
            return None
        compiled = [(_compiled_for(s, self.dialect), p or {}) for s, p in statements]
        if any(c is None or c.param_names is not None for c, _ in compiled):
            return None
        return compiled  # type: ignore[return-value]

    def _run_batch(self, compiled: Sequence[tuple[_Compiled, Any]], transaction: bool = False) -> list[Any]:
        """``compiled`` by the connection's ``batch`` (hub/db/pg_batch.py): one round trip, one write to the socket."""
        from .pg_batch import BatchStatement  # here: only PostgreSQL's loop connections batch

        statements = []
        for c, p in compiled:
            many = not isinstance(p, Mapping)
            statements.append(BatchStatement(c.sql, [self._args(c, x) for x in p] if many else self._args(c, p), many))
        try:
            results = self._batch(statements, transaction=True) if transaction else self._batch(statements)  # type: ignore[misc]
        except self.dialect.loaded_dbapi.Error as e:
            self._raise(e, "; ".join(c.sql for c, _ in compiled), None, None)
        return [RawResult(self._fetched(c, _BatchCursor(r), st.params)) for (c, _), r, st in zip(compiled, results, statements)]

    def _send(self, compiled: _Compiled, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> tuple[Any, Any]:
        many = not isinstance(params, Mapping)
        args: Any = [self._args(compiled, p) for p in params] if many else self._args(compiled, params)  # type: ignore[union-attr]
        cursor = self._dbapi.cursor()
        try:
            if many:
                cursor.executemany(compiled.sql, args)
            else:
                cursor.execute(compiled.sql, args)
        except BaseException:
            cursor.close()
            raise
        return cursor, args

    def _run(self, compiled: _Compiled, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Any]:
        if self._batch is not None and compiled.param_names is None:
            return self._run_batch([(compiled, params)])[0].all()  # type: ignore[no-any-return]
        cursor = args = None
        try:
            cursor, args = self._send(compiled, params)
            return self._fetched(compiled, cursor, args)
        except self.dialect.loaded_dbapi.Error as e:
            self._raise(e, compiled.sql, args, cursor)
        finally:
            if cursor is not None:
                cursor.close()

    def _fetched(self, compiled: _Compiled, cursor: Any, args: Any) -> list[Any]:
        """The rows ``cursor`` has for ``compiled``, converted as SQLAlchemy would."""
        try:
            # the description only on a statement's first run (psycopg builds it afresh at each call: a column
            # object per column); an insert has none, so it is asked each time (and is None)
            if compiled.processors is None:
                description = cursor.description
                if description is None:  # an insert
                    return []
                if not compiled.keys:  # text(): the columns are the cursor's
                    compiled.keys = tuple(d[0] for d in description)
                    compiled.row_type = namedtuple("RawRow", compiled.keys, rename=True)  # type: ignore[misc]
                    compiled.result_types = ()
                compiled.processors = _result_processors(compiled, self.dialect, description)
                compiled.converts = any(compiled.processors)
            raw_rows = cursor.fetchall()
        except self.dialect.loaded_dbapi.Error as e:
            self._raise(e, compiled.sql, args, cursor)
        make = compiled.row_type._make
        processors = compiled.processors
        if not compiled.converts:
            return [make(r) for r in raw_rows]
        return [make([v if p is None or v is None else p(v) for p, v in zip(processors, r)]) for r in raw_rows]

    def _raise(self, error: Exception, sql: str, args: Any, cursor: Any) -> NoReturn:
        lost = self.dialect.is_disconnect(error, self._dbapi, cursor)
        if lost:
            self._lost = True
            if self._on_lost is not None:
                self._on_lost()
        raise DBAPIError.instance(
            sql, args, error, self.dialect.loaded_dbapi.Error, dialect=self.dialect, connection_invalidated=lost,
        ) from error


class _BatchCursor:
    """A ``BatchResult`` as the cursor ``RawReads._fetched`` reads."""

    __slots__ = ("description", "_rows")

    def __init__(self, result: Any) -> None:
        self.description = result.columns
        self._rows = result.rows

    def fetchall(self) -> list[Any]:
        return self._rows


def _result_processors(compiled: _Compiled, dialect: Dialect, description: Sequence[Any]) -> tuple[Processor, ...]:
    if not compiled.result_types:  # text(): values as the driver gives them, as SQLAlchemy leaves them
        return tuple(None for _ in description)
    return tuple(t._cached_result_processor(dialect, d[1]) for t, d in zip(compiled.result_types, description))


Reads = Union[Connection, RawReads]
"""What the busiest reads take: a SQLAlchemy connection or ``RawReads``."""


@contextmanager
def raw_reads(engine: Engine, fallback: Callable[[], Any]) -> Iterator[RawReads]:
    """A ``RawReads`` on a connection of ``engine``'s pool (checked out as SQLAlchemy does: pre-ping included).

    ``fallback``: a context manager factory giving a SQLAlchemy ``Connection``, for statements that
    were not prebuilt. On PostgreSQL the connection is in autocommit while lent (no BEGIN, no COMMIT).
    """
    fairy: Any = engine.raw_connection()
    dbapi = fairy.dbapi_connection
    autocommit = engine.dialect.name == "postgresql"
    with ExitStack() as stack:
        reads = RawReads(engine.dialect, dbapi, lambda: stack.enter_context(fallback()))
        try:
            if autocommit:
                dbapi.autocommit = True
            yield reads
        finally:
            stack.close()
            if reads.lost:
                # as SQLAlchemy does on a lost connection: the pool's older connections are replaced too
                engine.pool._invalidate(fairy, _checkin=False)
                fairy.invalidate()
            elif autocommit:
                try:
                    dbapi.autocommit = False
                except engine.dialect.loaded_dbapi.Error:
                    fairy.invalidate()
            fairy.close()


def on_connection(connection: Connection) -> RawReads:
    """Prebuilt statements on ``connection``'s DBAPI connection, in its transaction; others through ``connection``.
    A failed statement fails the transaction (the caller's session rolls it back). An asyncio driver connection
    (PostgreSQL on the event loop) is used directly, as ``hub.db.loop_postgres`` adapts it: SQLAlchemy's
    adaptation costs more than the statement, and the connection can batch statements (``RawReads.execute_all``)."""
    from .loop_postgres import awaited  # here: loop_postgres imports this module

    fairy = connection.connection
    dbapi = awaited(fairy.driver_connection) or fairy.dbapi_connection
    return RawReads(connection.dialect, dbapi, lambda: connection, connection.invalidate)

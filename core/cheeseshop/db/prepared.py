"""Hot statements run on the driver's cursor, compiled once per dialect.

SQLAlchemy spends 30–130 µs of interpreter time on every execution (an execution context,
result metadata, events, a ``Row`` per row) where the same ``SELECT`` takes 5 µs on the
bare sqlite3 cursor. An upload runs some fifteen statements, so that overhead was about
two milliseconds of each upload. A :class:`Prepared` statement does all of SQLAlchemy's
work that does not depend on the values once per dialect, through public API: the SQL
text, the order of its positional parameters, the bind and result processors of its
types, the Python-side defaults of an ``INSERT``'s other columns. Each execution then binds,
runs and converts rows by hand, on the connection's own DB-API cursor, inside the
transaction of the Core ``Connection`` it is given.

It gives what ``connection.execute(statement, params)`` gives, as plain tuples, and
raises the same ``sqlalchemy.exc`` errors (an ``IntegrityError`` for a unique violation),
so callers and their race handling do not change. Not supported, and refused when the
statement is first compiled: ``expanding`` (``IN``) and other post-compile parameters,
and escaped parameter names; keep those statements on ``connection.execute``. A driver
whose parameters are named rather than positional (psycopg with SQLAlchemy's default
``pyformat``, say) is given the statement through ``connection.execute``, as if it had
not been prepared: it still works, at SQLAlchemy's cost. SQLite's drivers, asyncpg and
Cheeseshop's own psycopg engine (``numeric_dollar``, on psycopg's ``RawCursor``) are positional.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import CompoundSelect, Connection, Insert, Select, Table, Update, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.compiler import SQLCompiler

if TYPE_CHECKING:  # cheeseshop.db imports this module
    from cheeseshop.db import Executor

__all__ = ["Prepared", "in_pipelined_transaction", "run_driver_sql", "with_defaults"]

Processor = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """One statement as one dialect runs it."""

    sql: str
    #: The parameter behind each positional placeholder, with its bind processor.
    binds: tuple[tuple[str, Processor | None], ...]
    #: Values of parameters the caller does not give: literals, and column defaults.
    constants: Mapping[str, Any]
    #: Defaults computed per execution (``default=utcnow``), by parameter name.
    computed: tuple[tuple[str, Callable[[Any], Any]], ...]
    #: Per result column, its result processor; None when no column has one.
    results: tuple[Processor | None, ...] | None
    #: Whether it returns rows, when the statement's kind tells (a ``SELECT``, or DML
    #: with or without ``RETURNING``); None: the cursor tells (its ``description``,
    #: which psycopg builds anew at every call, 12 µs).
    returns_rows: bool | None


class _DefaultContext:
    """What a context-sensitive column default may ask (``get_current_parameters()``)."""

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.current_parameters = parameters

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        """The parameters of the row being inserted."""
        return self.current_parameters


def with_defaults(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for a row of ``table``, with the Python-side default of every other column
    that has one (scalar or callable, as an ``INSERT`` would compute it) and None for every
    other nullable one; the autoincrement id is left out. For rows inserted where SQLAlchemy
    applies no defaults: by an ``INSERT`` inside a ``WITH`` clause."""
    row = dict(values)
    context = _DefaultContext(row)
    for column in table.columns:
        if column.name in row or column is table.autoincrement_column:
            continue
        default = column.default
        if default is not None and default.is_scalar:
            row[column.name] = default.arg
        elif default is not None and default.is_callable:
            row[column.name] = default.arg(context)
        elif column.nullable:
            row[column.name] = None
    return row


class Prepared:
    """A Core statement compiled once per dialect and run on the DB-API cursor.

    An ``INSERT`` or ``UPDATE`` built without ``.values()`` takes its columns from the
    parameters, as with ``connection.execute``: it is compiled once per set of parameter
    names, and the table's Python-side defaults fill in the other columns.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._by_columns = isinstance(statement, (Insert, Update))
        self._by_dialect: dict[tuple[str, str, frozenset[str]], _Compiled | None] = {}

    def rows(self, executor: Executor, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row the statement returns (an empty list for one that returns none)."""
        return self._rows(executor, params, read=True)

    def run(self, executor: Executor, params: Mapping[str, Any] | None = None) -> None:
        """Run the statement for its effect, its rows unread: inside a pipeline
        (:meth:`cheeseshop.db.Database.call_core_blocking`), not waited for; a failure is
        raised by the next statement whose rows are read, or by the commit."""
        self._rows(executor, params, read=False)

    def _rows(self, executor: Executor, params: Mapping[str, Any] | None, *, read: bool) -> list[tuple[Any, ...]]:
        params = params or {}
        connection = _connection(executor)
        compiled = self._compiled(connection.dialect, params)
        if compiled is None:
            result = connection.execute(self.statement, params)
            return [tuple(row) for row in result] if read and result.returns_rows else []
        arguments = [self._arguments(compiled, params)]
        cursor = self._execute(connection, compiled, arguments, many=False)
        try:
            returns_rows = compiled.returns_rows if read else False
            if returns_rows is None:
                if _in_pipeline(connection.connection.dbapi_connection):
                    raise TypeError("in a pipeline, a text statement's rows are unknown until read")
                returns_rows = cursor.description is not None
            if not returns_rows:
                return []
            try:
                fetched = cursor.fetchall()
            except Exception as error:  # in a pipeline: this statement's or an earlier one's
                dbapi = connection.connection.dbapi_connection
                raise _translated(connection, dbapi, cursor, compiled.sql, arguments, error) from error
        finally:
            cursor.close()
        if compiled.results is None:
            return [tuple(row) for row in fetched]
        processors = compiled.results
        return [
            tuple(value if process is None else process(value) for process, value in zip(processors, row))
            for row in fetched
        ]

    def first(self, executor: Executor, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row, or None."""
        rows = self.rows(executor, params)
        return rows[0] if rows else None

    def scalar(self, executor: Executor, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        row = self.first(executor, params)
        return None if row is None else row[0]

    def execute_many(self, executor: Executor, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (all with the same names), in one driver
        call (``executemany``), for rows that are not wanted: asyncpg sends them as one batch."""
        if not params:
            return
        connection = _connection(executor)
        compiled = self._compiled(connection.dialect, params[0])
        if compiled is None:
            connection.execute(self.statement, list(params))
            return
        arguments = [self._arguments(compiled, one) for one in params]
        self._execute(connection, compiled, arguments, many=True).close()

    # -- compiling ---------------------------------------------------------------------

    def _compiled(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled | None:
        """The statement compiled for ``dialect``; None when its driver is not positional."""
        columns = frozenset(params) if self._by_columns else frozenset()
        key = (dialect.name, dialect.driver, columns)
        try:
            return self._by_dialect[key]
        except KeyError:
            compiled = self._by_dialect[key] = _compile(self.statement, dialect, sorted(columns))
            return compiled

    def _arguments(self, compiled: _Compiled, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = {**compiled.constants, **params}
        if compiled.computed:
            context = _DefaultContext(values)
            for name, default in compiled.computed:
                if name not in params:
                    values[name] = default(context)
        arguments = []
        for name, process in compiled.binds:
            value = values[name]
            arguments.append(value if process is None else process(value))
        return tuple(arguments)

    # -- running -----------------------------------------------------------------------

    def _execute(self, connection: Connection, compiled: _Compiled, arguments: list[tuple[Any, ...]], *, many: bool) -> Any:
        if not connection.in_transaction():
            connection.begin()  # as SQLAlchemy's autobegin would (SQLite: our BEGIN)
        return _run(connection, compiled.sql, arguments, many=many)


def run_driver_sql(connection: Connection, sql: str) -> None:
    """Run ``sql`` (no parameters, no rows) on the connection's DB-API cursor, as it is
    and wherever the connection is (even inside its ``begin`` event), raising what
    ``connection.exec_driver_sql`` would raise."""
    _run(connection, sql, [()], many=False).close()


def _run(connection: Connection, sql: str, arguments: list[tuple[Any, ...]], *, many: bool) -> Any:
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        if many:
            cursor.executemany(sql, arguments)
        else:
            cursor.execute(sql, arguments[0])
    except Exception as error:
        cursor.close()
        raise _translated(connection, dbapi_connection, cursor, sql, arguments, error) from error
    return cursor


def in_pipelined_transaction(connection: Connection, work: Callable[[Connection], Any]) -> Any:
    """``work(connection)`` in one transaction in psycopg's pipeline mode, on a connection
    in autocommit mode: ``BEGIN`` and ``COMMIT`` are sent as statements, so that each goes
    with its neighbours, where psycopg's own transaction waits for the server after its
    ``BEGIN``. Committed if ``work`` returns; rolled back if anything fails, the commit
    included, and the failure raised as ``connection.execute`` would raise it."""
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    try:
        with dbapi_connection.pipeline():
            run_driver_sql(connection, "BEGIN")
            result = work(connection)
            run_driver_sql(connection, "COMMIT")  # sent, and checked, as the pipeline ends
    except BaseException as error:
        # Translated first: a lost connection is invalidated then, and not used again.
        raised = error
        if isinstance(error, Exception):
            raised = _translated(connection, dbapi_connection, None, "COMMIT", [()], error)
        if not connection.invalidated:
            try:
                dbapi_connection.rollback()  # ends the transaction the failure left open, if any
            except Exception:
                connection.invalidate()  # in no state to be pooled again
        if raised is error:
            raise
        raise raised from error
    return result


def _in_pipeline(dbapi_connection: Any) -> bool:
    """Whether a psycopg connection is in pipeline mode (statements sent, results later)."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    return bool(pgconn is not None and pgconn.pipeline_status)


def _connection(executor: Executor) -> Connection:
    return executor if isinstance(executor, Connection) else executor.connection()


def _compile(statement: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> _Compiled | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys) or None)
    assert isinstance(compiled, SQLCompiler)
    for name, bind in compiled.binds.items():
        if bind.expanding:
            raise TypeError(f"Prepared cannot expand the IN parameter {name!r}")
    if "POSTCOMPILE" in compiled.string or getattr(compiled, "escaped_bind_names", None):
        raise TypeError("Prepared cannot run statements with post-compile or escaped parameters")
    if not compiled.positional or compiled.positiontup is None:
        return None  # named parameters: connection.execute runs it
    binds = []
    for name in compiled.positiontup:
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((name, processor))
    # Literals in the statement (``== "sdist"``, ``LIMIT 1``) are parameters with a value.
    constants = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
    computed = []
    for column in [*compiled.insert_prefetch, *compiled.update_prefetch]:
        default = column.default if column in compiled.insert_prefetch else column.onupdate
        if default is None or not (default.is_scalar or default.is_callable):
            raise TypeError(f"Prepared cannot compute the default of column {column.key!r}")
        if default.is_scalar:
            constants[column.key] = default.arg
        else:
            computed.append((column.key, default.arg))
    return _Compiled(
        sql=compiled.string,
        binds=tuple(binds),
        constants=constants,
        computed=tuple(computed),
        results=_result_processors(statement, dialect),
        returns_rows=_returns_rows(statement, compiled),
    )


def _returns_rows(statement: ClauseElement, compiled: SQLCompiler) -> bool | None:
    if isinstance(statement, (Select, CompoundSelect)):
        return True
    if isinstance(statement, UpdateBase):
        # INSERT, UPDATE, DELETE: rows when RETURNING, the implicit one of a primary key too.
        return bool(compiled.effective_returning)
    return None


def _result_processors(statement: ClauseElement, dialect: Dialect) -> tuple[Processor | None, ...] | None:
    columns: Sequence[ColumnElement[Any]] = list(getattr(statement, "exported_columns", ()) or ())
    processors = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    return processors if any(process is not None for process in processors) else None


def _translated(
    connection: Connection,
    dbapi_connection: Any,
    cursor: Any,
    sql: str,
    arguments: list[tuple[Any, ...]],
    error: Exception,
) -> Exception:
    """``error`` as ``connection.execute`` would have raised it: a DB-API error wrapped in
    its ``sqlalchemy.exc`` class, and the connection invalidated if it was lost."""
    dialect = connection.dialect
    if not isinstance(error, dialect.loaded_dbapi.Error):
        return error
    lost = dialect.is_disconnect(error, dbapi_connection, cursor)
    if lost:
        connection.invalidate(error)
    return exc.DBAPIError.instance(
        sql,
        arguments[0] if len(arguments) == 1 else arguments,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )

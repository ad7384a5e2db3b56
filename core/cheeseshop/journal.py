"""The journal: one entry per change to a project, numbered by a serial that only grows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, BigInteger, String, Text, bindparam, func, insert, select, true, update

from cheeseshop.db import Executor, dialect_name
from cheeseshop.db.prepared import Prepared
from cheeseshop.db.models import JournalEntry, Project, utcnow

__all__ = ["Change", "last_serial", "record_changes"]

# Any constant works; it names the one lock that orders journal writers on PostgreSQL.
_JOURNAL_LOCK = 0x0C4EE5E
_LOCK = Prepared(select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger))))

_entries = JournalEntry.__table__
_projects = Project.__table__
_INSERT = Prepared(insert(_entries).returning(_entries.c.id))
_LAST = Prepared(select(func.max(_entries.c.id)))
_UPDATE_PROJECT = Prepared(
    update(_projects)
    .where(_projects.c.id == bindparam("project_id"))
    .values(
        last_serial=bindparam("serial"),
        total_size=_projects.c.total_size + bindparam("added_size"),
    )
)


def _numbered_insert() -> Any:
    """PostgreSQL: number the entries after the newest serial, insert them and update the
    project, in one statement (one round trip where it took three). Run under the lock:
    the statement reads ``max(id)`` when it starts, so the lock must be held before."""
    last = select(func.coalesce(func.max(_entries.c.id), 0).label("serial")).cte("last")
    change = (
        func.unnest(
            bindparam("versions", type_=ARRAY(String)),
            bindparam("actions", type_=ARRAY(Text)),
            bindparam("submitters", type_=ARRAY(String)),
        )
        .table_valued("version", "action", "submitted_by", with_ordinality="n")
        .render_derived(name="change")
    )
    entries = insert(_entries).from_select(
        ["id", "name", "version", "action", "submitted_date", "submitted_by"],
        select(
            last.c.serial + change.c.n,
            bindparam("name", type_=_entries.c.name.type),
            change.c.version,
            change.c.action,
            bindparam("submitted_date", type_=_entries.c.submitted_date.type),
            change.c.submitted_by,
        )
        .select_from(last)
        .join(change, true()),
    )
    project = (
        update(_projects)
        .where(_projects.c.id == bindparam("project_id"))
        .values(
            last_serial=last.c.serial + bindparam("count"),
            total_size=_projects.c.total_size + bindparam("added_size"),
        )
    )
    return select(last.c.serial).add_cte(entries.cte("entries"), project.cte("project"))


_INSERT_NUMBERED = Prepared(_numbered_insert())


@dataclasses.dataclass(frozen=True)
class Change:
    """One journal entry to write: what happened, to which version, by whom."""

    action: str
    version: str | None = None
    submitted_by: str | None = None


def last_serial(session: Executor) -> int:
    """The newest journal serial (0 for an empty journal)."""
    return _LAST.scalar(session) or 0


def record_changes(
    session: Executor,
    project_id: int,
    project_name: str,
    changes: Sequence[Change],
    *,
    added_size: int = 0,
) -> list[int]:
    """Journal ``changes`` to one project in the caller's transaction; their serials, in order.

    The project's ``last_serial`` is updated with them, and its ``total_size`` grown by
    ``added_size``. On SQLite a statement per entry and one for the project (statements
    cost no round trip there); on PostgreSQL two, whatever the number of changes: the
    lock, then one that numbers, inserts and updates.

    On PostgreSQL, concurrent transactions become visible in commit order, so a mirror
    could see serial 11 before serial 10 commits and then skip 10 forever. A
    transaction-scoped advisory lock makes journal writers commit one at a time, in
    serial order, and lets them number their entries themselves, without gaps. (SQLite's
    write transactions are serial already.)
    """
    if not changes:
        raise ValueError("record_changes needs at least one change")
    now = utcnow()
    if dialect_name(session) == "postgresql":
        # Its row is not read: in the upload's pipeline, the lock is not waited for here,
        # but by the numbering statement queued behind it.
        _LOCK.run(session, {"key": _JOURNAL_LOCK})
        # Numbered here, under the lock, rather than by the column's sequence: a sequence
        # value is spent even when its transaction rolls back, and a mirror that sees a
        # serial missing cannot tell a rolled-back change from one it failed to receive.
        last = _INSERT_NUMBERED.scalar(
            session,
            {
                "name": project_name,
                "submitted_date": now,
                "versions": [change.version for change in changes],
                "actions": [change.action for change in changes],
                "submitters": [change.submitted_by for change in changes],
                "project_id": project_id,
                "count": len(changes),
                "added_size": added_size,
            },
        )
        return list(range(last + 1, last + 1 + len(changes)))
    # On SQLite the autoincrement rowid numbers them in order, and a rollback takes its
    # numbers back; a row at a time is cheaper on the driver's cursor than one multi-row
    # statement through SQLAlchemy.
    rows: list[dict[str, object]] = [
        {
            "name": project_name,
            "version": change.version,
            "action": change.action,
            "submitted_date": now,
            "submitted_by": change.submitted_by,
        }
        for change in changes
    ]
    serials = [_INSERT.scalar(session, row) for row in rows]
    _UPDATE_PROJECT.rows(session, {"project_id": project_id, "serial": serials[-1], "added_size": added_size})
    return serials

"""The programme's configuration, cached in each process behind one version number.

Every accrual reads the same configuration (earning settings, multipliers, campaigns, the tier
ladder and policy, badges): reading it again from the database on every order costs more round
trips than the order itself. So each process keeps what it read, as immutable snapshots, under
the version number of the configuration it read it at, and a transaction uses a snapshot only
when that number is the database's current one.

- The version is one row (`ConfigVersion`). Any flush that adds, changes or deletes a row of a
  watched model (`watch`, called by each area for its configuration models) sets it to a new
  random number in the same transaction, so the change and its new version commit (or roll
  back) together. Random, not a counter: a rolled-back change's number is never reused, so a
  snapshot read inside that transaction can never match a version another change committed.
- A transaction reads the version once (`current_version`; the ledger reads it in the same
  statement that locks the wallet, `note_version`) and drops it when it ends, so a change
  committed by another process is seen by the next transaction that starts after it.
- A transaction that changed the configuration itself reads it afresh from then on (its own
  uncommitted rows) and never shares what it read.

Changing configuration through Core statements (not the ORM) must call `changed`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import BigInteger, Engine, Integer, event, select, update
from sqlalchemy.orm import Mapped, Session, SessionTransaction, UOWTransaction, mapped_column
from sqlalchemy.orm.attributes import get_history

from loyalty.db import Base

T = TypeVar("T")

_VERSION = "loyalty.config_version"  # session.info: the version this transaction read
_CHANGED = "loyalty.config_changed"  # session.info: this transaction changed configuration


class ConfigVersion(Base):
    """The configuration's version: one row, set to a new random number by every change."""

    __tablename__ = "config_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int] = mapped_column(BigInteger)


def new_version() -> int:
    """A fresh version number (positive, fits a signed 64-bit column)."""
    return secrets.randbits(62) + 1


# --- which models are configuration ---------------------------------------------------------

_watched: dict[type[Any], frozenset[str]] = {}


def watch(model: type[Any], *, ignore: Iterable[str] = ()) -> None:
    """Count every change of ``model``'s rows as a configuration change, except changes of
    only the ``ignore`` attributes (a campaign's running ``spent``, say)."""
    _watched[model] = frozenset(ignore)


def _is_configuration_change(session: Session) -> bool:
    for obj in session.new:
        if type(obj) in _watched:
            return True
    for obj in session.deleted:
        if type(obj) in _watched:
            return True
    for obj in session.dirty:
        ignored = _watched.get(type(obj))
        if ignored is None:
            continue
        for attribute in obj.__mapper__.column_attrs:
            if attribute.key not in ignored and get_history(obj, attribute.key).has_changes():
                return True
    return False


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    if _watched and _is_configuration_change(session):
        changed(session)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction: what it read is stale now
        session.info.pop(_VERSION, None)
        session.info.pop(_CHANGED, None)


def changed(session: Session) -> None:
    """Record in this transaction that the configuration changed: a new version commits with
    it, and this transaction reads the configuration afresh from now on."""
    session.connection().execute(update(ConfigVersion).values(version=new_version()))
    session.info[_CHANGED] = True
    session.info.pop(_VERSION, None)


# --- reading through the cache --------------------------------------------------------------


def version_column() -> Any:
    """The version as a scalar subquery, to read in a statement the transaction sends anyway
    (then `note_version`)."""
    return select(ConfigVersion.version).where(ConfigVersion.id == 1).scalar_subquery()


def note_version(session: Session, version: int | None) -> None:
    """Remember the version this transaction read (with `version_column`)."""
    if version is not None and not session.info.get(_CHANGED):
        session.info[_VERSION] = version


def current_version(session: Session) -> int | None:
    """The configuration's version as this transaction sees it: read once per transaction.
    None when this transaction changed the configuration (nothing may be shared then)."""
    if session.info.get(_CHANGED):
        return None
    version = session.info.get(_VERSION)
    if version is None:
        version = session.scalar(select(ConfigVersion.version).where(ConfigVersion.id == 1))
        session.info[_VERSION] = version
    return int(version) if version is not None else None


class Cache:
    """Snapshots by database (engine) and name, each with the version it was read at (one
    cache per process)."""

    def __init__(self) -> None:
        self._entries: WeakKeyDictionary[Engine, dict[str, tuple[int, Any]]] = WeakKeyDictionary()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a snapshot was read from the database

    def get(self, session: Session, name: str, load: Callable[[Session], T]) -> T:
        """The snapshot ``name`` at this transaction's version, read with ``load`` (which
        must return something immutable) when the cache has none for that version."""
        version = current_version(session)
        engine = session.get_bind().engine
        if version is not None:
            entry = self._entries.get(engine, {}).get(name)
            if entry is not None and entry[0] == version:
                value: T = entry[1]
                return value
        value = load(session)
        self.loads += 1
        # Loading may have written this transaction's own changes (an autoflush): the
        # version is then its own, and what it read is not shared.
        if version is not None and current_version(session) == version:
            with self._lock:
                self._entries.setdefault(engine, {})[name] = (version, value)
        return value

    def peek(self, session: Session, name: str) -> Any | None:
        """The snapshot ``name`` this process read last, at whatever version (None: none):
        a hint for what to ask the database, never the answer (it may be out of date)."""
        entry = self._entries.get(session.get_bind().engine, {}).get(name)
        return entry[1] if entry is not None else None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


cache = Cache()


def cached(session: Session, name: str, load: Callable[[Session], T]) -> T:
    """``load(session)``'s immutable result, shared by every transaction of this process that
    sees the same configuration version (see the module's docstring)."""
    return cache.get(session, name, load)


def peek(session: Session, name: str) -> Any | None:
    """The snapshot ``name`` this process read last, maybe out of date, without a round trip
    (None: none yet): for deciding what to read along with something else, not for answers."""
    return cache.peek(session, name)

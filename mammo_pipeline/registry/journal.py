"""Crash-consistent registry actions: every alias and tag write of one action is journaled
before the first of them is made, and a later holder of the registry lock completes it.

MLflow writes each tag and each alias on its own; a promotion makes a dozen such writes
(verdict tags, ``champion``, ``previous``, ``challenger``, ``baseline``). A process killed
between two of them used to leave a registry no serial order of actions could produce (e.g.
``previous`` and ``champion`` both on the old champion, so nothing to roll back to; or a
version tagged as having replaced the champion that is not the champion). So an action first
*plans* all its writes (:class:`Plan`: nothing is written while planning, and a write that
would change nothing is left out), then :meth:`Plan.commit` makes them in this order:

1. the **pointer**: registered-model tag ``mammo.pending_writes`` (small JSON: an id, the
   action in words, the version carrying the body, the body's chunk count and sha256);
2. the **body**: the planned writes as JSON in the model-version tag ``mammo.journal`` of that
   version (split over ``mammo.journal.1``, ... past :data:`CHUNK` characters; version tags
   hold far more than registered-model tags, which PostgreSQL limits to 5,000 characters).
   The journal is *armed* once its last chunk is written;
3. the writes themselves: every tag first, aliases last (so ``champion`` never points at a
   version whose verdict is not written yet), ``champion`` before the other aliases;
4. the body removed, then the pointer: the action is done.

:func:`recover` runs each time the registry lock is taken (:func:`.lock.registry_lock`), so any
action, gate or review, first finishes what a killed one left:

* no pointer: nothing to do;
* pointer and a complete body (every chunk, digest matching): the action is *rolled forward*:
  every write is made again in order (each one is idempotent: it sets a value or removes one),
  then the journal is removed;
* pointer without a complete body: the writes had either not started (killed while the body
  was written) or all been made (killed while it was removed): only the journal is removed.

Either way the registry ends as if the killed action had run alone to its end, or not at all
when it died before its journal was armed. Readers that do not take the lock (the service
loading ``@champion``, ``mammo registry list``) can see the state between two writes until the
next lock holder repairs it; what they can see is bounded by the order above. Replaying an
action skips its review report (an artifact for people, not registry state): the repair
message says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mammo_pipeline.errors import MammoError
from mammo_pipeline.registry import faults
from mammo_pipeline.registry.decision import utc_now
from mammo_pipeline.registry.names import CHAMPION
from mammo_pipeline.registry.store import is_not_found, mlflow_errors, tag_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mammo_pipeline.config import Settings

log = logging.getLogger(__name__)

#: Registered-model tag naming the journal of an action in progress.
POINTER_TAG = "mammo.pending_writes"
#: Model-version tag holding the journal's body (then ``mammo.journal.1``, ... for more chunks).
BODY_TAG = "mammo.journal"
#: Characters per body chunk (MLflow accepts model-version tag values up to 100,000).
CHUNK = 90_000
#: Tag keys that belong to the journal, never to a version's record.
JOURNAL_TAG_PREFIX = "mammo."


def chunk_key(i: int) -> str:
    return BODY_TAG if i == 0 else f"{BODY_TAG}.{i}"


def describe(op: Mapping[str, str]) -> str:
    kind = op["op"]
    if kind == "set_tag":
        return f"tag {op['key']} on v{op['version']}"
    if kind == "delete_tag":
        return f"tag {op['key']} removed from v{op['version']}"
    if kind == "set_alias":
        return f"alias {op['alias']} -> v{op['version']}"
    return f"alias {op['alias']} removed"


def _apply(client: MlflowClient, name: str, op: Mapping[str, str]) -> None:
    """Make one planned write (idempotent: a value set again, or a value already gone)."""
    from mlflow.exceptions import MlflowException

    kind = op["op"]
    try:
        if kind == "set_tag":
            client.set_model_version_tag(name, op["version"], op["key"], op["value"])
        elif kind == "delete_tag":
            client.delete_model_version_tag(name, op["version"], op["key"])
        elif kind == "set_alias":
            client.set_registered_model_alias(name, op["alias"], op["version"])
        elif kind == "delete_alias":
            client.delete_registered_model_alias(name, op["alias"])
        else:
            raise MammoError(f"unknown journal operation {kind!r}")
    except MlflowException as exc:
        if not (kind.startswith("delete_") and is_not_found(exc)):
            raise
    faults.wrote(describe(op))


@dataclass
class Plan:
    """The writes of one registry action, planned against the state read under the lock.

    ``aliases`` and :meth:`tags_of` answer as the registry will be once the planned writes are
    made, so a planner can build on its own earlier steps.
    """

    client: MlflowClient
    name: str
    action: str
    version: str
    aliases: dict[str, str]
    _tags: dict[str, dict[str, str]] = field(default_factory=dict)
    tag_ops: list[dict[str, str]] = field(default_factory=list)
    alias_ops: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        client: MlflowClient,
        name: str,
        action: str,
        version: str,
        aliases: Mapping[str, str],
        tags: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Plan:
        """A plan for ``action`` about ``version`` (whose tags carry the body) from the
        ``aliases`` (and, where already read, ``tags`` by version) seen under the lock."""
        return cls(client, name, action, str(version), dict(aliases),
                   {str(v): dict(t) for v, t in (tags or {}).items()})  # fmt: skip

    def tags_of(self, version: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        version = str(version)
        if version not in self._tags:
            try:
                mv = self.client.get_model_version(self.name, version)
            except MlflowException as exc:
                if not is_not_found(exc):
                    raise
                self._tags[version] = {}  # deleted: nothing to remove from it
            else:
                self._tags[version] = dict(mv.tags or {})
        return self._tags[version]

    @property
    def ops(self) -> list[dict[str, str]]:
        """Every planned write in the order :meth:`commit` makes them."""
        return [*self.tag_ops, *self.alias_ops]

    def set_tags(self, version: str, tags: Mapping[str, Any]) -> None:
        """Set tags (``None`` values skipped; values already equal left out)."""
        version = str(version)
        current = self.tags_of(version)
        for key, value in tags.items():
            if value is None:
                continue
            text = tag_value(value)
            if current.get(key) == text:
                continue
            current[key] = text
            self.tag_ops.append({"op": "set_tag", "version": version, "key": key, "value": text})

    def delete_tag(self, version: str, key: str) -> None:
        version = str(version)
        current = self.tags_of(version)
        if key in current:
            del current[key]
            self.tag_ops.append({"op": "delete_tag", "version": version, "key": key})

    def set_alias(self, alias: str, version: str) -> None:
        version = str(version)
        if self.aliases.get(alias) == version:
            return
        self.aliases[alias] = version
        op = {"op": "set_alias", "alias": alias, "version": version}
        if alias == CHAMPION:  # the served version moves first
            self.alias_ops.insert(0, op)
        else:
            self.alias_ops.append(op)

    def delete_alias(self, alias: str) -> None:
        if alias in self.aliases:
            del self.aliases[alias]
            self.alias_ops.append({"op": "delete_alias", "alias": alias})

    def commit(self, between: Callable[[], None] | None = None) -> None:
        """Journal the planned writes, make them (tags, then ``between()``, then aliases),
        remove the journal. Must run under the registry lock."""
        ops = self.ops
        if len(ops) <= 1:  # one write is atomic by itself: nothing to journal
            for op in self.tag_ops:
                _apply(self.client, self.name, op)
            if between is not None:
                between()
            for op in self.alias_ops:
                _apply(self.client, self.name, op)
            return
        body = json.dumps({"action": self.action, "ops": ops}, separators=(",", ":"))
        chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
        pointer = {
            "id": uuid.uuid4().hex,
            "action": self.action,
            "version": self.version,
            "chunks": len(chunks),
            "sha256": hashlib.sha256(body.encode()).hexdigest(),
            "at": utc_now(),
        }
        c = self.client
        c.set_registered_model_tag(self.name, POINTER_TAG, json.dumps(pointer))
        faults.wrote("journal pointer")
        for i, text in enumerate(chunks):
            c.set_model_version_tag(self.name, self.version, chunk_key(i), text)
            faults.wrote(f"journal body {i + 1}/{len(chunks)}")
        for op in self.tag_ops:
            _apply(c, self.name, op)
        if between is not None:
            between()
        for op in self.alias_ops:
            _apply(c, self.name, op)
        _remove(c, self.name, self.version, len(chunks))


def _remove(client: MlflowClient, name: str, version: str, chunks: int) -> None:
    """Body first, pointer last: a pointer without a body means "nothing left to write"."""
    from mlflow.exceptions import MlflowException

    for i in range(chunks):
        try:
            client.delete_model_version_tag(name, version, chunk_key(i))
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
        faults.wrote(f"journal body {i + 1}/{chunks} removed")
    client.delete_registered_model_tag(name, POINTER_TAG)
    faults.wrote("journal pointer removed")


@dataclass(frozen=True)
class Pending:
    """A journal found in the registry: what was interrupted, and whether it can be replayed."""

    action: str
    version: str
    chunks: int
    started_at: str
    ops: list[dict[str, str]] | None  # None: no complete body (nothing left to write)


def pending(client: MlflowClient, name: str) -> Pending | None:
    """The journal an interrupted action left on ``name``, if any (reads only)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise
    raw = (rm.tags or {}).get(POINTER_TAG)
    if raw is None:
        return None
    try:
        pointer = json.loads(raw)
        version, chunks = str(pointer["version"]), int(pointer["chunks"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MammoError(
            f"the registry tag {POINTER_TAG!r} of {name!r} is not a journal this version of "
            f"mammo can read ({exc}); inspect it, then remove it to go on"
        ) from exc
    action = str(pointer.get("action", "registry action"))
    try:
        tags = client.get_model_version(name, version).tags or {}
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        tags = {}
    parts = [tags.get(chunk_key(i)) for i in range(chunks)]
    ops = None
    if all(p is not None for p in parts):
        body = "".join(p for p in parts if p is not None)
        if hashlib.sha256(body.encode()).hexdigest() == pointer.get("sha256"):
            ops = json.loads(body)["ops"]
    return Pending(action, version, chunks, str(pointer.get("at", "?")), ops)


def recover_with(client: MlflowClient, name: str) -> list[str]:
    """Complete (or clear) the journal an interrupted action left; what was done, in words.
    Must run under the registry lock."""
    found = pending(client, name)
    if found is None:
        return []
    if found.ops is None:
        what = (
            f"removed the journal of an interrupted {found.action} (started {found.started_at}): "
            "it had no write left to make"
        )
    else:
        from mlflow.exceptions import MlflowException

        try:
            for op in found.ops:
                _apply(client, name, op)
        except MlflowException as exc:
            raise MammoError(
                f"cannot complete the interrupted {found.action} on {name!r}: {exc.message} "
                f"(to discard it, remove the registered-model tag {POINTER_TAG!r})"
            ) from exc
        moves = [describe(op) for op in found.ops if op["op"].endswith("alias")]
        what = (
            f"completed an interrupted {found.action} (started {found.started_at}): "
            f"{len(found.ops)} planned write(s) made again"
            + (f" ({', '.join(moves)})" if moves else "")
            + "; its review report was not rewritten"
        )
    _remove(client, name, found.version, found.chunks)
    log.warning("registry %s: %s", name, what)
    return [what]


def recover(settings: Settings) -> list[str]:
    """:func:`recover_with` on the configured store (nothing when a local store does not exist
    yet: no registry is created as a side effect)."""
    from mammo_pipeline.common.mlflow_access import mlflow_client, store_exists

    if not store_exists(settings):
        return []
    name = settings.registered_model_name
    with mlflow_errors(f"completing an interrupted action on {name!r}"):
        return recover_with(mlflow_client(settings), name)


def repair(settings: Settings) -> list[str]:
    """Take the registry lock (which completes any interrupted action) and say what was done:
    ``mammo registry repair``."""
    from mammo_pipeline.registry.lock import registry_lock, repairs

    with registry_lock(settings):
        return repairs()

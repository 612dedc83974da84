"""Which release answers an entity: a sticky champion/challenger split by a stable hash of the entity id.

`bucket(entity_id) < challenger weight` -> challenger, else champion. The bucket is blake2b of the id,
never Python's salted `hash()`, so an entity keeps its arm across processes, restarts and weight
increases (a higher weight only moves entities to the challenger). `Routing` is what is served now: the
`LoadedRelease` of each arm and the challenger weight (releases.py loads and swaps it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.contract import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from pipelines.model.release import Release


def bucket(entity_id: str) -> int:
    """Stable bucket 0..99 of an entity (blake2b: uniform, and the same in every process and run)."""
    return int.from_bytes(hashlib.blake2b(entity_id.encode(), digest_size=8).digest(), "big") % 100


def route(entity_id: str, challenger_weight: float) -> str:
    """`hash(entity) % 100 < weight` -> challenger. A higher weight only moves entities to the challenger."""
    return CHALLENGER if bucket(entity_id) < challenger_weight else CHAMPION


@dataclass(frozen=True)
class LoadedRelease:
    """A loaded release serving one arm."""

    arm: str
    model_name: str
    version: str
    threshold: float
    release: Release
    fingerprint: str
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


@dataclass(frozen=True)
class Routing:
    """What is served now: swapped atomically by the refresher (readers take one snapshot per batch)."""

    arms: dict[str, LoadedRelease]
    challenger_weight: float

    @property
    def champion(self) -> LoadedRelease | None:
        return self.arms.get(CHAMPION)

    @property
    def has_challenger(self) -> bool:
        return CHALLENGER in self.arms

    def arm_of(self, entity_id: str) -> str:
        """The arm serving `entity_id` under this routing (champion when there is no challenger)."""
        return route(entity_id, self.challenger_weight) if self.has_challenger else CHAMPION

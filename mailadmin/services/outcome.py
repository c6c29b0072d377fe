"""What a service did, so a view never queries again for it."""

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Change(Generic[T]):
    """The object as it is now (None once deleted), the apply job the change
    started (None when nothing changed or nothing needs applying), and the
    names of what changed."""

    object: T
    job: object = None  # models.Job
    changed: tuple[str, ...] = ()

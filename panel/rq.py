"""RQ configuration for MAILPANEL_TASK_BACKEND=rq (see settings).

Each mail node has its own queue, node-<name>; nodes are added while the panel
runs, so their queues cannot be listed in settings. NodeQueues answers any
node queue name with the "default" queue's Redis, and the backend accepts
those names (django-tasks-rq checks queue names against a fixed list)."""

import re
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

# models.NODE_NAME_PATTERN (models cannot be imported while settings load).
NODE_QUEUE = re.compile(r"node-[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")


def redis_url(name: str, value: str) -> str:
    """Strict: redis://, rediss:// or unix:// with a host or a path and a
    database number when one is given."""
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, not {value!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ImproperlyConfigured(f"{name}: a unix:// URL needs a socket path")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ImproperlyConfigured(f"{name}: {value!r} has no host")
        try:
            parts.port
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {value!r} has a port that is not a number")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ImproperlyConfigured(f"{name}: the database of {value!r} must be a number")
    return value


class NodeQueues(dict):
    """RQ_QUEUES: the named queues, and node-<name> on the default queue's Redis."""

    def __missing__(self, key):
        if isinstance(key, str) and NODE_QUEUE.fullmatch(key):
            return self["default"]
        raise KeyError(key)

"""The pool-mode decision and the settings contract as plain Python: nothing here imports
the generated bindings, so `python3 -m unittest` runs it anywhere (the build script does)."""

from dataclasses import dataclass, field

VERSION = "0.1.0-python"
KNOWN_SETTINGS = ("session_apps", "version_tag")


@dataclass(frozen=True)
class Config:
    # Application names whose sessions keep their server (session pooling).
    session_apps: frozenset = field(default_factory=frozenset)
    version_tag: str = ""


def parse_settings(settings):
    """Parses `[plugins.NAME.settings]` pairs; raises ValueError with a message meant for
    the operator on unknown or repeated keys."""
    unknown = [key for key, _ in settings if key not in KNOWN_SETTINGS]
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(f"unknown setting{plural} {names} (known settings: {', '.join(KNOWN_SETTINGS)})")
    values = {}
    for key, value in settings:
        if key in values:
            raise ValueError(f"setting {key!r} given more than once")
        values[key] = value
    apps = frozenset(a.strip() for a in values.get("session_apps", "").split(",") if a.strip())
    return Config(session_apps=apps, version_tag=values.get("version_tag", ""))


def version(tag):
    return f"{VERSION}+{tag}" if tag else VERSION


def release(in_transaction, holds_server_state, session_pooled):
    """Transaction pooling: the server goes back to the pool when the session is outside a
    transaction block and holds no server-side state; session-pooled sessions keep it."""
    return not (session_pooled or in_transaction or holds_server_state)


class BoundedCache(dict):
    """A dict that forgets its oldest entry beyond `limit` entries."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value):
        if key not in self and len(self) >= self.limit:
            del self[next(iter(self))]
        super().__setitem__(key, value)

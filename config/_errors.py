"""The one error a configuration problem raises."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used: names the key path and where it came from.

    ``key`` is the dotted path (``store.batch_size``), ``reason`` what is wrong with
    it, ``source`` where the bad value came from (a profile file, an environment
    variable, the overrides), ``file`` the profile file being loaded.
    """

    def __init__(self, key: str, reason: str, *, source: str = "", file: str = "") -> None:
        self.key = key
        self.reason = reason
        self.source = source
        self.file = file
        super().__init__(key, reason)

    def __str__(self) -> str:
        text = f"{self.key}: {self.reason}" if self.key else self.reason
        where = []
        if self.source and self.source != self.file:
            where.append(f"from {self.source}")
        if self.file:
            where.append(f"in {self.file}")
        return f"{text} ({', '.join(where)})" if where else text

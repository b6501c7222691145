"""A Location: a URL (or local path) with its storage options and its filesystem, as one value.

A job names two places, its source and its output, and one set of storage options; every
function that reads or writes there used to take the pair (url, storage_options) and build the
filesystem again. A Location is that pair, built once where the URL enters (the JobSpec, a CLI
argument, a Serve request) and handed down:

- built once: the filesystem is made on first use and kept, and a file under the Location
  (`at`, `child`) shares it, so a task listing or reading a thousand files resolves one
  filesystem, not one per file;
- picklable: a Location travels to Ray tasks as its URL and options only. A filesystem holds
  clients, sessions and threads that cost to pickle or do not pickle at all; the receiving
  process builds its own on first use (fsspec keeps one instance per options and process);
- one place: the filesystem comes from `get_fs`, so S3's retry configuration
  (earmark.storage.filesystem) applies to every Location alike.

A Location is immutable and compares (and hashes) by its URL and its options as canonical JSON.
Its repr names the option keys, never their values (they may be credentials).
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
from collections.abc import Mapping
from typing import Any

from fsspec.utils import get_protocol

from earmark.storage.filesystem import full_uri, get_fs, is_local

_NOT_BUILT = object()


class Location:
    """A URL or local path with its storage options; `.fs` and `.path` are built on first use."""

    __slots__ = ("url", "_options", "_key", "_fs", "_path")

    url: str  # as given: a local path or an fsspec URL

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping | None = None) -> None:
        options = copy.deepcopy(dict(storage_options or {}))  # the caller's dict stays theirs
        key = json.dumps(options, sort_keys=True, separators=(",", ":"), default=repr)
        self._init(os.fspath(url), options, key, _NOT_BUILT)

    def _init(self, url: str, options: dict[str, Any], key: str, fs: Any) -> None:
        set_ = object.__setattr__  # the instance is frozen for everyone else
        set_(self, "url", url)
        set_(self, "_options", options)
        set_(self, "_key", key)
        set_(self, "_fs", fs)
        set_(self, "_path", None)

    @classmethod
    def of(
        cls, where: str | os.PathLike[str] | Location, storage_options: Mapping | None = None
    ) -> Location:
        """`where` as a Location: a Location as it is, a URL or path with `storage_options`."""
        if isinstance(where, Location):
            if storage_options and cls(where.url, storage_options) != where:
                raise ValueError(f"{where!r} already has other storage options")
            return where
        return cls(where, storage_options)

    def _sharing(self, url: str, fs: Any) -> Location:
        """Another URL with these options and the filesystem `fs` already built."""
        loc = Location.__new__(Location)
        loc._init(url, self._options, self._key, fs)
        return loc

    # -- the filesystem ---------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem, built by `get_fs` on first use."""
        if self._fs is _NOT_BUILT:
            fs, raw = get_fs(self.url, self._options)
            self._set_path(raw)
            object.__setattr__(self, "_fs", fs)
        return self._fs

    @property
    def path(self) -> str:
        """The URL's path in the filesystem, without a trailing slash (`bucket/prefix`)."""
        if self._path is None:
            fs = self.fs  # building it (get_fs) sets the path; a shared one does not
            self._set_path(fs._strip_protocol(self.url))
        return self._path

    def _set_path(self, raw: str) -> None:
        if self._path is None:
            object.__setattr__(self, "_path", raw.rstrip("/") or raw)

    @property
    def storage_options(self) -> dict[str, Any]:
        """A copy of the options (changing it changes no Location)."""
        return copy.deepcopy(self._options)

    @property
    def is_local(self) -> bool:
        return is_local(self.fs)

    # -- paths and URIs under it ------------------------------------------------------------
    def join(self, *parts: str) -> str:
        """A filesystem path under this Location (`OUTPUT/_staging/x`)."""
        return posixpath.join(self.path, *parts)

    def uri(self, path: str | None = None) -> str:
        """The full URI of a filesystem path (this Location's own path by default):
        `file:///abs` for local files, `proto://...` otherwise."""
        return full_uri(self.fs, self.path if path is None else path)

    def same_fs(self, url: str) -> bool:
        """Whether `url` is on this Location's filesystem: same protocol, and the same
        filesystem arguments in the URL (a host, for the protocols that take one from it)."""
        if "::" in url or "::" in self.url:  # chained URLs: let get_fs resolve them
            return False
        cls = type(self.fs)
        protocols = cls.protocol if isinstance(cls.protocol, tuple | list) else (cls.protocol,)
        return get_protocol(url) in protocols and cls._get_kwargs_from_urls(
            url
        ) == cls._get_kwargs_from_urls(self.url)

    def path_of(self, url: str) -> str:
        """The filesystem path of another URL on this filesystem (a file under a source)."""
        if not self.same_fs(url):
            raise ValueError(f"{url} is not on the filesystem of {self.url}")
        return self.fs._strip_protocol(url)

    def at(self, url: str) -> Location:
        """Another URL with these storage options: a file this Location lists or names. On this
        filesystem it shares it; elsewhere (a manifest naming files in another store) it gets
        its own, from `get_fs` like any Location."""
        if self.same_fs(url):
            return self._sharing(url, self.fs)
        return self._sharing(url, _NOT_BUILT)

    def child(self, *parts: str) -> Location:
        """The Location of a path under this one, sharing its filesystem."""
        return self._sharing(self.uri(self.join(*parts)), self.fs)

    # -- value semantics --------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Location is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Location is immutable (cannot delete {name})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return (self.url, self._key) == (other.url, other._key)

    def __hash__(self) -> int:
        return hash((self.url, self._key))

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        # the URL and the options only: the filesystem is rebuilt where it is used
        return (Location, (self.url, self._options))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self._options))
        return f"Location({self.url!r}" + (f", options: {keys})" if keys else ")")


LocationLike = str | os.PathLike | Location  # what functions taking a Location also accept

"""Location: a URL with its storage options and its filesystem, built once. Paths and URIs under
it round-trip, it is a value (equal, hashable, immutable), it pickles without its filesystem and
works again after, and S3 gets earmark's retry configuration through it. No Ray, no network."""

from __future__ import annotations

import pickle

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from earmark.storage import S3_MAX_ATTEMPTS, S3_RETRY_MODE, S3FS_RETRIES, Location


@pytest.mark.parametrize("spell", ["plain", "slash", "file"])
def test_a_local_folder_round_trips(tmp_path, spell):
    url = {"plain": str(tmp_path), "slash": f"{tmp_path}/", "file": f"file://{tmp_path}"}[spell]
    loc = Location(url)
    assert isinstance(loc.fs, LocalFileSystem) and loc.is_local
    assert loc.path == str(tmp_path)
    assert loc.uri() == f"file://{tmp_path}"
    path = loc.join("_staging", "x.staged")
    assert path == f"{tmp_path}/_staging/x.staged"
    assert loc.uri(path) == f"file://{path}"
    assert loc.path_of(loc.uri(path)) == path
    assert loc.path_of(path) == path  # a plain local path is on the local filesystem too
    child = loc.child("_staging")
    assert child.path == f"{tmp_path}/_staging" and child.fs is loc.fs
    assert child.storage_options == loc.storage_options == {}


def test_a_memory_url_round_trips():
    loc = Location("memory://earmark-loc/out/")
    assert isinstance(loc.fs, MemoryFileSystem) and not loc.is_local
    assert loc.path == "/earmark-loc/out"
    part = loc.join("part-1.parquet")
    assert loc.uri(part) == "memory:///earmark-loc/out/part-1.parquet"
    assert loc.path_of(loc.uri(part)) == part
    assert loc.child("sub").url == "memory:///earmark-loc/out/sub"
    loc.fs.pipe_file(part, b"rows")
    try:
        assert loc.child("part-1.parquet").fs.cat_file(part) == b"rows"
    finally:
        loc.fs.rm(loc.path, recursive=True)


def test_a_file_on_another_filesystem_gets_its_own_with_the_same_options(tmp_path):
    mem = Location("memory://earmark-loc/src", {"skip_instance_cache": False})
    same = mem.at("memory:///earmark-loc/src/a.wav")
    assert same.fs is mem.fs and same.path == "/earmark-loc/src/a.wav"
    other = mem.at(f"file://{tmp_path}/b.wav")
    assert not mem.same_fs(other.url) and isinstance(other.fs, LocalFileSystem)
    assert other.storage_options == mem.storage_options
    assert other.path == f"{tmp_path}/b.wav"
    with pytest.raises(ValueError, match="not on the filesystem"):
        mem.path_of(f"file://{tmp_path}/b.wav")


def test_equal_by_url_and_canonical_options_and_immutable():
    a = Location("s3://bkt/p", {"anon": True, "client_kwargs": {"region_name": "x", "a": 1}})
    b = Location("s3://bkt/p", {"client_kwargs": {"a": 1, "region_name": "x"}, "anon": True})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Location("s3://bkt/p", {"anon": False})
    assert a != Location("s3://bkt/q", a.storage_options)
    with pytest.raises(AttributeError):
        a.url = "s3://elsewhere"  # type: ignore[misc]
    opts = a.storage_options
    opts["anon"] = False  # a copy: the Location keeps its own
    assert a == b and a.storage_options["anon"] is True
    given = {"key": "v", "nested": {"k": 1}}
    c = Location("memory://x", given)
    given["nested"]["k"] = 2  # the caller's dict is not held either
    assert c.storage_options == {"key": "v", "nested": {"k": 1}}


def test_of_takes_a_url_or_a_location():
    loc = Location("memory://earmark-loc/of", {"a": 1})
    assert Location.of(loc) is loc
    assert Location.of(loc, {"a": 1}) is loc
    assert Location.of("memory://earmark-loc/of", {"a": 1}) == loc
    with pytest.raises(ValueError, match="other storage options"):
        Location.of(loc, {"a": 2})


def test_repr_names_option_keys_never_values():
    loc = Location("s3://bkt/p", {"key": "AKIA-SECRET", "secret": "hunter2"})
    assert "AKIA" not in repr(loc) and "hunter2" not in repr(loc)
    assert "key" in repr(loc) and str(loc) == "s3://bkt/p"


def test_pickling_carries_url_and_options_not_the_filesystem():
    loc = Location("memory://earmark-loc/pickle", {"skip_instance_cache": False})
    fs = loc.fs  # built
    data = pickle.dumps(loc)
    assert b"MemoryFileSystem" not in data and len(data) < 300
    back = pickle.loads(data)
    assert back == loc and back.storage_options == loc.storage_options
    assert back._fs is not fs  # nothing built yet on this side ...
    back.fs.pipe_file(back.join("a"), b"1")  # ... until first use
    try:
        assert loc.fs.cat_file(loc.join("a")) == b"1"
    finally:
        loc.fs.rm(loc.path, recursive=True)
    child = pickle.loads(pickle.dumps(loc.child("sub")))
    assert child.path == "/earmark-loc/pickle/sub"


def s3_opts(**extra):
    return {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, **extra}


def test_an_s3_location_gets_earmarks_retries():
    """Built through get_fs, the one place: earmark's botocore retries and s3fs's loop."""
    loc = Location("s3://bkt/prefix/", s3_opts())
    assert loc.path == "bkt/prefix" and loc.uri(loc.join("a.wav")) == "s3://bkt/prefix/a.wav"
    assert loc.fs.config_kwargs["retries"] == {
        "mode": S3_RETRY_MODE,
        "total_max_attempts": S3_MAX_ATTEMPTS,
    }
    assert loc.fs.retries == S3FS_RETRIES
    assert loc.storage_options == s3_opts()  # the merge is get_fs's, not the Location's
    file = loc.at("s3://bkt/prefix/d/b.wav")
    assert file.fs is loc.fs and file.path == "bkt/prefix/d/b.wav"
    assert loc.at("s3a://bkt/x").fs is loc.fs  # another spelling of the same filesystem
    back = pickle.loads(pickle.dumps(loc))
    assert back.fs.retries == S3FS_RETRIES
    assert back.fs.config_kwargs["retries"]["mode"] == S3_RETRY_MODE
    mine = {"mode": "adaptive", "max_attempts": 2}
    theirs = Location("s3://bkt/p", s3_opts(config_kwargs={"retries": mine}))
    assert theirs.fs.config_kwargs == {"retries": mine}

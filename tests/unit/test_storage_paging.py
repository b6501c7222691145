"""Streamed, paged listing (`iter_file_pages`, `iter_top_level`) on local folders, an in-memory
filesystem and a scripted S3 store; the S3 retry options `get_fs` merges in."""

from __future__ import annotations

import os

import fsspec
import pytest
import s3fs
import s3fs.core
from botocore.exceptions import ClientError
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from earmark.storage import (
    S3_MAX_ATTEMPTS,
    S3_RETRY_MODE,
    S3FS_RETRIES,
    full_uri,
    get_fs,
    parse_storage_options,
)
from earmark.storage.paging import iter_file_pages, iter_top_level

# ---------------------------------------------------------------- local folders


@pytest.fixture
def tree(tmp_path):
    """root/ a.wav b.wav | sub1/ c.wav d.wav | sub1/deep/ e.wav | sub2/ f.wav | empty/ |
    link.wav -> a.wav | dirlink -> sub2 | broken.wav -> nowhere | pipe (a FIFO)."""
    root = tmp_path / "root"
    for rel in ("a.wav", "b.wav", "sub1/c.wav", "sub1/d.wav", "sub1/deep/e.wav", "sub2/f.wav"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    (root / "empty").mkdir()
    (root / "link.wav").symlink_to(root / "a.wav")
    (root / "dirlink").symlink_to(root / "sub2", target_is_directory=True)
    (root / "broken.wav").symlink_to(root / "nowhere.wav")
    os.mkfifo(root / "pipe")
    return root


FILES = ["a.wav", "b.wav", "sub1/c.wav", "sub1/d.wav", "sub1/deep/e.wav", "sub2/f.wav"]
LINKS = ["broken.wav", "dirlink", "link.wav"]


def names(pages):
    return [i["name"] for page in pages for i in page]


def test_local_pages_hold_every_file_once_in_pages_of_page_size(tree):
    fs = LocalFileSystem()
    pages = list(iter_file_pages(fs, str(tree), page_size=4))
    assert [len(p) for p in pages] == [4, 4, 1]
    got = names(pages)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(f"{tree}/{n}" for n in FILES + LINKS)  # no dirs, no FIFO
    for page in pages:
        assert [i["name"] for i in page] == sorted(i["name"] for i in page)


def test_local_infos_are_fsspecs_and_links_are_not_followed(tree):
    fs = LocalFileSystem()
    infos = {i["name"]: i for page in iter_file_pages(fs, str(tree)) for i in page}
    a = infos[f"{tree}/a.wav"]
    assert a["type"] == "file" and a["size"] == len(b"a.wav") and a["islink"] is False
    assert a["mtime"] == fs.info(f"{tree}/a.wav")["mtime"]  # the version field listing uses
    assert full_uri(fs, a["name"]) == f"file://{tree}/a.wav"
    for link in LINKS:  # reported as fsspec's local listing reports them, for the caller to stat
        assert infos[f"{tree}/{link}"]["islink"] is True
    # the linked folder's file is listed once, under its real folder only
    assert [n for n in infos if n.endswith("f.wav")] == [f"{tree}/sub2/f.wav"]
    # what fsspec's own find returns, less the FIFO
    found = {n for n, i in fs.find(str(tree), detail=True).items() if not n.endswith("pipe")}
    assert set(infos) == found


def test_local_folders_are_walked_in_sorted_order(tree):
    got = names(iter_file_pages(LocalFileSystem(), str(tree), page_size=1))
    folders = [os.path.dirname(n) for n in got]
    order = [f for i, f in enumerate(folders) if i == 0 or folders[i - 1] != f]
    assert order == [str(tree), f"{tree}/sub1", f"{tree}/sub1/deep", f"{tree}/sub2"]


def test_local_listing_is_lazy(tree):
    """The walk happens as pages are taken: a file added, after the first page, to a folder
    not walked yet is in a later page."""
    pages = iter_file_pages(LocalFileSystem(), str(tree), page_size=2)
    first = next(pages)
    assert {os.path.dirname(i["name"]) for i in first} == {str(tree)}
    (tree / "sub2" / "late.wav").write_bytes(b"late")
    assert f"{tree}/sub2/late.wav" in names(pages)


def test_local_file_path_missing_path_and_bad_page_size(tree):
    fs = LocalFileSystem()
    assert names(iter_file_pages(fs, f"file://{tree}/sub1/c.wav")) == [f"{tree}/sub1/c.wav"]
    with pytest.raises(FileNotFoundError):
        list(iter_file_pages(fs, str(tree / "missing")))
    with pytest.raises(ValueError, match="page_size"):
        iter_file_pages(fs, str(tree), page_size=0)


def test_local_relative_path_gives_absolute_names(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    got = names(iter_file_pages(LocalFileSystem(), "root/sub1"))
    assert sorted(got) == [f"{tree}/sub1/c.wav", f"{tree}/sub1/d.wav", f"{tree}/sub1/deep/e.wav"]


def test_local_top_level(tree):
    fs = LocalFileSystem()
    children = dict(iter_top_level(fs, str(tree)))
    dirs = sorted(p for p, info in children.items() if info is None)
    assert dirs == [f"{tree}/empty", f"{tree}/sub1", f"{tree}/sub2"]
    files = sorted(p for p, info in children.items() if info is not None)
    assert files == sorted(f"{tree}/{n}" for n in ["a.wav", "b.wav", *LINKS])
    assert children[f"{tree}/dirlink"]["islink"] is True
    assert children[f"{tree}/a.wav"]["size"] == len(b"a.wav")
    # fanning out over the subfolders lists everything exactly once
    fanned = files + [n for d in dirs for n in names(iter_file_pages(fs, d))]
    assert sorted(fanned) == sorted(f"{tree}/{n}" for n in FILES + LINKS)
    assert list(iter_top_level(fs, f"{tree}/a.wav")) == [(f"{tree}/a.wav", fs.info(tree / "a.wav"))]


# ---------------------------------------------------------------- any other filesystem


def test_other_filesystems_use_find_and_ls():
    fs = MemoryFileSystem()
    base = "/paging-test"
    for rel in ("x.wav", "d/y.wav", "d/e/z.wav"):
        fs.pipe(f"{base}/{rel}", b"1")
    try:
        pages = list(iter_file_pages(fs, base, page_size=2))
        assert [len(p) for p in pages] == [2, 1]
        assert sorted(names(pages)) == [f"{base}/d/e/z.wav", f"{base}/d/y.wav", f"{base}/x.wav"]
        assert all(i["type"] == "file" for p in pages for i in p)
        top = dict(iter_top_level(fs, base))
        assert top[f"{base}/d"] is None and top[f"{base}/x.wav"]["size"] == 1
    finally:
        fs.rm(base, recursive=True)


# ---------------------------------------------------------------- S3, scripted


class ScriptedS3(s3fs.S3FileSystem):
    """An S3FileSystem whose ListObjectsV2 answers from `keys` of bucket `bkt` (lexicographic,
    MaxKeys capped at 1000, CommonPrefixes with a delimiter) and counts its requests."""

    keys: list[str]
    requests: list[dict]

    def call_s3(self, method, *args, **kw):
        assert method == "list_objects_v2" and kw["Bucket"] == "bkt"
        self.requests.append(dict(kw))
        prefix, delim = kw["Prefix"], kw.get("Delimiter")
        limit = min(kw.get("MaxKeys", 1000), 1000)
        after = kw.get("ContinuationToken")
        keys = [k for k in sorted(self.keys) if k.startswith(prefix) and (not after or k > after)]
        contents, prefixes, last, i = [], [], None, 0
        while i < len(keys) and len(contents) + len(prefixes) < limit:
            rest = keys[i][len(prefix) :]
            if delim and delim in rest:
                cp = prefix + rest.split(delim)[0] + delim
                prefixes.append({"Prefix": cp})
                while i < len(keys) and keys[i].startswith(cp):
                    last, i = keys[i], i + 1
                continue
            contents.append({"Key": keys[i], "Size": len(keys[i]), "ETag": f'"{keys[i]}"'})
            last, i = keys[i], i + 1
        out = {"Contents": contents, "CommonPrefixes": prefixes, "IsTruncated": i < len(keys)}
        if i < len(keys):
            out["NextContinuationToken"] = last
        return out

    def info(self, path, **kw):
        key = path.split("/", 1)[1]
        if key in self.keys:
            return {"name": path, "type": "file", "size": len(key), "ETag": f'"{key}"'}
        raise FileNotFoundError(path)


def scripted(keys):
    fs = ScriptedS3(anon=True, skip_instance_cache=True)
    fs.keys, fs.requests = list(keys), []
    return fs


def test_s3_pages_are_streamed_from_listobjectsv2_without_markers():
    keys = [f"p/{d}/f{i:04d}.wav" for d in ("a", "b", "c") for i in range(1000)]
    markers = ["p/", "p/a/", "p/b/", "p/zz/"]  # directory markers: not files
    fs = scripted(keys + markers)
    pages = iter_file_pages(fs, "bkt/p", page_size=1000)
    first = next(pages)
    assert len(first) == 1000 and len(fs.requests) == 2  # "p/" and "p/a/" came in the first reply
    rest = list(pages)
    assert [len(p) for p in rest] == [1000, 1000]
    got = [i["name"] for i in first] + names(rest)
    assert got == [f"bkt/{k}" for k in sorted(keys)]  # each once, in key order
    req = fs.requests[0]
    assert req["Prefix"] == "p/" and "Delimiter" not in req and req["MaxKeys"] == 1000
    assert fs.requests[1]["ContinuationToken"] == "p/a/f0997.wav"
    assert {k: first[0][k] for k in ("name", "Key", "type", "size", "ETag")} == {
        "name": "bkt/p/a/f0000.wav",
        "Key": "bkt/p/a/f0000.wav",
        "type": "file",
        "size": len("p/a/f0000.wav"),
        "ETag": '"p/a/f0000.wav"',
    }
    assert full_uri(fs, first[0]["name"]) == "s3://bkt/p/a/f0000.wav"


@pytest.mark.parametrize(
    "page_size, sizes, requests", [(2500, [2500, 500], 3), (7, [7] * 428 + [4], 429)]
)
def test_s3_pages_of_any_size(page_size, sizes, requests):
    fs = scripted([f"q/f{i:04d}" for i in range(3000)])
    pages = iter_file_pages(fs, "bkt/q/", page_size=page_size)
    assert len(next(pages)) == sizes[0]
    assert len(fs.requests) == -(-page_size // 1000)  # only the replies the first page needed
    assert [len(p) for p in pages] == sizes[1:]
    assert len(fs.requests) == requests and fs.requests[0]["MaxKeys"] == min(page_size, 1000)


def test_s3_single_object_empty_prefix_and_bucket_root():
    fs = scripted(["one.wav", "dir/two.wav", "dir/"])
    assert names(iter_file_pages(fs, "bkt/one.wav")) == ["bkt/one.wav"]
    assert list(iter_file_pages(fs, "bkt/nothing-here")) == []
    assert sorted(names(iter_file_pages(fs, "bkt"))) == ["bkt/dir/two.wav", "bkt/one.wav"]
    assert fs.requests[-1]["Prefix"] == ""


def test_s3_top_level_uses_the_delimiter():
    keys = [f"r/d{d}/f{i}.wav" for d in range(3) for i in range(5)] + ["r/x.wav", "r/", "r/m/"]
    fs = scripted(keys)
    children = list(iter_top_level(fs, "bkt/r"))
    assert [c for c in children if c[1] is None] == [
        ("bkt/r/d0", None),
        ("bkt/r/d1", None),
        ("bkt/r/d2", None),
        ("bkt/r/m", None),
    ]
    files = [(p, i["size"]) for p, i in children if i is not None]
    assert files == [("bkt/r/x.wav", len("r/x.wav"))]  # the "r/" marker is not a file
    assert fs.requests[0]["Delimiter"] == "/" and fs.requests[0]["Prefix"] == "r/"
    assert list(iter_top_level(fs, "bkt/r/x.wav"))[0][0] == "bkt/r/x.wav"


# ---------------------------------------------------------------- S3 retry options


def s3_opts(**extra):
    return {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, **extra}


def test_get_fs_gives_s3_earmarks_retries():
    user = s3_opts(config_kwargs={"connect_timeout": 7})
    fs, path = get_fs("s3://bkt/some/prefix", user)
    assert path == "bkt/some/prefix"
    assert fs.config_kwargs == {
        "connect_timeout": 7,
        "retries": {"mode": S3_RETRY_MODE, "total_max_attempts": S3_MAX_ATTEMPTS},
    }
    assert fs.retries == S3FS_RETRIES
    assert user["config_kwargs"] == {"connect_timeout": 7}  # the caller's dict is not touched
    fs2, _ = get_fs("s3a://bkt/x", s3_opts())
    assert fs2.config_kwargs["retries"]["mode"] == S3_RETRY_MODE
    # the botocore client is built with it (no request is made)
    assert fs.s3.meta.config.retries == {"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS}


def test_the_users_retries_win():
    mine = {"mode": "adaptive", "max_attempts": 2}
    fs, _ = get_fs("s3://bkt/p", s3_opts(config_kwargs={"retries": mine}))
    assert fs.config_kwargs == {"retries": mine}
    # botocore's `max_attempts` counts retries: 2 retries = 3 attempts
    assert fs.s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    cli = parse_storage_options(["anon=true", "config_kwargs.retries.mode=legacy"])
    fs, _ = get_fs("s3://bkt/p", cli)
    assert fs.config_kwargs == {"retries": {"mode": "legacy"}}


def test_other_filesystems_get_no_s3_options(tmp_path):
    fs, _ = get_fs(str(tmp_path))
    assert isinstance(fs, LocalFileSystem)
    fs, _ = get_fs("memory://x/y")
    assert isinstance(fs, MemoryFileSystem)
    with pytest.raises(ValueError):  # an unknown protocol is fsspec's error, as before
        get_fs("nosuchproto://x")


def test_http_429_joins_s3fs_retry_loop_keeping_the_previous_handler(monkeypatch):
    seen = []

    def previous(exc):
        seen.append(exc)
        return isinstance(exc, KeyError)

    monkeypatch.setattr(s3fs.core, "CUSTOM_ERROR_HANDLER", previous)
    get_fs("s3://bkt/p", s3_opts())
    get_fs("s3://bkt/q", s3_opts())
    handler = s3fs.core.CUSTOM_ERROR_HANDLER
    too_many = ClientError(
        {"Error": {"Code": "429"}, "ResponseMetadata": {"HTTPStatusCode": 429}}, "HeadObject"
    )
    denied = ClientError(
        {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "GetObject",
    )
    assert handler(too_many) is True and seen == []
    assert handler(denied) is False and seen == [denied]
    assert handler(KeyError("x")) is True
    assert getattr(handler, "earmark_http_429", False)


def test_fsspec_caches_one_instance_per_options():
    a, _ = get_fs("s3://bkt/a", s3_opts())
    b, _ = get_fs("s3://bkt/b", s3_opts())
    assert a is b  # the merged options are stable, so per-file get_fs calls reuse the client
    assert fsspec.filesystem("s3", **s3_opts()) is not a  # plain options: another instance

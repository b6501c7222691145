"""S3 at archive scale against a real SeaweedFS: a 20,000-object prefix listed page by page, and
every kind of request riding out throttling (503 SlowDown, bare 429), server errors and dropped
connections through the retries `get_fs` configures; a user's own retry config wins."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from earmark.audio.fetch import read_and_decode
from earmark.contracts import LimitsSpec
from earmark.storage import Location, check_writable, full_uri, get_fs
from earmark.storage.paging import iter_file_pages, iter_top_level
from servers import FlakyProxy, ThrottlingProxy, filer_copy, filer_delete, upload_demo

N_DIRS, PER_DIR = 20, 1000  # 20,000 objects in 20 subprefixes
TOP_FILES = {"top-a.wav": b"a", "top-b.wav": b"bb"}  # put through S3: real ETags
MARKERS = ["zz-empty/", "zz-nested/deeper/"]  # directory markers, sorting after every file


@pytest.fixture(scope="module")
def archive(s3_server, tmp_path_factory):
    """(prefix, sorted paths of its files): 20,000 objects loaded with SeaweedFS's own bulk copy
    (signed PUTs from Python take minutes), plus files and markers put through S3."""
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    local = tmp_path_factory.mktemp("archive") / prefix
    for d in range(N_DIRS):
        folder = local / f"d{d:02d}"
        folder.mkdir(parents=True)
        for i in range(PER_DIR):
            (folder / f"f{i:04d}.wav").write_bytes(b"%d" % i)
    filer_copy(s3_server, local, "audio")
    s3_server.admin.pipe(
        {f"audio/{prefix}/{n}": b for n, b in TOP_FILES.items()}
        | {f"audio/{prefix}/{m}": b"" for m in MARKERS}
    )
    files = [f"audio/{prefix}/d{d:02d}/f{i:04d}.wav" for d in range(N_DIRS) for i in range(PER_DIR)]
    files += [f"audio/{prefix}/{n}" for n in TOP_FILES]
    yield prefix, sorted(files)
    filer_delete(s3_server, "audio", prefix)


@pytest.fixture
def proxy_for(s3_server):
    """Start ThrottlingProxy instances in front of the session's S3 server; stopped after."""
    started = []

    def start(**kw) -> ThrottlingProxy:
        started.append(ThrottlingProxy(s3_server.port, **kw))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def test_20k_objects_list_completely_once_page_by_page(archive, proxy_for):
    prefix, expected = archive
    counter = proxy_for(every=None)  # forwards everything, counts requests
    fs, path = get_fs(f"s3://audio/{prefix}", counter.options())
    pages = iter_file_pages(fs, path, page_size=1000)
    first = next(pages)
    # the first page is handed over after one ListObjectsV2 request, not after 21
    assert len(first) == 1000 and counter.requests["ListObjectsV2"] == 1
    seen, sizes = [i["name"] for i in first], [1000]
    for n, page in enumerate(pages, start=2):
        sizes.append(len(page))
        seen += [i["name"] for i in page]
        if n <= N_DIRS:  # each full page costs exactly one more request
            assert counter.requests["ListObjectsV2"] == n
    assert sizes == [1000] * N_DIRS + [len(TOP_FILES)]
    assert len(seen) == len(set(seen)) == N_DIRS * PER_DIR + len(TOP_FILES)
    assert sorted(seen) == expected  # complete, markers left out
    assert dict(counter.requests) == {"ListObjectsV2": 21}  # 20,004 keys, 1000 a reply
    info = first[0]
    assert info["type"] == "file" and info["size"] == 1 and "ETag" in info
    assert info["LastModified"] is not None
    assert full_uri(fs, info["name"]) == f"s3://audio/{prefix}/d00/f0000.wav"


def test_pages_larger_than_a_reply(archive, proxy_for):
    prefix, expected = archive
    counter = proxy_for(every=None)
    fs, path = get_fs(f"s3://audio/{prefix}/", counter.options())
    pages = iter_file_pages(fs, path, page_size=2500)
    assert len(next(pages)) == 2500 and counter.requests["ListObjectsV2"] == 3
    rest = list(pages)
    assert [len(p) for p in rest] == [2500] * 7 + [len(TOP_FILES)]
    top = {i["name"]: i for i in rest[-1]}
    etag = top[f"audio/{prefix}/top-b.wav"]["ETag"].strip('"')
    assert etag == hashlib.md5(b"bb").hexdigest()


def test_fan_out_over_the_top_level_lists_everything_once(archive, proxy_for):
    prefix, expected = archive
    counter = proxy_for(every=None)
    fs, path = get_fs(f"s3://audio/{prefix}", counter.options())
    children = list(iter_top_level(fs, path))
    subfolders = [p for p, info in children if info is None]
    assert subfolders == [f"audio/{prefix}/d{d:02d}" for d in range(N_DIRS)] + [
        f"audio/{prefix}/zz-empty",
        f"audio/{prefix}/zz-nested",
    ]
    files = [p for p, info in children if info is not None]
    assert files == [f"audio/{prefix}/{n}" for n in TOP_FILES]
    assert counter.requests["ListObjectsV2"] == 1  # 24 entries: one Delimiter='/' reply

    def list_tree(sub: str) -> list[str]:
        return [i["name"] for page in iter_file_pages(fs, sub, page_size=1000) for i in page]

    with ThreadPoolExecutor(4) as pool:  # as the listing tasks do, in parallel
        fanned = files + [n for names in pool.map(list_tree, subfolders) for n in names]
    assert len(fanned) == len(set(fanned)) and sorted(fanned) == expected


@pytest.fixture
def small(s3_server):
    prefix = f"throttle-{uuid.uuid4().hex[:8]}"
    data = {f"audio/{prefix}/f{i}.wav": bytes([65 + i]) * (i + 1) for i in range(5)}
    s3_server.admin.pipe(data)
    uris = upload_demo(s3_server.admin, f"audio/{prefix}/demo", ["s01_fox.wav"])
    yield prefix, data, uris[0]
    s3_server.admin.rm(f"audio/{prefix}", recursive=True)


def test_every_request_kind_rides_out_503_slowdown(s3_server, small, proxy_for):
    prefix, data, fox = small
    slow = proxy_for(every=3, status=503, code="SlowDown")  # the 1st, 4th, 7th... of each kind
    opts = slow.options()
    fs, path = get_fs(f"s3://audio/{prefix}", opts)
    listed = {i["name"]: i["size"] for p in iter_file_pages(fs, path, page_size=2) for i in p}
    assert listed == {p: len(b) for p, b in data.items()} | {fox[5:]: listed[fox[5:]]}
    assert {p for p, _ in iter_top_level(fs, path)} == {*data, f"audio/{prefix}/demo"}
    some = f"audio/{prefix}/f3.wav"
    assert fs.info(some)["size"] == 4  # HEAD
    assert fs.cat(some) == data[some]  # GET
    with fs.open(f"audio/{prefix}/f4.wav", "rb") as f:
        assert f.read() == data[f"audio/{prefix}/f4.wav"]
    fs.pipe_file(f"audio/{prefix}/new.wav", b"new")  # PUT
    fs.rm_file(f"audio/{prefix}/new.wav")  # DELETE
    fs.rm([f"audio/{prefix}/f0.wav", f"audio/{prefix}/f1.wav"])  # POST ?delete
    # call sites of earmark itself, its own read retry off
    source = Location(f"s3://audio/{prefix}", opts)
    audio = read_and_decode(f"s3://{fox[5:]}", None, LimitsSpec(read_retries=0), source)
    assert audio.duration_s > 1
    check_writable(source.child("out"))
    remaining = set(s3_server.admin.find(f"audio/{prefix}"))
    assert remaining == set(data) - {f"audio/{prefix}/f0.wav", f"audio/{prefix}/f1.wav"} | {fox[5:]}
    kinds = ["ListObjectsV2", "HeadObject", "GetObject", "PutObject", "DeleteObject"]
    for kind in [*kinds, "DeleteObjects"]:
        assert slow.refused[kind] >= 1, (kind, dict(slow.refused))
    assert sum(slow.refused.values()) >= 10


def test_bare_429_is_retried(small, proxy_for):
    """A 429 whose body carries no throttling code (a HEAD has no body at all): botocore's
    standard mode does not retry it, s3fs's loop does through earmark's handler."""
    prefix, data, _ = small
    limited = proxy_for(every=2, status=429, code="TooManyRequests", message="Rate exceeded")
    fs, path = get_fs(f"s3://audio/{prefix}", limited.options())
    some = f"audio/{prefix}/f2.wav"
    assert fs.info(some)["size"] == 3
    assert fs.cat(some) == data[some]
    fs.pipe_file(f"audio/{prefix}/new.wav", b"new")
    assert len([i for p in iter_file_pages(fs, path) for i in p]) == len(data) + 2
    for kind in ("HeadObject", "GetObject", "PutObject", "ListObjectsV2"):
        assert limited.refused[kind] >= 1, (kind, dict(limited.refused))


def test_500_is_retried_unless_the_users_own_retries_say_not(small, proxy_for):
    """A 500 is retried by botocore alone (s3fs's loop leaves it), so it shows which retry
    config the client got: earmark's, or the user's `config_kwargs.retries` when given."""
    prefix, data, _ = small
    url, some = f"s3://audio/{prefix}", f"audio/{prefix}/f2.wav"
    failing = dict(every=1, status=500, code="InternalError", operations={"HeadObject"})
    ours = proxy_for(**failing)
    fs, _ = get_fs(url, ours.options())
    assert fs.info(some)["size"] == 3
    assert ours.requests["HeadObject"] == 2 and ours.refused["HeadObject"] == 1

    theirs = proxy_for(**failing)
    no_retries = {"mode": "standard", "total_max_attempts": 1}
    fs, _ = get_fs(url, {**theirs.options(), "config_kwargs": {"retries": no_retries}})
    with pytest.raises(OSError):
        fs.info(some)
    assert theirs.requests["HeadObject"] == 1  # not retried at all
    assert fs.s3.meta.config.retries == no_retries


def test_a_connection_dropped_mid_body_is_retried(s3_server, small):
    prefix, data, _ = small
    s3_server.admin.pipe(f"audio/{prefix}/reset-me.wav", b"x" * 4096)
    flaky = FlakyProxy(s3_server.port, marker="reset-me")
    try:
        opts = {**s3_server.options(), "client_kwargs": {"endpoint_url": flaky.endpoint}}
        fs, _ = get_fs(f"s3://audio/{prefix}", opts)
        assert fs.cat(f"audio/{prefix}/reset-me.wav") == b"x" * 4096
        assert flaky.failures == 1
    finally:
        flaky.stop()


@pytest.mark.usefixtures("ray_session")
def test_scan_of_a_prefix_streams_every_object_into_one_row(s3_server, archive):
    """The job end to end on one subprefix of the archive (1,000 objects; the whole 20,000 is
    listed page by page above, and decoding all of it takes minutes on 2 cores): every object
    one row (these bytes are not audio: error rows), one right-sized output file, and a rerun
    that finds everything done."""
    from earmark.batch.runner import run_job
    from earmark.contracts import JobSpec
    from earmark.sink.shards import list_parts, read_output

    prefix, everything = archive
    opts = s3_server.options()
    expected = [p for p in everything if f"{prefix}/d00/" in p]
    spec = JobSpec(
        source=f"s3://audio/{prefix}/d00", output=f"s3://out/{prefix}", storage_options=opts
    )
    first = run_job(spec, with_model=False, progress=False)
    out = Location(spec.output, opts)
    ids = read_output(out, columns=["audio_id", "uri"])
    assert ids.num_rows == len(expected) == first.files_listed == first.output_rows == 1000
    assert len(set(ids["audio_id"].to_pylist())) == ids.num_rows
    assert sorted(u.removeprefix("s3://") for u in ids["uri"].to_pylist()) == expected
    assert len(list_parts(out)) == first.output_files == 1
    again = run_job(spec, with_model=False, progress=False)
    assert again.files_done_before == len(expected) and again.files_ok + again.files_error == 0

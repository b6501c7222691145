"""Serve pieces that need no Ray: URL policy (SSRF), token, body limit, tasks, response formats,
the ServeSpec and the benchmark's arithmetic."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import threading

import pytest

from earmark.bench.serve_bench_results import LevelResult, format_results, percentile
from earmark.compute.resources import ClusterSize
from earmark.contracts import JobError, parse_tasks
from earmark.serve.config import ServeSpec, UrlPolicy, check_serve_plan
from earmark.serve.formats import to_srt, to_verbose_json, to_vtt
from earmark.serve.inputs import build_tasks
from earmark.serve.security import (
    ApiError,
    check_bearer,
    check_url,
    fetch_http,
    forbidden_address,
    read_body_limited,
    resolve_public,
    token_digest,
)

POLICY = UrlPolicy(allowed_schemes=["s3", "http", "https"], allowed_buckets=["audio"])


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.0.0.8", "172.16.3.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "100.64.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "2002:7f00:1::1",
     "224.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_forbidden(ip):
    assert forbidden_address(ipaddress.ip_address(ip)) is not None


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(ip):
    assert forbidden_address(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("file:///etc/passwd", 403, "local"),
        ("/etc/passwd", 403, "local"),
        ("C:\\Windows\\win.ini", 403, "local"),
        ("memory://x/y.wav", 403, "local"),
        ("ftp://example.com/x.wav", 403, "local"),
        ("gs://audio/x.wav", 403, "scheme"),
        ("s3://other/x.wav", 403, "bucket"),
        ("s3://audio/", 400, "key"),
        ("s3://audio/a/../b.wav", 400, ".."),
        ("http://127.0.0.1/x", 403, "loopback"),
        ("http://169.254.169.254/latest/meta-data", 403, "link-local"),
        ("http://[::ffff:10.0.0.1]/x", 403, "private"),
        ("http://user:pw@example.com/x", 400, "credentials"),
        ("http://example.com:22/x", 403, "port"),
        ("http:///x", 400, "no host"),
        ("", 400, "empty"),
    ],
)
def test_check_url_refuses(url, status, words):
    with pytest.raises(ApiError) as err:
        check_url(url, POLICY)
    assert err.value.status == status and words in err.value.message


def test_check_url_accepts_allowed_urls():
    assert check_url("s3://audio/dir/x.wav", POLICY).path == "dir/x.wav"
    assert check_url("https://example.com/x.wav", POLICY).port == 443
    only = UrlPolicy(allowed_schemes=["https"], allowed_hosts=["files.example.com"])
    check_url("https://files.example.com/a.wav", only)
    with pytest.raises(ApiError):
        check_url("https://example.com/a.wav", only)


def test_local_schemes_cannot_be_configured():
    with pytest.raises(ValueError, match="never"):
        UrlPolicy(allowed_schemes=["https", "file"])


def test_names_resolving_to_loopback_are_refused():
    with pytest.raises(ApiError) as err:
        asyncio.run(resolve_public("localhost", 80))
    assert err.value.status == 403 and "loopback" in err.value.message


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        body = b"x" * (5000 if self.path == "/big" else 100)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Host-Seen", self.headers["Host"])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_fetch_http_pins_checked_address_and_checks_redirects():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    policy = UrlPolicy(allowed_schemes=["http"], allowed_ports=[port, 80])

    async def fake_resolver(host: str, _port: int) -> list[str]:
        assert host == "files.test"  # the name is resolved by us, once per hop
        return ["127.0.0.1"]  # stands in for a checked public address

    def fetch(path: str, limit: int = 1000):
        url = f"http://files.test:{port}{path}"
        return asyncio.run(fetch_http(url, policy, limit, 5.0, resolver=fake_resolver))

    try:
        data, final = fetch("/ok")
        assert data == b"x" * 100 and final.endswith("/ok")
        with pytest.raises(ApiError) as err:
            fetch("/big")
        assert err.value.status == 413
        with pytest.raises(ApiError) as err:
            fetch("/redirect")
        assert err.value.status == 403 and "link-local" in err.value.message
    finally:
        srv.shutdown()


def test_bearer_token():
    digest = token_digest("s3cret")
    check_bearer(None, None)  # no token configured: open
    check_bearer("Bearer s3cret", digest)
    for header, words in [
        (None, "missing"),
        ("Bearer nope", "invalid"),
        ("Basic s3cret", "Bearer"),
    ]:
        with pytest.raises(ApiError) as err:
            check_bearer(header, digest)
        assert err.value.status == 401 and words in err.value.message


def test_body_limit():
    async def chunks(n: int, size: int = 10):
        for _ in range(n):
            yield b"x" * size

    err = ApiError(413, "too big")
    assert asyncio.run(read_body_limited(None, chunks(10), 100, err)) == b"x" * 100
    with pytest.raises(ApiError):
        asyncio.run(read_body_limited(None, chunks(11), 100, err))
    with pytest.raises(ApiError):  # refused from the header alone
        asyncio.run(read_body_limited("101", chunks(0), 100, err))
    with pytest.raises(ApiError) as bad:
        asyncio.run(read_body_limited("lots", chunks(0), 100, err))
    assert bad.value.status == 400


def test_body_that_stalls_or_trickles_gets_408():
    async def stalls():
        yield b"x" * 10
        await asyncio.sleep(30)
        yield b"never"

    async def trickles():
        while True:
            yield b"x"
            await asyncio.sleep(0.05)

    err = ApiError(413, "too big")
    with pytest.raises(ApiError) as idle:
        asyncio.run(read_body_limited(None, stalls(), 100, err, idle_timeout_s=0.2))
    assert idle.value.status == 408 and "no data for 0.2 s after 10 bytes" in idle.value.message
    with pytest.raises(ApiError) as slow:  # never idle for long, but never done either
        asyncio.run(
            read_body_limited(None, trickles(), 10**6, err, idle_timeout_s=1, total_timeout_s=0.5)
        )
    assert slow.value.status == 408 and "over 0.5 s" in slow.value.message


def test_build_tasks():
    default = parse_tasks("asr")
    assert build_tasks(None, None, default) == default
    got = build_tasks("asr,caption", '{"mood": "What mood, if any?"}', default)
    assert [t.name for t in got] == ["asr", "caption", "mood"]
    assert got[2].prompt == "What mood, if any?"
    for tasks, prompts in [("asr,asr", None), ("Bad Name", None), (None, "[1]"), (None, "{x")]:
        with pytest.raises(ApiError) as err:
            build_tasks(tasks, prompts, default)
        assert err.value.status == 400


ROW = {
    "transcript": "Hello there. General Kenobi.",
    "duration_s": 3725.5,
    "segments": [
        {"start_s": 0.0, "end_s": 3600.25, "transcript": "Hello there."},
        {"start_s": 3600.25, "end_s": 3725.5, "transcript": "General Kenobi."},
    ],
}


def test_subtitle_formats():
    assert to_srt(ROW) == (
        "1\n00:00:00,000 --> 01:00:00,250\nHello there.\n\n"
        "2\n01:00:00,250 --> 01:02:05,500\nGeneral Kenobi.\n"
    )
    assert to_vtt(ROW).startswith("WEBVTT\n\n00:00:00.000 --> 01:00:00.250\nHello there.\n")
    v = to_verbose_json(ROW, "en")
    assert v["language"] == "english" and v["duration"] == 3725.5
    assert [s["id"] for s in v["segments"]] == [0, 1] and v["segments"][1]["start"] == 3600.25
    assert v["usage"] == {"type": "duration", "seconds": 3726}


def test_serve_spec_options_and_plan_check():
    spec = ServeSpec.model_validate({"batching": {"max_batch_size": 48}})
    opts = spec.model_deployment_options()
    assert opts["max_ongoing_requests"] >= 48  # else a replica could never fill a batch
    assert opts["user_config"] == {
        "max_batch_size": 48,
        "batch_wait_timeout_s": 0.05,
        "load_wait_fraction": 0.2,
        "max_load_wait_s": 1.0,
    }
    assert opts["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert opts["autoscaling_config"]["min_replicas"] == 1
    with pytest.raises(ValueError, match="caption"):
        ServeSpec.model_validate({"model": {"family": "whisper"}, "tasks": "asr,caption"})
    check_serve_plan(spec, ClusterSize(2, 0))
    with pytest.raises(JobError, match="cannot start"):
        check_serve_plan(spec, ClusterSize(1, 0))
    gpu = ServeSpec.model_validate({"resources": {"annotator_num_gpus": 1}})
    with pytest.raises(JobError, match="GPU"):
        check_serve_plan(gpu, ClusterSize(8, 0))


def test_bench_arithmetic():
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 99) == 4
    mk = lambda mode, rps, p: LevelResult(mode, 8, 32, 0, 1.0, rps, rps, p, 2 * p, 4.0)  # noqa: E731
    table = format_results([mk("on", 6.0, 100.0), mk("off", 2.0, 400.0)])
    assert "3.00x" in table and "0.25x" in table


def test_batch_wait_grows_only_under_load():
    from earmark.serve.model import next_batch_wait

    # a lone request: light load, the configured wait (single-client latency unchanged)
    assert next_batch_wait(1, 6.0, 0.05, 0.2, 1.0) == 0.05
    # a shared call: a fraction of its duration, between the configured wait and the cap
    assert next_batch_wait(25, 3.0, 0.05, 0.2, 1.0) == pytest.approx(0.6)
    assert next_batch_wait(25, 30.0, 0.05, 0.2, 1.0) == 1.0
    assert next_batch_wait(25, 0.1, 0.05, 0.2, 1.0) == 0.05
    assert next_batch_wait(25, 3.0, 0.05, 0.0, 1.0) == 0.05  # turned off


def test_serve_packs_whisper_windows_only_when_the_config_asks():
    # packing would let one client's audio shape another's transcript: off unless set
    assert ServeSpec().model.pack_windows is False
    assert ServeSpec.model_validate({"model": {"family": "whisper"}}).model.pack_windows is False
    on = ServeSpec.model_validate({"model": {"family": "whisper", "pack_windows": True}})
    assert on.model.pack_windows is True
    # the choice survives the round trip to the replicas (dumped, validated again)
    for spec in (ServeSpec(), on):
        again = ServeSpec.model_validate_json(spec.model_dump_json(exclude_unset=True))
        assert again.model.pack_windows is spec.model.pack_windows
    # the batch job keeps packing on by default (one job, one owner)
    from earmark.contracts import ModelSpec

    assert ModelSpec(family="whisper").pack_windows is True


def test_a_serve_config_refuses_batch_job_resources_with_what_to_set_instead():
    from pydantic import ValidationError

    from earmark.serve.config import ServeSpec

    with pytest.raises(ValidationError, match="resources.max_actors: use autoscaling.max_replicas"):
        ServeSpec.model_validate({"resources": {"max_actors": 4}})
    spec = ServeSpec.model_validate({"resources": {"annotator_num_cpus": 2}})
    assert spec.resources.annotator_num_cpus == 2  # what a replica needs is welcome


def test_serve_resources_are_what_one_annotator_needs_and_a_job_adds_its_plan():
    from earmark.contracts import ActorResources, ResourceSpec
    from earmark.serve.config import BATCH_ONLY_RESOURCES, ServeSpec

    actor = set(ActorResources.model_fields)
    assert ServeSpec.model_fields["resources"].annotation is ActorResources
    assert actor == {"annotator_num_cpus", "annotator_num_gpus", "annotator_resources",
                     "cluster_cpus"}  # fmt: skip
    # the batch plan is exactly what a Serve config refuses, with what to set instead
    assert set(ResourceSpec.model_fields) - actor == set(BATCH_ONLY_RESOURCES)
    with pytest.raises(ValueError, match="min_actors.*autoscaling.min_replicas"):
        ServeSpec.model_validate({"resources": {"min_actors": 1}})  # even at its default

"""Real Ray Serve on 127.0.0.1 with Whisper tiny.en: the OpenAI client, row parity with the
batch path, 32 concurrent clients forming batches, hostile input, a replica killed under load.

One Serve application for the whole module (starting one costs ~20 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import re
import socket
import struct
import threading
import time
import wave

import httpx
import numpy as np
import pytest
import yaml

import earmark
from earmark.contracts import OUTPUT_SCHEMA, OutputRow
from earmark.evaluation.wer import edit_counts, tokens
from paths import DEMO, REPO
from servers import serve_app

KEY = "test-key-7c1f"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_UPLOAD = 1_000_000  # bytes: small, so the 413 test sends little
MAX_DURATION_S = 20.0
CLIENT_TIMEOUT_S = 180.0
BODY_IDLE_S = 2.0  # a stalled upload gets its 408 after this long
MANIFEST = {
    r["uri"]: r["text"] for r in map(json.loads, (DEMO / "manifest.jsonl").read_text().splitlines())
}
SHORT_CLIPS = ["s04_eggs.ogg", "s07_coffee.webm", "s06_beach.m4a", "s12_bread.m4a"]


def wer(ref: str, hyp: str) -> float:
    r, h = tokens(ref, "en"), tokens(hyp, "en")
    return sum(edit_counts(r, h)) / max(len(r), 1)


def wav_bytes(seconds: float, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.zeros(int(seconds * sr)) + 0).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(ray_session, s3_server):
    from earmark.serve.config import ServeSpec

    s3_server.admin.pipe("audio/fox.wav", (DEMO / "s01_fox.wav").read_bytes())
    spec = ServeSpec.model_validate(
        {
            "model": {"family": "whisper", "checkpoint": "tiny.en", "batch_size": 16},
            "resources": {"annotator_num_cpus": 1},
            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.2},
            # max 2: the autoscaling config is live, but the target keeps one replica here
            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 64},
            "limits": {
                "max_upload_bytes": MAX_UPLOAD,
                "max_duration_s": MAX_DURATION_S,
                "body_idle_timeout_s": BODY_IDLE_S,
            },
            "urls": {
                "allowed_schemes": ["s3", "http", "https"],
                "allowed_buckets": ["audio"],
                "storage_options": s3_server.options(),
            },
            "ingress": {"num_cpus": 0.25},
            "health_check_period_s": 2,
        }
    )
    with serve_app(spec, api_key=KEY) as url:
        yield url


def post_file(url: str, name: str, data: bytes | None = None, **kw) -> httpx.Response:
    data = data if data is not None else (DEMO / name).read_bytes()
    headers = kw.pop("headers", AUTH)
    return httpx.post(
        f"{url}/v1/annotate", files={"file": (name, data)}, headers=headers,
        timeout=CLIENT_TIMEOUT_S, **kw,
    )  # fmt: skip


# -- OpenAI compatibility ---------------------------------------------------------------------


def test_openai_client_transcribes_and_formats(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=KEY, timeout=CLIENT_TIMEOUT_S, max_retries=0)
    assert {"whisper-1", "whisper:tiny.en"} <= {m.id for m in client.models.list()}
    ref = MANIFEST["s01_fox.wav"]

    def create(fmt: str):
        with (DEMO / "s01_fox.wav").open("rb") as f:
            return client.audio.transcriptions.create(
                model="whisper-1", file=f, response_format=fmt, language="en"
            )

    results = {}
    threads = [
        threading.Thread(target=lambda f=f: results.__setitem__(f, create(f)))
        for f in ("json", "text", "verbose_json", "srt", "vtt")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wer(ref, results["json"].text) <= 0.1, results["json"].text
    text = results["text"]
    assert isinstance(text, str) and text.strip() == results["json"].text
    verbose = results["verbose_json"]
    assert verbose.text == results["json"].text
    assert verbose.language == "english" and abs(verbose.duration - 4.72) < 0.01
    assert len(verbose.segments) == 1 and verbose.segments[0].end == pytest.approx(4.72)
    # measured, not placeholders: the decoder's confidence and Whisper's word timings
    seg = verbose.segments[0]
    assert -1.0 < seg.avg_logprob < 0.0 and 0.0 <= seg.no_speech_prob < 0.6
    words = verbose.words
    assert [w.word for w in words] == results["json"].text.split()
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and 0.0 <= times[0] and times[-1] <= 4.72
    srt = results["srt"]
    assert re.match(r"1\n00:00:00,000 --> 00:00:04,720\n\S.*\n", srt), srt
    vtt = results["vtt"]
    assert re.match(r"WEBVTT\n\n00:00:00\.000 --> 00:00:04\.720\n\S.*\n", vtt), vtt


# -- same row as the batch path ---------------------------------------------------------------


def test_annotate_row_equals_batch_row(server, s3_server):
    from earmark.annotate.local import annotate_files
    from earmark.contracts import ModelSpec, parse_tasks, rows_to_table

    files = ["s01_fox.wav", "s10_meeting.mp3"]
    # the server's model spec: Serve leaves whisper packing off unless its config turns it on
    spec = ModelSpec(family="whisper", checkpoint="tiny.en", pack_windows=False)
    batch = annotate_files([str(DEMO / f) for f in files], spec, parse_tasks("asr"))
    same = [
        "status", "transcript", "segments", "duration_s", "source_sample_rate",
        "source_channels", "codec", "container", "num_windows", "model", "model_revision",
        "caption", "tags", "answers", "error", "earmark_version", "speech_s", "language",
        "flags",
    ]  # fmt: skip
    for name, want in zip(files, batch, strict=True):
        r = post_file(server, name)
        assert r.status_code == 200, r.text
        row = r.json()
        assert list(row) == list(OutputRow.model_fields)  # the Parquet row's fields, in order
        assert {k: row[k] for k in same} == {k: want[k] for k in same}
        assert row["uri"] == f"upload://{name}"
        assert row["size_bytes"] == (DEMO / name).stat().st_size
        assert row["earmark_version"] == earmark.__version__ and row["job_id"] is None
        # the JSON row fits the Arrow output schema as is (timestamps parsed back)
        created = dt.datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
        arrow_row = {**row, "created_at": created}
        assert rows_to_table([arrow_row]).schema == OUTPUT_SCHEMA

    # the same file as base64 JSON and from the object store: same transcript
    fox = (DEMO / "s01_fox.wav").read_bytes()
    as_json = httpx.post(
        f"{server}/v1/annotate", headers=AUTH, timeout=CLIENT_TIMEOUT_S,
        json={"audio": base64.b64encode(fox).decode(), "filename": "fox.wav", "tasks": "asr"},
    )  # fmt: skip
    from_s3 = httpx.post(
        f"{server}/v1/annotate", headers=AUTH, json={"url": "s3://audio/fox.wav"},
        timeout=CLIENT_TIMEOUT_S,
    )  # fmt: skip
    for r in (as_json, from_s3):
        assert r.status_code == 200, r.text
        assert r.json()["transcript"] == batch[0]["transcript"]
    assert from_s3.json()["uri"] == "s3://audio/fox.wav"


def test_a_member_of_a_packed_shard_by_its_row_uri(server, s3_server, tmp_path):
    """`SHARD#KEY`, the uri a job's row gives a member, is one clip for Serve too; a whole shard,
    a key it does not hold and a shard over http(s) are refused with what to send instead."""
    from packed_factory import hf_parquet, tar_shard

    fox = (DEMO / "s01_fox.wav").read_bytes()
    tar_shard(tmp_path / "s.tar", [("k0", {"wav": wav_bytes(0.5)}), ("fox", {"wav": fox})])
    hf_parquet(tmp_path / "d.parquet", [("silence.wav", wav_bytes(0.5)), ("fox.wav", fox)], 1)
    for name in ("s.tar", "d.parquet"):
        s3_server.admin.put(str(tmp_path / name), f"audio/packed/{name}")
    want = post_file(server, "s01_fox.wav").json()["transcript"]
    for uri in ("s3://audio/packed/s.tar#fox", "s3://audio/packed/d.parquet#1"):
        r = httpx.post(f"{server}/v1/annotate", headers=AUTH, json={"url": uri}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["uri"] == uri and r.json()["transcript"] == want
        assert r.json()["size_bytes"] == len(fox)
    for url, status, words in [
        ("s3://audio/packed/s.tar", 400, "packed shard of many clips"),
        ("s3://audio/packed/s.tar#nope", 400, "no sample with the key 'nope'"),
        ("s3://audio/packed/d.parquet#9", 400, "no row 9"),
        ("https://example.com/s.tar#fox", 400, "object-store URLs only"),
    ]:
        r = httpx.post(f"{server}/v1/annotate", headers=AUTH, json={"url": url}, timeout=60)
        _assert_error(r, status, words)


# -- load: 32 concurrent clients --------------------------------------------------------------


async def _many(url: str, names: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(names))
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{url}/v1/annotate",
                    headers=AUTH,
                    files={"file": (n, (DEMO / n).read_bytes())},
                )  # fmt: skip
                for n in names
            )
        )


def test_32_concurrent_clients_succeed_in_batches(server):
    names = [SHORT_CLIPS[i % len(SHORT_CLIPS)] for i in range(32)]
    t0 = time.monotonic()
    responses = asyncio.run(_many(server, names))
    wall = time.monotonic() - t0
    assert [r.status_code for r in responses] == [200] * 32, [r.text for r in responses][:3]
    by_clip: dict[str, set[str]] = {}
    for n, r in zip(names, responses, strict=True):
        by_clip.setdefault(n, set()).add(r.json()["transcript"])
    # batch-invariant: a clip gets the same text whatever batch it rode in, and the right one
    for n, texts in by_clip.items():
        assert len(texts) == 1, (n, texts)
        assert wer(MANIFEST[n], texts.pop()) <= 0.2
    sizes = [int(r.headers["x-earmark-batch-size"]) for r in responses]
    assert max(sizes) > 1, sizes
    stats = httpx.get(f"{server}/v1/stats", headers=AUTH).json()
    assert stats["max_batch_size_seen"] > 1 and stats["max_batch_size_seen"] <= 16
    print(f"32 clients: {wall:.1f} s, batch sizes {sorted(sizes)}")


# -- hostile input ----------------------------------------------------------------------------

CORRUPT = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8
HOSTILE_URLS = [
    ("file:///etc/passwd", 403),
    ("/etc/passwd", 403),
    ("http://127.0.0.1/x.wav", 403),
    ("http://127.0.0.1:8000/v1/models", 403),  # and a port not allowed
    ("http://169.254.169.254/latest/meta-data/", 403),
    ("http://localhost/x.wav", 403),  # a name that resolves to loopback
    ("http://0x7f000001/x.wav", 403),  # 127.0.0.1 spelled in hex: resolved, then refused
    ("http://[::1]/x.wav", 403),
    ("http://[::ffff:169.254.169.254]/x", 403),
    ("http://10.1.2.3/x.wav", 403),
    ("https://example.com:8443/x.wav", 403),  # port not allowed
    ("s3://locked/x.wav", 403),  # bucket not allowed
    ("gopher://example.com/x", 403),
    ("s3://audio/missing.wav", 400),
]


@pytest.mark.parametrize(("url", "status"), HOSTILE_URLS)
def test_hostile_urls_are_refused(server, url, status):
    r = httpx.post(f"{server}/v1/annotate", headers=AUTH, json={"url": url}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def _assert_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and 'File "' not in r.text
    msg = r.json()["error"]["message"]
    assert words.lower() in msg.lower(), msg


def test_hostile_bodies_get_4xx_with_a_message(server):
    url = f"{server}/v1/annotate"
    big = np.random.default_rng(0).bytes(MAX_UPLOAD + 600_000)
    _assert_error(post_file(server, "big.wav", big), 413, "limit")
    # no Content-Length (chunked): refused while streaming
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    r = httpx.post(url, headers={**AUTH, "content-type": "application/json"}, content=chunks)
    _assert_error(r, 413, "limit")
    _assert_error(post_file(server, "long.wav", wav_bytes(MAX_DURATION_S + 5)), 422, "limit")
    _assert_error(post_file(server, "bad.wav", CORRUPT), 400, "bad.wav")
    _assert_error(post_file(server, "empty.wav", b""), 400, "empty")
    truncated = (DEMO / "s01_fox.wav").read_bytes()[:20_000]
    _assert_error(post_file(server, "cut.wav", truncated), 400, "truncated")
    r = httpx.post(url, headers={**AUTH, "content-type": "text/plain"}, content=b"hello")
    _assert_error(r, 415, "content type")
    r = httpx.post(url, headers={**AUTH, "content-type": "application/json"}, content=b"{not json")
    _assert_error(r, 400, "invalid json")
    r = httpx.post(url, headers=AUTH, json={"audio": "@@@not base64@@@"})
    _assert_error(r, 400, "base64")
    r = httpx.post(url, headers=AUTH, json={"audio": "AAAA", "url": "s3://audio/fox.wav"})
    _assert_error(r, 400, "exactly one")
    r = httpx.post(url, headers=AUTH, json={"url": "s3://audio/fox.wav", "tasks": "caption"})
    _assert_error(r, 400, "cannot do task")
    r = httpx.post(url, headers=AUTH, json={"url": "s3://audio/fox.wav", "tasks": "Bad Name"})
    _assert_error(r, 400, "invalid tasks")
    r = httpx.post(url, headers={**AUTH, "content-type": "multipart/form-data; boundary=x"},
                   content=b"--x\r\ngarbage")  # fmt: skip
    assert r.status_code == 400, r.text

    tr = f"{server}/v1/audio/transcriptions"
    fox = (DEMO / "s01_fox.wav").read_bytes()
    r = httpx.post(tr, headers=AUTH, json={"file": "x", "model": "whisper-1"})
    _assert_error(r, 415, "multipart")
    r = httpx.post(tr, headers=AUTH, files={"file": ("a.wav", fox)}, data={"model": "gpt-9"})
    _assert_error(r, 404, "not served")
    r = httpx.post(
        tr, headers=AUTH, files={"file": ("a.wav", fox)},
        data={"model": "whisper-1", "response_format": "xml"},
    )  # fmt: skip
    _assert_error(r, 400, "response_format")


def _wav_header(fmt_tag: int, bits: int, rate: int, data: bytes, declared: int) -> bytes:
    block = max(bits // 8, 1)
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, rate, rate * block, block, bits)
    head = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", declared)
    return b"RIFF" + struct.pack("<I", len(head) + len(data)) + head + data


def test_hostile_files_and_forms_found_in_review(server):
    """Each of these once got a 500, a misleading status, a 20-s stall or a silent guess."""
    url = f"{server}/v1/annotate"
    sdp = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 40000 RTP/AVP 0\n"
    # refused before any demuxer opens it (FFmpeg's SDP demuxer listened on UDP for 20 s)
    _assert_error(post_file(server, "t.sdp", sdp), 400, "supported audio container")
    no_decoder = _wav_header(1, 0, 16000, b"\0" * 6400, 6400)  # PCM with 0 bits per sample
    _assert_error(post_file(server, "b0.wav", no_decoder), 400, "no decoder")
    lying = _wav_header(1, 16, 16000, b"\0" * 64000, 0xFFFFFFF0)  # 2 s claiming 37 h
    _assert_error(post_file(server, "lie.wav", lying), 400, "truncated")
    streamed = _wav_header(1, 16, 16000, b"\0" * 64000, 0x7FFFFFFF)  # a recorder's pipe output
    assert post_file(server, "pipe.wav", streamed).json()["duration_s"] == 2.0
    # base64 of one byte over the limit: the length estimate alone let it through
    over = (DEMO / "s01_fox.wav").read_bytes().ljust(MAX_UPLOAD + 1, b"\0")
    r = httpx.post(url, headers=AUTH, json={"audio": base64.b64encode(over).decode()})
    _assert_error(r, 413, "limit")
    fox = (DEMO / "s01_fox.wav").read_bytes()
    two = [("file", ("a.wav", fox)), ("file", ("b.wav", fox))]
    _assert_error(httpx.post(url, headers=AUTH, files=two), 400, "sent 2 times")
    tr = f"{server}/v1/audio/transcriptions"
    r = httpx.post(tr, headers=AUTH, files={"file": ("a.wav", fox)})
    _assert_error(r, 400, "missing form field 'model'")
    r = httpx.post(url, headers=AUTH, json={"url": "s3://audio/fox.wav", "tasks": 'm="open'})
    _assert_error(r, 400, "unterminated")
    # routes that do not exist answer in the API's error format too
    _assert_error(httpx.get(f"{server}/nope", headers=AUTH), 404, "no such route")
    _assert_error(httpx.get(url, headers=AUTH), 405, "method not allowed")
    counts = httpx.get(f"{server}/v1/stats", headers=AUTH).json()["responses"]
    assert counts.get("404", 0) >= 1 and counts.get("405", 0) >= 1 and counts["400"] >= 6


def test_stalled_upload_gets_408_after_the_idle_timeout(server):
    """An upload that stops sending must not hold an ingress slot for as long as it likes."""
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"POST /v1/annotate HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        t0 = time.monotonic()
        sock.sendall(head.encode() + b'{"url": "s3://aud')  # 18 of the 1000 bytes promised
        reply = sock.recv(65536).decode(errors="replace")
        waited = time.monotonic() - t0
        length = int(re.search(r"content-length: (\d+)", reply, re.I).group(1))
        while len(reply.partition("\r\n\r\n")[2]) < length:  # the body may come separately
            reply += sock.recv(65536).decode(errors="replace")
    status_line, _, rest = reply.partition("\r\n")
    assert " 408 " in status_line, reply
    assert "too slowly" in rest and "body_idle_timeout_s" in rest
    assert waited >= BODY_IDLE_S  # not before the configured idle time (the socket's own
    # 60 s timeout ends the test if the server never answers)


def test_token_is_required_except_for_healthz(server):
    for path in ("/v1/models", "/v1/stats", "/openapi.json"):
        _assert_error(httpx.get(f"{server}{path}"), 401, "missing bearer")
        bad = {"Authorization": "Bearer not-the-key"}
        _assert_error(httpx.get(f"{server}{path}", headers=bad), 401, "invalid api key")
        assert httpx.get(f"{server}{path}", headers=AUTH).status_code == 200
    _assert_error(post_file(server, "s01_fox.wav", headers={}), 401, "missing bearer")
    r = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": ("a.wav", b"x")},
                   data={"model": "whisper-1"}, headers={"Authorization": "Basic abc"})  # fmt: skip
    _assert_error(r, 401, "bearer")
    health = httpx.get(f"{server}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    paths = httpx.get(f"{server}/openapi.json", headers=AUTH).json()["paths"]
    assert {"/v1/annotate", "/v1/audio/transcriptions", "/v1/models", "/healthz"} <= set(paths)


# -- configs ----------------------------------------------------------------------------------


def test_serve_configs_are_deployable_and_rayservice_uses_one():
    from ray.serve.schema import ServeDeploySchema

    from earmark.serve.config import ServeSpec

    for path in sorted((REPO / "serve_app").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        ServeDeploySchema.model_validate(config)
        (app,) = config["applications"]
        assert app["import_path"] == "earmark.serve.app:build_app"
        ServeSpec.from_yaml(path)  # the args are a valid ServeSpec
    service = yaml.safe_load((REPO / "infra" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    inline = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert inline == yaml.safe_load((REPO / "serve_app" / "eureka.yaml").read_text())


# -- a replica killed under load (last: it disturbs the app) ----------------------------------


def _annotator_actor_names() -> set[str]:
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "Annotator" in a["name"] and a["namespace"] == "serve"
    }


def test_replica_killed_under_load_recovers(server):
    import ray

    (victim,) = _annotator_actor_names()
    names = [SHORT_CLIPS[i % len(SHORT_CLIPS)] for i in range(12)]
    box: dict[str, list[httpx.Response]] = {}
    load = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(_many(server, names))))
    load.start()
    time.sleep(1.5)  # requests are queued or running on the replica now
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    load.join(timeout=CLIENT_TIMEOUT_S)
    during = [r.status_code for r in box["r"]]
    assert set(during) <= {200, 503}, during  # a failure is a clean 503, never a hang or 500
    deadline = time.monotonic() + 120
    while True:  # Serve replaces the replica; requests succeed again
        r = post_file(server, "s07_coffee.webm")
        if r.status_code == 200:
            break
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(1)
    after = asyncio.run(_many(server, names[:8]))
    assert [r.status_code for r in after] == [200] * 8
    assert wer(MANIFEST["s07_coffee.webm"], r.json()["transcript"]) <= 0.2
    assert victim not in _annotator_actor_names()  # a new replica answered
    print(f"during the kill: {during.count(200)} ok, {during.count(503)} x 503")

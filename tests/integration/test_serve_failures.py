"""Serve under a failing device: the replica answers 503 (never 422, never a row), reports
itself unhealthy, and Serve replaces it; requests then succeed again.

The model is `earmark.testing.faulty.FaultyModel`: it starts failing with a CUDA-style error
once a marker file newer than its load appears, so the replacement replica (loaded after the
marker) works.
"""

from __future__ import annotations

import io
import time

import httpx
import pytest
import soundfile as sf

from audio_factory import tone
from earmark.testing.faulty import loads, write_plan
from servers import serve_app

REPLACE_TIMEOUT_S = 180.0  # Serve notices within a health-check period, then starts a replica


def wav_bytes(seconds: float, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(330, sr, seconds)[0], sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def faulty_server(ray_session, tmp_path_factory):
    from earmark.serve.config import ServeSpec

    root = tmp_path_factory.mktemp("faulty")
    marker = root / "device_lost"
    ckpt = write_plan(root / "ckpt", after_marker=str(marker), mode="device_error")
    spec = ServeSpec.model_validate(
        {
            # a tone holds no speech: min_speech_s 0 sends it to the model all the same
            "model": {
                "family": "earmark.testing.faulty.FaultyModel",
                "checkpoint": ckpt,
                "min_speech_s": 0,
            },
            "tasks": "asr",
            "resources": {"annotator_num_cpus": 0.5},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "ingress": {"num_cpus": 0.25},
            "health_check_period_s": 1,
            "health_check_timeout_s": 10,
        }
    )
    with serve_app(spec) as url:
        yield url, ckpt, marker


def annotate(url: str, seconds: float) -> httpx.Response:
    files = {"file": ("tone.wav", wav_bytes(seconds))}
    return httpx.post(f"{url}/v1/annotate", files=files, timeout=60)


def test_a_replica_whose_device_fails_answers_503_and_is_replaced(faulty_server):
    url, ckpt, marker = faulty_server
    first = annotate(url, 1.0)
    assert first.status_code == 200 and first.json()["transcript"] == "asr: 16000 samples"
    assert len(loads(ckpt)) == 1
    marker.write_text("the GPU fell off the bus")  # from now on this replica's device fails
    failed = annotate(url, 1.5)
    assert failed.status_code == 503, failed.text
    assert "illegal memory access" in failed.json()["error"]["message"]
    deadline = time.monotonic() + REPLACE_TIMEOUT_S
    while time.monotonic() < deadline:
        r = annotate(url, 2.0)
        assert r.status_code in (200, 503), r.text  # never 422 or 500 for a dead device
        if r.status_code == 200:
            break
        time.sleep(0.5)  # a poll interval, not ordering: the loop waits for a condition
    assert r.status_code == 200 and r.json()["transcript"] == "asr: 32000 samples"
    assert len(loads(ckpt)) == 2  # a new replica loaded the model

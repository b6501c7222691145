"""`earmark run --engine vllm` on the demo corpus gives the rows `--engine hf` gives (issue #17),
through the whole job: listing, decoding, windows, the speech gate, the Annotator actor (whose
model is the vLLM engine process), the merge, the flags and the Parquet output. And a Serve
application on the vLLM engine: rows equal to the batch path's, the OpenAI route unchanged, and
concurrent requests decoded together by the engine (continuous batching).

The checkpoints are tiny random-weight ones that vLLM's own implementations load; vLLM runs in
its own environment (`make vllm-env`, which `make test` builds).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from earmark.batch.runner import run_job
from earmark.contracts import JobSpec
from earmark.sink.shards import read_output
from earmark.testing.tiny_moss import build_tiny_moss
from paths import DEMO, REPO
from servers import serve_app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
TASKS = "asr,caption"
MAX_TOKENS = 6
# what a row says about its content; the rest names the run (model, timings, job id)
CONTENT = [
    "audio_id", "uri", "status", "error", "duration_s", "num_windows", "speech_s", "transcript",
    "caption", "tags", "answers", "language", "flags",
]  # fmt: skip
KEY = "vllm-key-51d0"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLIPS = ["s01_fox.wav", "s04_eggs.ogg", "s06_beach.m4a", "s10_meeting.mp3"]


@pytest.fixture(scope="module")
def moss(tmp_path_factory) -> Path:
    return build_tiny_moss(tmp_path_factory.mktemp("moss"), vllm_ready=True, init_std=0.5)


def content(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for r in rows:
        row = {k: r[k] for k in CONTENT}
        row["segments"] = [
            {k: s[k] for k in ("start_s", "end_s", "transcript", "flags")} for s in r["segments"]
        ]
        out[r["audio_id"]] = row
    return out


@pytest.mark.parametrize("family", ["moss", "midashenglm"])
def test_run_on_vllm_gives_the_rows_of_hf(family, moss, tmp_path):
    from earmark.testing.tiny import build_tiny_checkpoint

    ckpt = moss if family == "moss" else build_tiny_checkpoint(family, tmp_path / "ckpt")
    model = {"family": family, "checkpoint": str(ckpt), "max_new_tokens": MAX_TOKENS}
    hf = JobSpec(
        source=str(DEMO / "manifest.jsonl"), output=str(tmp_path / "hf"), tasks=TASKS, model=model
    )
    summary = run_job(hf, progress=False)
    assert summary.files_ok == 14, summary.errors_by_kind
    # the user's command, as a user types it
    cmd = [
        sys.executable, "-m", "earmark.cli", "run", str(DEMO / "manifest.jsonl"),
        "--out", str(tmp_path / "vllm"), "--model", f"{family}:{ckpt}", "--engine", "vllm",
        "--tasks", TASKS, "--max-new-tokens", str(MAX_TOKENS), "--cpus", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ours = read_output(str(tmp_path / "hf")).to_pylist()
    theirs = read_output(str(tmp_path / "vllm")).to_pylist()
    assert len(theirs) == 14 and all(r["status"] == "ok" for r in theirs)
    assert content(theirs) == content(ours)
    assert {r["model"] for r in theirs} == {f"{family}:{ckpt} (vllm 0.32.0, batch-invariant)"}
    assert len({r["caption"] for r in theirs}) > 5  # the clips get different outputs
    assert any(r["flags"] and "no_speech" in r["flags"] for r in theirs)  # the gate ran


# -- Serve on the vLLM engine -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(ray_session, moss):
    from earmark.serve.config import ServeSpec

    spec = ServeSpec.model_validate(
        {
            "model": {
                "family": "moss",
                "checkpoint": str(moss),
                "engine": "vllm",
                "max_new_tokens": MAX_TOKENS,
            },
            "tasks": TASKS,
            "model_aliases": ["whisper-1"],
            "resources": {"annotator_num_cpus": 1},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "ingress": {"num_cpus": 0.25},
        }
    )
    with serve_app(spec, api_key=KEY, timeout_s=300) as url:
        yield url


async def _many(url: str, names: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=32)) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"{url}/v1/annotate",
                    headers=AUTH,
                    files={"file": (n, (DEMO / n).read_bytes())},
                )
                for n in names
            )
        )


def test_serve_on_vllm_rows_equal_the_batch_path_and_requests_share_the_engine(server, moss):
    from earmark.annotate.local import annotate_files
    from earmark.contracts import ModelSpec, parse_tasks

    spec = ModelSpec(family="moss", checkpoint=str(moss), max_new_tokens=MAX_TOKENS)
    want = annotate_files([str(DEMO / n) for n in CLIPS], spec, parse_tasks(TASKS))
    names = CLIPS * 3
    responses = asyncio.run(_many(server, names))
    assert [r.status_code for r in responses] == [200] * len(names), responses[0].text
    for n, r in zip(names, responses, strict=True):
        row, ref = r.json(), want[CLIPS.index(n)]
        for k in ("transcript", "caption", "flags", "speech_s", "num_windows"):
            assert row[k] == ref[k], (n, k)
    stats = httpx.get(f"{server}/v1/stats", headers=AUTH, timeout=60).json()
    engine = stats["engine"]
    # requests were in the engine together: more rows at once than one request holds
    windows_per_request = max(ref["num_windows"] for ref in want)
    assert engine["max_in_flight"] > 2 * windows_per_request, engine
    # a window asked again is not encoded again (the prefix and encoder caches serve it)
    print("engine:", engine)
    assert engine["encoder_items"] < sum(r.json()["num_windows"] for r in responses), engine

    # the OpenAI route is the same route on this engine
    with (DEMO / "s01_fox.wav").open("rb") as f:
        tr = httpx.post(
            f"{server}/v1/audio/transcriptions",
            headers=AUTH,
            files={"file": ("s01_fox.wav", f.read())},
            data={"model": "whisper-1", "response_format": "json"},
            timeout=300,
        )
    assert tr.status_code == 200, tr.text
    assert tr.json()["text"] == want[0]["transcript"]

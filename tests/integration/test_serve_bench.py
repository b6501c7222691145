"""`earmark bench serve` at minimal size on real Serve with the tiny eureka stand-in: batching on
forms batches larger than 1, batching off runs one request per model call and one call at a
time, the replicas' thread settings fit their CPUs, and the tables print.

Needs no model download: the stand-in is built offline in tmp_path.
"""

from __future__ import annotations

import json

from earmark.bench.serve_bench import run_serve_bench
from earmark.bench.serve_bench_results import format_bench, results_json
from earmark.bench.serve_bench_setup import TINY_EUREKA, bench_spec, load_clips, resolve_model
from earmark.contracts import ModelSpec
from earmark.serve.config import ServeSpec
from paths import DEMO


def test_serve_bench_on_off_with_eureka_stand_in(ray_session, tmp_path):
    model = ModelSpec.parse(resolve_model(TINY_EUREKA, tmp_path))
    assert resolve_model(TINY_EUREKA, tmp_path) == f"eureka:{model.checkpoint}"  # built once
    base = ServeSpec.model_validate(
        {
            "model": {"family": "eureka", "checkpoint": model.checkpoint},
            "resources": {"annotator_num_cpus": 1},
            "ingress": {"num_cpus": 0.25},
            # 0.3 s: the 6 clients' requests reach the replica within it even on a busy machine
            "batching": {"batch_wait_timeout_s": 0.3},
        }
    )
    spec = bench_spec(base, max_batch_size=8, max_new_tokens=4)
    assert spec.model.batch_size == 8 and spec.model.max_new_tokens == 4
    assert spec.model_replica_max_ongoing() == spec.max_ongoing_requests  # same both ways
    assert spec.autoscaling.min_replicas == spec.autoscaling.max_replicas == 1

    clips = load_clips(DEMO)[:6]
    (bench,) = run_serve_bench(spec, clips, concurrency=(1, 6), rounds=2, min_requests=6)

    on = {r.clients: r for r in bench.results if r.mode == "on"}
    off = {r.clients: r for r in bench.results if r.mode == "off"}
    assert set(on) == set(off) == {1, 6}
    for r in bench.results:
        assert r.failed == 0 and r.rps > 0 and r.p50_ms <= r.p99_ms, r
        assert sum(k * v for k, v in r.call_batches.items()) == r.requests, r  # replica counted
    # batching on: requests share model calls; off: one request per call, one call at a time
    assert on[6].call_max_batch > 1 and on[6].calls < on[6].requests
    assert all(set(r.call_batches) == {1} for r in off.values())
    assert all(r.busy <= 1.05 for r in off.values())
    checks = bench.checks()
    assert all(checks.values()), checks
    assert all(t.get("torch") == 1 for t in bench.threads.values()), bench.threads  # 1 CPU each

    text = format_bench(bench)
    assert "ON/OFF req/s" in text and "max_new_tokens=4" in text and "Checks:" in text
    data = json.loads(results_json([bench]))
    assert data[0]["checks"] == checks and len(data[0]["results"]) == 4

"""The vLLM engine process: run by the Python of an environment that has vLLM (`make vllm-env`
builds `.venv-vllm`, `VLLM_TARGET=cuda make vllm-env` a CUDA one), never imported by earmark. It
imports only the standard library, numpy and vllm, so it runs beside vLLM's own torch and
transformers. `earmark.models.vllm_engine.VllmProcess` starts it and speaks to it.

Protocol (one JSON line per message; the protocol has its own pipe, everything the libraries
print goes to stderr):
- out, first: {"ready": true, "engine_start_s", "vllm"} or {"fatal": message}.
- in: {"op": "generate", "id": N, "audio": [samples per clip], "prompts": [{"text", "audio":
  clip index, "group": encoder group}...], "sampling": {...}, then each clip's 16 kHz float32
  samples, raw little-endian bytes, back to back (a clip asked several tasks is sent once).
- out: {"id": N, "rows": [{"ids", "logprobs", "finish", "prompt_tokens", "cached_tokens"}...],
  "encoder_items": total so far} or {"id": N, "error": message} (that call's prompts only).
- in: {"op": "stats", "id": N} -> out: {"id": N, "encoder_items", "prompts", ...}.

Continuous batching: calls are added to the engine as they arrive, also while earlier calls
are decoding, and each call is answered as soon as all its prompts finish, so concurrent
callers (Serve requests) share the engine's running batch instead of waiting for each other.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import deque

# the CPU engine reserves 92 % of memory for its KV cache unless told (GiB)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# one process: the engine starts in seconds, and the encoder counter below sees the model
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

SAMPLE_RATE = 16_000
# audio items through the audio encoder (in how many calls, the most in one), and the most
# requests the engine held at once
COUNTS = {"encoder_items": 0, "encoder_calls": 0, "max_encoder_batch": 0, "max_in_flight": 0}


def count_encoder(model) -> bool:
    """Wrap the model's `embed_multimodal` to count the audio items it encodes (runs inside
    the engine's worker, which is this process)."""
    inner = model.embed_multimodal

    def counted(**kwargs):
        out = inner(**kwargs)
        n = len(out) if out is not None else 0
        COUNTS["encoder_calls"] += 1
        COUNTS["encoder_items"] += n
        COUNTS["max_encoder_batch"] = max(COUNTS["max_encoder_batch"], n)
        return out

    model.embed_multimodal = counted
    return True


def read_calls(stream, calls: queue.Queue) -> None:
    """Reader thread: each header line and its audio bytes become one queued call."""
    import numpy as np

    while True:
        line = stream.readline()
        if not line:
            calls.put(None)
            return
        msg = json.loads(line)
        if msg.get("op") == "generate":
            sizes = [int(n) for n in msg["audio"]]
            raw = np.frombuffer(stream.read(sum(sizes) * 4), dtype="<f4")
            cuts = np.cumsum([0, *sizes])
            audio = [raw[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            for p in msg["prompts"]:
                p["group"] = int(p.get("group", p["audio"]))
                p["audio"] = audio[int(p["audio"])]
        calls.put(msg)


class Engine:
    def __init__(self, options: dict, out) -> None:
        from vllm import LLM

        # Encoder groups: vLLM's audio encoders pad each clip to the others of their batch
        # (MOSS: a clip's chunks to the widest chunk; MiDashengLM: the mel front end runs on
        # the padded batch), which changes some clips' embeddings. The caller puts clips that
        # may share an encoder batch in one group; a group is admitted once every prompt of
        # the group before it has produced a token, so each encoder batch holds one group's
        # audio, while decoding runs all admitted rows together.
        self.gated = bool(options.pop("earmark_encoder_groups", False))
        self.waiting: deque = deque()  # (call id, [(prompt index, prompt)]) not yet admitted
        self.admitted: set[str] = set()  # the last group's requests that have not yet run
        self.out = out
        t0 = time.perf_counter()
        self.llm = LLM(**options)
        self.engine = self.llm.llm_engine
        try:
            self.llm.apply_model(count_encoder)
        except Exception as exc:  # counting is accounting only; say so and go on
            print(f"earmark vllm worker: encoder passes are not counted ({exc})", file=sys.stderr)
        self.start_s = time.perf_counter() - t0
        self.pending: dict[int, dict] = {}  # call id -> {"rows": [...], "left": n}
        self.prompts = 0

    def add(self, msg: dict) -> None:
        """Queue a call: its prompts, in the encoder groups the caller gave."""
        from vllm import SamplingParams

        cid = int(msg["id"])
        try:
            params = SamplingParams(**msg["sampling"])
        except Exception as exc:
            self.send({"id": cid, "error": f"{type(exc).__name__}: {exc}"})
            return
        n = len(msg["prompts"])
        self.pending[cid] = {"rows": [None] * n, "left": n, "params": params}
        if n == 0:
            self.finish(cid)
            return
        groups: dict[int, list] = {}
        for i, p in enumerate(msg["prompts"]):
            groups.setdefault(p["group"], []).append((i, p))
        for members in groups.values():
            self.waiting.append((cid, members))

    def admit(self) -> None:
        """Hand queued groups to the engine: all of them, or (gated) the next one once every
        prompt of the group before has started decoding."""
        while self.waiting and not (self.gated and self.admitted):
            cid, members = self.waiting.popleft()
            call = self.pending.get(cid)
            if call is None:  # its call already failed
                continue
            ids = [f"{cid}:{i}" for i, _ in members]
            try:
                for (_, p), rid in zip(members, ids, strict=True):
                    prompt = {
                        "prompt": p["text"],
                        "multi_modal_data": {"audio": (p["audio"], SAMPLE_RATE)},
                    }
                    self.engine.add_request(rid, prompt, call["params"])
                    self.prompts += 1
            except Exception as exc:  # a prompt vLLM refuses fails its call only
                self.fail(cid, f"{type(exc).__name__}: {exc}")
                continue
            if self.gated:
                self.admitted = set(ids)

    def fail(self, cid: int, why: str) -> None:
        n = len(self.pending[cid]["rows"])
        self.engine.abort_request([f"{cid}:{i}" for i in range(n)])
        self.pending.pop(cid)
        self.admitted = set()
        self.send({"id": cid, "error": why})

    def step(self) -> None:
        in_flight = self.engine.get_num_unfinished_requests()
        COUNTS["max_in_flight"] = max(COUNTS["max_in_flight"], in_flight)
        for out in self.engine.step():
            self.admitted.discard(out.request_id)  # it has run its prefill (and encoder)
            if not out.finished:
                continue
            cid, i = (int(x) for x in out.request_id.split(":"))
            call = self.pending.get(cid)
            if call is None:
                continue
            gen = out.outputs[0]
            picked = [
                lp[t].logprob for t, lp in zip(gen.token_ids, gen.logprobs or [], strict=False)
            ]
            call["rows"][i] = {
                "ids": list(gen.token_ids),
                "logprobs": picked,
                "finish": gen.finish_reason,
                "prompt_tokens": len(out.prompt_token_ids or []),
                "cached_tokens": int(out.num_cached_tokens or 0),
            }
            call["left"] -= 1
            if call["left"] == 0:
                self.finish(cid)

    def finish(self, cid: int) -> None:
        call = self.pending.pop(cid)
        self.send({"id": cid, "rows": call["rows"], **COUNTS})

    def send(self, msg: dict) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def serve(self, calls: queue.Queue) -> None:
        while True:
            busy = self.engine.has_unfinished_requests() or bool(self.waiting)
            try:
                msg = calls.get(block=not busy)
            except queue.Empty:
                msg = False
            while msg is not False:
                if msg is None:  # the caller closed the pipe
                    return
                if msg.get("op") == "stats":
                    self.send({"id": msg["id"], "prompts": self.prompts, **COUNTS})
                else:
                    self.add(msg)
                try:
                    msg = calls.get_nowait()
                except queue.Empty:
                    msg = False
            self.admit()
            if self.engine.has_unfinished_requests():
                self.step()


def main() -> None:
    options = json.loads(sys.argv[1])
    # the protocol keeps the real stdout; anything printed by the libraries goes to stderr
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        engine = Engine(options, out)
    except Exception as exc:
        out.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        raise
    import vllm

    start_s = round(engine.start_s, 2)
    engine.send({"ready": True, "engine_start_s": start_s, "vllm": vllm.__version__})
    calls: queue.Queue = queue.Queue()
    threading.Thread(target=read_calls, args=(sys.stdin.buffer, calls), daemon=True).start()
    engine.serve(calls)


if __name__ == "__main__":
    main()

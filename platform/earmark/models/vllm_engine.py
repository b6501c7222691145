"""The vLLM engine as a process earmark talks to (`model.engine: vllm`).

vLLM needs its own torch and transformers builds, which cannot share earmark's environment, so
the engine runs in a child process started with the Python of an environment that has vLLM
(`earmark.models.vllm_worker` is the script it runs). earmark keeps everything else: it lists,
decodes, resamples and cuts windows, sends each (window, task) prompt's chat text and 16 kHz
samples here, and turns the generated ids back into rows exactly as on the transformers path.

Which Python: `EARMARK_VLLM_PYTHON` when set (the infra image sets it); else this interpreter
when it can import vllm; else the repository's `.venv-vllm` (`make vllm-env`). Calls are
thread-safe and concurrent: each waits for its own answer while the engine batches all of them
together (continuous batching).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earmark.models.base import ModelInputError, ModelLoadError

REPO_VENV = Path(__file__).resolve().parents[3] / ".venv-vllm" / "bin" / "python"
WORKER = Path(__file__).with_name("vllm_worker.py")
START_TIMEOUT_S = 900.0  # the first start on a GPU may compile kernels and read 16 GB of weights
LOG_TAIL_CHARS = 3000


def vllm_python() -> Path:
    """The Python that runs the engine, or ModelLoadError saying how to get one."""
    env = os.environ.get("EARMARK_VLLM_PYTHON")
    if env:
        if not Path(env).exists():
            raise ModelLoadError(f"EARMARK_VLLM_PYTHON={env} does not exist")
        return Path(env)
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    if REPO_VENV.exists():
        return REPO_VENV
    raise ModelLoadError(
        "engine 'vllm' needs vLLM in an environment of its own, and none was found: run "
        f"`make vllm-env` (CPU; builds {REPO_VENV.parent.parent}), `VLLM_TARGET=cuda make "
        "vllm-env` (CUDA), or set EARMARK_VLLM_PYTHON to the Python of an environment with vLLM"
    )


def child_env() -> dict[str, str]:
    """This process's environment for a vLLM child: without the paths of earmark's own
    environment, which would shadow vLLM's torch and transformers."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@dataclass
class Generated:
    """One prompt's greedy continuation."""

    ids: list[int]  # generated ids, the stop id included when it stopped on one
    logprobs: list[float]  # log-probability of each generated id
    stopped: bool  # False: it ran into max_tokens
    prompt_tokens: int  # prompt length after the audio placeholder was expanded
    cached_tokens: int  # of those, tokens whose KV came from the prefix cache


class VllmProcess:
    """One vLLM engine in a child process; `generate` may be called from many threads."""

    def __init__(self, options: dict[str, Any], python: Path | None = None) -> None:
        self.python = python or vllm_python()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="earmark-vllm-", suffix=".log")
        self.proc = subprocess.Popen(
            [str(self.python), str(WORKER), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=child_env(),
            cwd=tempfile.gettempdir(),
        )
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, Future] = {}
        self.info = self._read_ready()
        self.counts: dict[str, int] = {}
        threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_ready(self) -> dict[str, Any]:
        timer = threading.Timer(START_TIMEOUT_S, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        msg = json.loads(line) if line.strip().startswith(b"{") else {}
        if not msg.get("ready"):
            self.proc.kill()
            why = msg.get("fatal") or f"exit code {self.proc.wait()}"
            raise ModelLoadError(f"the vLLM engine did not start ({why}):\n{self.log_tail()}")
        return msg

    def _read_answers(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._lock:
                fut = self._waiting.pop(int(msg["id"]), None)
            if fut is not None:
                fut.set_result(msg)
        # the engine is gone: every caller still waiting learns why
        code = self.proc.wait()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        err = RuntimeError(f"the vLLM engine process exited ({code}):\n{self.log_tail()}")
        for fut in waiting.values():
            fut.set_exception(err)

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-LOG_TAIL_CHARS:]

    def _call(self, header: dict[str, Any], payload: list[np.ndarray] = ()) -> dict[str, Any]:
        fut: Future = Future()
        with self._lock:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM engine process has exited ({self.proc.returncode})")
            cid = self._next
            self._next += 1
            self._waiting[cid] = fut
            try:
                self.proc.stdin.write(json.dumps({**header, "id": cid}).encode() + b"\n")
                for a in payload:
                    self.proc.stdin.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
                self.proc.stdin.flush()
            except BrokenPipeError as exc:
                self._waiting.pop(cid, None)
                raise RuntimeError(f"the vLLM engine process is gone:\n{self.log_tail()}") from exc
        return fut.result()

    def generate(
        self,
        audio: list[np.ndarray],
        prompts: list[tuple[str, int]],
        sampling: dict[str, Any],
        groups: list[int] | None = None,
    ) -> list[Generated]:
        """Greedy continuations of prompts (chat text with one audio placeholder, index of its
        16 kHz clip in `audio`), in order. `groups[k]`: the encoder group of clip k (clips of
        one group may share an encoder batch; default: each clip alone)."""
        groups = list(range(len(audio))) if groups is None else groups
        if not prompts:
            return []
        header = {
            "op": "generate",
            "audio": [int(len(a)) for a in audio],
            "prompts": [
                {"text": text, "audio": int(k), "group": int(groups[k])} for text, k in prompts
            ],
            "sampling": sampling,
        }
        msg = self._call(header, audio)
        if "error" in msg:  # vLLM refused a prompt of this call (e.g. longer than the model)
            raise ModelInputError(f"vLLM refused the batch: {msg['error']}")
        self.counts = {k: v for k, v in msg.items() if k.startswith("encoder_")}
        return [
            Generated(
                ids=r["ids"],
                logprobs=r["logprobs"],
                stopped=r["finish"] == "stop",
                prompt_tokens=r["prompt_tokens"],
                cached_tokens=r["cached_tokens"],
            )
            for r in msg["rows"]
        ]

    def stats(self) -> dict[str, int]:
        msg = self._call({"op": "stats"})
        return {k: v for k, v in msg.items() if k != "id"}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

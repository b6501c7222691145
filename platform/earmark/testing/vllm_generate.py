"""Greedy generation with vLLM, run by the vLLM environment's Python (`make vllm-env`), never
imported by the project: `.venv-vllm/bin/python vllm_generate.py REQUEST.json` prints one JSON
line per prompt. It imports only the standard library, numpy and vllm, so it runs beside
vLLM's own torch and transformers.

REQUEST.json: {"model": DIR, "max_tokens": N, "calls": [[{"prompt": TEXT, "audio": NPY}, ...],
...]}; each call is one `LLM.generate` over its prompts (a batch), audio a 16 kHz float32 .npy.
Output per prompt: {"call", "index", "prompt_tokens", "ids", "logprobs", "finish"}.

An audio file gets one id per call (`multi_modal_uuids`): prompts of one call share its
encoding, as in production, but no call reuses an encoder output a former call cached — so a
call of one prompt shows that audio encoded alone, and a batch shows it encoded in the batch.
"""

from __future__ import annotations

import json
import os
import sys
import time

# the CPU engine reserves 92 % of memory for its KV cache unless told; one process, no workers
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main(path: str) -> None:
    import numpy as np
    from vllm import LLM, SamplingParams

    req = json.loads(open(path).read())
    t0 = time.perf_counter()
    llm = LLM(
        model=req["model"],
        trust_remote_code=True,
        dtype="float32",
        enforce_eager=True,
        max_model_len=2048,
        max_num_seqs=16,
        limit_mm_per_prompt={"audio": 1},
        seed=0,
    )
    print(json.dumps({"engine_start_s": round(time.perf_counter() - t0, 2)}), flush=True)
    params = SamplingParams(temperature=0.0, max_tokens=int(req["max_tokens"]), logprobs=1)
    for c, call in enumerate(req["calls"]):
        prompts = [
            {
                "prompt": p["prompt"],
                "multi_modal_data": {"audio": (np.load(p["audio"]), 16_000)},
                "multi_modal_uuids": {"audio": [f"call{c}:{p['audio']}"]},
            }
            for p in call
        ]
        for i, out in enumerate(llm.generate(prompts, params, use_tqdm=False)):
            gen = out.outputs[0]
            picked = [lp[t].logprob for t, lp in zip(gen.token_ids, gen.logprobs, strict=True)]
            print(
                json.dumps(
                    {
                        "call": c,
                        "index": i,
                        "prompt_tokens": len(out.prompt_token_ids),
                        "ids": list(gen.token_ids),
                        "logprobs": picked,
                        "finish": gen.finish_reason,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1])

"""`earmark bench quality`: what the speech gate, the flags and Whisper's guards change, with
the real tiny.en, side by side in one run.

1. Non-speech corpus (`quality_corpus`, ≥ 200 clips of 12 kinds, 1-60 s): files whose ASR text
   is not empty, with the gate (the default) and without it (`min_speech_s=0`: every window
   goes to the model, as before the gate existed).
2. Speech (the demo clips, and long files of demo sentences with known sentence times): WER
   with and without the gate; word timings ordered, inside their segment, and the first and
   last word of every sentence within 0.3 s of where the sentence is known to start and end.
3. ASR model time on a corpus half speech, half non-speech (by duration), gate on vs off,
   the two runs alternating batch by batch so machine noise hits both alike.

Files are decoded and cut into windows (silero-vad included) once, before any timing: the
figures are model time; the VAD's own cost is reported apart. No Ray: the Annotator is called
as a batch actor calls it, on groups of `FILES_PER_CALL` files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from earmark.bench.common import conditions, format_conditions, say, table, workspace
from earmark.bench.quality_corpus import speech_files, write_non_speech

FILES_PER_CALL = 8  # files per Annotator call (the demo job's files_per_batch)
BOUNDARY_TOLERANCE_S = 0.3  # s: a sentence's first/last word vs its known start/end


def _windows(name: str, samples: np.ndarray) -> Any:
    from earmark.audio.segment import make_windows
    from earmark.models.whisper import WhisperModel

    return make_windows(name, samples, WhisperModel)


def _annotators() -> dict[str, Any]:
    from earmark.annotate.annotator import Annotator
    from earmark.contracts import ModelSpec, TaskRequest

    asr = [TaskRequest(name="asr")]
    return {
        "gate": Annotator(ModelSpec(family="whisper", checkpoint="tiny.en"), asr),
        "no gate": Annotator(
            ModelSpec(family="whisper", checkpoint="tiny.en", min_speech_s=0), asr
        ),
    }


def _annotate(annotators: dict[str, Any], files: list[Any]) -> tuple[dict, dict]:
    """Row fields per annotator, and its model seconds, calls alternating between them."""
    rows: dict[str, list] = {k: [] for k in annotators}
    secs = dict.fromkeys(annotators, 0.0)
    for i in range(0, len(files), FILES_PER_CALL):
        group = files[i : i + FILES_PER_CALL]
        for name, a in annotators.items():
            t0 = time.perf_counter()
            rows[name] += [o.fields for o in a.annotate_files(group)]
            secs[name] += time.perf_counter() - t0
    return rows, secs


def _wer(refs: list[str], hyps: list[str]) -> float:
    from earmark.evaluation.wer import score_asr

    pairs = [(str(i), r, h, "en") for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    return score_asr(pairs).words.rate


def _timing_checks(rows: list[dict], layouts: list[dict]) -> dict[str, Any]:
    """Word-time checks over the long speech files."""
    ordered = inside = words = missed = 0
    errors: list[float] = []
    for row, layout in zip(rows, layouts, strict=True):
        all_words = []
        for seg in row["segments"]:
            ws = seg["words"] or []
            times = [t for w in ws for t in (w["start_s"], w["end_s"])]
            words += len(ws)
            ordered += times == sorted(times)
            inside += all(seg["start_s"] <= t <= seg["end_s"] for t in times)
            all_words += ws
        for start, end, _ in layout["sentences"]:
            mine = [
                w for w in all_words if start - 0.5 <= (w["start_s"] + w["end_s"]) / 2 <= end + 0.5
            ]
            if mine:
                errors += [abs(mine[0]["start_s"] - start), abs(mine[-1]["end_s"] - end)]
            else:
                missed += 1
    segments = sum(len(r["segments"]) for r in rows)
    errs = np.array(errors)
    return {
        "sentences_without_words": missed,
        "words": words,
        "segments": segments,
        "segments_ordered": ordered,
        "segments_inside": inside,
        "boundaries": len(errs),
        "boundaries_within_0_3_s": int((errs <= BOUNDARY_TOLERANCE_S).sum()),
        "boundary_error_median_s": float(np.median(errs)) if len(errs) else None,
        "boundary_error_max_s": float(errs.max()) if len(errs) else None,
    }


def bench_quality(
    clips: int, speech_files_n: int, workdir: str | None, json_path: Path | None
) -> dict:
    from earmark.audio.decode import decode_audio
    from earmark.bench.corpus import audio_files, demo_dir

    result: dict[str, Any] = {"conditions": conditions(clips=clips)}
    say(format_conditions(result["conditions"]))
    with workspace(workdir, "earmark-quality-") as work:
        manifest = write_non_speech(work / "nonspeech", clips)
        t0 = time.perf_counter()
        ns_audio = [
            decode_audio((work / "nonspeech" / r["uri"]).read_bytes(), what=r["uri"]).samples
            for r in manifest
        ]
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ns_files = [_windows(r["uri"], a) for r, a in zip(manifest, ns_audio, strict=True)]
        vad_s = time.perf_counter() - t0
        ns_audio_s = sum(len(a) for a in ns_audio) / 16_000
        say(f"non-speech: {clips} clips, {ns_audio_s:.0f} s; decode {decode_s:.1f} s, "
            f"windows + silero-vad {vad_s:.1f} s")  # fmt: skip
        demo_rows = [
            json.loads(x) for x in (demo_dir() / "manifest.jsonl").read_text().splitlines()
        ]
        speech = [r for r in demo_rows if r.get("text")]
        paths = {p.name: p for p in audio_files(demo_dir())}
        clips_audio = [
            decode_audio(paths[r["uri"]].read_bytes(), what=r["uri"]).samples for r in speech
        ]
        layouts = speech_files(clips_audio, [r["text"] for r in speech], speech_files_n, 8)
        sp_files = [_windows(r["uri"], a) for r, a in zip(speech, clips_audio, strict=True)]
        long_files = [_windows(f"long{i}", x["samples"]) for i, x in enumerate(layouts)]

        annotators = _annotators()
        ns_rows, ns_secs = _annotate(annotators, ns_files)
        nonspeech = {}
        for name, rows in ns_rows.items():
            texts = [r for r in rows if (r["transcript"] or "").strip()]
            nonspeech[name] = {
                "files_with_text": len(texts),
                "share_with_text": len(texts) / len(rows),
                "model_s": round(ns_secs[name], 2),
                "examples": sorted({r["transcript"] for r in texts})[:8],
                "flagged": sum(1 for r in rows if r["flags"]),
            }
        result["nonspeech"] = nonspeech
        sp_rows, _ = _annotate(annotators, sp_files + long_files)
        refs = [r["text"] for r in speech] + [x["text"] for x in layouts]
        result["speech"] = {
            name: {"wer": round(_wer(refs, [r["transcript"] for r in rows]), 4)}
            for name, rows in sp_rows.items()
        }
        result["timings"] = _timing_checks(sp_rows["gate"][len(sp_files) :], layouts)
        # half and half by duration: the speech files and as many non-speech clips
        speech_s = sum(w.duration_s for f in sp_files + long_files for w in f)
        mixed, total = [], 0.0
        for f in ns_files:
            if total >= speech_s:
                break
            mixed.append(f)
            total += sum(w.duration_s for w in f)
        both = [x for pair in zip(sp_files + long_files, mixed, strict=False) for x in pair]
        _, mix_secs = _annotate(annotators, both)
        result["mixed"] = {
            "speech_s": round(speech_s, 1),
            "non_speech_s": round(total, 1),
            "model_s": {k: round(v, 2) for k, v in mix_secs.items()},
            "fall": round(1 - mix_secs["gate"] / mix_secs["no gate"], 3),
        }
        result["vad_s_per_audio_s"] = round(vad_s / ns_audio_s, 5)
    _print(result)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    return result


def _print(r: dict) -> None:
    ns = r["nonspeech"]
    say(table(
        ["", "files with ASR text", "share", "model s", "flagged"],
        [[k, v["files_with_text"], f"{v['share_with_text']:.1%}", v["model_s"], v["flagged"]]
         for k, v in ns.items()],
    ))  # fmt: skip
    say(f"texts without the gate: {ns['no gate']['examples']}")
    wer = {k: f"{v['wer']:.2%}" for k, v in r["speech"].items()}
    say(f"speech WER: gate {wer['gate']}, no gate {wer['no gate']}")
    t = r["timings"]
    say(f"word timings: {t['words']} words in {t['segments']} segments; ordered "
        f"{t['segments_ordered']}/{t['segments']}, inside {t['segments_inside']}/{t['segments']}; "
        f"sentence edges within 0.3 s {t['boundaries_within_0_3_s']}/{t['boundaries']}, "
        f"{t['sentences_without_words']} sentences without words "
        f"(median {t['boundary_error_median_s']:.2f} s, "
        f"max {t['boundary_error_max_s']:.2f} s)")  # fmt: skip
    m = r["mixed"]
    say(f"50/50 corpus ({m['speech_s']:.0f} s speech, {m['non_speech_s']:.0f} s non-speech): ASR "
        f"model time gate {m['model_s']['gate']} s vs no gate {m['model_s']['no gate']} s: "
        f"falls by {m['fall']:.0%}; silero-vad costs {r['vad_s_per_audio_s'] * 1000:.1f} ms per "
        "audio second on the decode side")  # fmt: skip

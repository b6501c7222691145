"""The output row: one per input file, whatever happened to it. The Arrow schema is declared
here once (`OUTPUT_SCHEMA`) and snapshotted under `schemas/` by `earmark schemas export`."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from earmark import __version__
from earmark.contracts.errors import ErrorKind, ErrorStage

# Version of the output schema, bumped when columns change (README, "Output schema").
# 2: speech_s, language, flags; segments gained speech_fraction, avg_logprob, no_speech_prob,
#    flags and words.
OUTPUT_SCHEMA_VERSION = 2


class WordTiming(BaseModel):
    word: str = Field(description="The word as the model wrote it (leading space dropped)")
    start_s: float = Field(description="Word start in the file, seconds")
    end_s: float = Field(description="Word end in the file, seconds")
    probability: float | None = Field(
        default=None, description="Decoder probability of the word's tokens (Whisper)"
    )


class Segment(BaseModel):
    start_s: float = Field(description="Segment start in the file, seconds")
    end_s: float = Field(description="Segment end in the file, seconds")
    transcript: str | None = Field(
        default=None,
        description="Transcript of this segment; null when drop_flagged removed flagged text",
    )
    speech_fraction: float | None = Field(
        default=None,
        description="Share of the segment's window that silero-vad found to be speech (0-1)",
    )
    avg_logprob: float | None = Field(
        default=None,
        description="Mean natural-log probability per generated token (end token included), "
        "from the scores greedy decoding picked each token from: 0 is certain, below -1 is "
        "flagged low_confidence. Null when the window was not sent to the model",
    )
    no_speech_prob: float | None = Field(
        default=None,
        description="Whisper: probability of its no-speech token for the window; null for "
        "other families",
    )
    flags: list[str] | None = Field(
        default=None,
        description="Quality flags of this segment: no_speech, filler, repetition, truncated, "
        "low_confidence (earmark.models.quality)",
    )
    words: list[WordTiming] | None = Field(
        default=None,
        description="Word timings (Whisper); null for families that give none, never invented",
    )


class Answer(BaseModel):
    name: str = Field(description="Custom task name")
    prompt: str = Field(description="Prompt text as asked")
    text: str = Field(description="Model answer, windows joined in order")


class OutputRow(BaseModel):
    """One row per input file, whatever happened to it. Unrequested task columns are null."""

    audio_id: str = Field(description="Stable id from the normalized URI, size and etag/mtime")
    uri: str = Field(description="Normalized URI of the file")
    size_bytes: int | None = Field(default=None, description="Object size in bytes")
    status: Literal["ok", "error", "skipped"] = Field(description="Outcome for this file")
    error_stage: ErrorStage | None = Field(default=None, description="Stage that failed")
    error_kind: ErrorKind | None = Field(default=None, description="Failure category")
    error: str | None = Field(default=None, description="Readable error message")
    duration_s: float | None = Field(default=None, description="Decoded duration, seconds")
    source_sample_rate: int | None = Field(default=None, description="Sample rate of the file, Hz")
    source_channels: int | None = Field(default=None, description="Channels in the file")
    codec: str | None = Field(default=None, description="Audio codec (FFmpeg name)")
    container: str | None = Field(default=None, description="Container format (FFmpeg name)")
    transcript: str | None = Field(default=None, description="ASR transcript (task asr)")
    segments: list[Segment] | None = Field(
        default=None,
        description="Timed transcript pieces: one per window, or per time-marked span (MOSS)",
    )
    speech_s: float | None = Field(
        default=None, description="Seconds of speech silero-vad found in the file (model runs)"
    )
    language: str | None = Field(
        default=None,
        description="Language of the speech: the user's `language` option, else detected by a "
        "multilingual Whisper over the windows with speech; null otherwise, never guessed",
    )
    flags: list[str] | None = Field(
        default=None,
        description="Union of the quality flags of every task's output for this file: "
        "no_speech, filler, repetition, truncated, low_confidence",
    )
    caption: str | None = Field(default=None, description="Audio caption (task caption)")
    tags: list[str] | None = Field(default=None, description="Normalized labels (task tags)")
    tags_raw: str | None = Field(default=None, description="Raw model text for tags")
    answers: list[Answer] | None = Field(default=None, description="Custom prompt answers")
    model: str | None = Field(default=None, description="family:checkpoint that annotated")
    model_revision: str | None = Field(default=None, description="Checkpoint revision")
    earmark_version: str = Field(default=__version__, description="earmark version")
    job_id: str | None = Field(default=None, description="Job that wrote the row")
    created_at: Any = Field(default=None, description="UTC timestamp the row was made")
    decode_s: float | None = Field(default=None, description="Wall seconds spent decoding")
    infer_s: float | None = Field(default=None, description="Wall seconds spent in the model")
    num_windows: int | None = Field(default=None, description="Model windows the file was cut into")
    meta: dict[str, str] | None = Field(
        default=None, description="Extra manifest columns carried through, as strings"
    )


_WORD = pa.struct(
    [
        ("word", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("probability", pa.float64()),
    ]
)
_SEGMENT = pa.struct(
    [
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("transcript", pa.string()),
        ("speech_fraction", pa.float64()),
        ("avg_logprob", pa.float64()),
        ("no_speech_prob", pa.float64()),
        ("flags", pa.list_(pa.string())),
        ("words", pa.list_(_WORD)),
    ]
)
_ANSWER = pa.struct([("name", pa.string()), ("prompt", pa.string()), ("text", pa.string())])

OUTPUT_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
        ("duration_s", pa.float64()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("codec", pa.string()),
        ("container", pa.string()),
        ("transcript", pa.string()),
        ("segments", pa.list_(_SEGMENT)),
        ("speech_s", pa.float64()),
        ("language", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("tags_raw", pa.string()),
        ("answers", pa.list_(_ANSWER)),
        ("model", pa.string()),
        ("model_revision", pa.string()),
        ("earmark_version", pa.string()),
        ("job_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("decode_s", pa.float64()),
        ("infer_s", pa.float64()),
        ("num_windows", pa.int32()),
        ("meta", pa.map_(pa.string(), pa.string())),
    ]
)

assert OUTPUT_SCHEMA.names == list(OutputRow.model_fields), "Arrow schema and OutputRow drifted"


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build an output table with the fixed schema; missing keys become nulls."""
    cols = {name: [r.get(name) for r in rows] for name in OUTPUT_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=OUTPUT_SCHEMA)

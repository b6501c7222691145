"""Flags on generated text: checks that run after generation, for every family.

Flags mark, they never edit: the text stays as the model wrote it (the job option
`drop_flagged` removes flagged ASR text from the transcript, and says so in the row).

- `repetition`: the text compresses too well (Whisper's own test: zlib ratio above 2.4, from
  openai/whisper `transcribe.py`, `compression_ratio_threshold`), or one n-gram of words (or of
  characters, for text written without spaces) repeats back to back `REPEAT_MIN_RUNS` times over
  at least `REPEAT_MIN_TOKENS` tokens;
- `truncated`: generation ran into the token limit instead of ending;
- `filler`: an ASR text that is only a phrase ASR models are known to emit on non-speech
  (Whisper's "you", "thank you for watching", subtitle credits, music notes);
- `no_speech`: no speech was measured in the window (the speech gate), or Whisper's no-speech
  rule dropped the text;
- `low_confidence`: the mean token log-probability is below `LOW_CONFIDENCE_LOGPROB` (Whisper's
  `log_prob_threshold`, -1.0: the decoder gave its tokens under e^-1 ≈ 37 % on average).
"""

from __future__ import annotations

import re
import zlib

from earmark.models.result import TaskText

COMPRESSION_RATIO_MAX = 2.4  # openai/whisper transcribe.py default
COMPRESSION_MIN_BYTES = 48  # below this zlib's header dominates and the ratio means nothing
LOW_CONFIDENCE_LOGPROB = -1.0  # nats per token; openai/whisper transcribe.py default
REPEAT_MIN_RUNS = 4  # back-to-back copies of one n-gram...
REPEAT_MIN_TOKENS = 8  # ...covering at least this many tokens ("no no no no" is speech)
REPEAT_MAX_N = 8  # longest n-gram checked
FLAG_ORDER = ("no_speech", "filler", "repetition", "truncated", "low_confidence")

# Texts (after lower-casing and dropping punctuation) that ASR models emit on silence, noise or
# music rather than on speech: documented Whisper hallucinations (openai/whisper discussions
# #928 and #1606; Koenecke et al. 2024, "Careless Whisper").
FILLERS = frozenset(
    {
        "you",
        "thank you",
        "thanks",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "thank you so much for watching",
        "please subscribe",
        "subscribe",
        "bye",
        "bye bye",
        "so",
        "okay",
        "oh",
        "uh",
        "um",
        "hmm",
        "music",
        "applause",
        "silence",
        "subtitles by the amaraorg community",
    }
)
_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)
_MUSIC = re.compile(r"^[\s♪♫♬♩*.\-~]+$")


def compression_ratio(text: str) -> float:
    """Bytes of the UTF-8 text over bytes of its zlib compression (Whisper's definition)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _tokens(text: str) -> list[str]:
    words = text.split()
    if len(words) <= 1 and len(text) > REPEAT_MIN_TOKENS:  # no spaces (Chinese, Japanese)
        return [c for c in text if not c.isspace()]
    return words


def longest_repeat(tokens: list[str], max_n: int = REPEAT_MAX_N) -> tuple[int, int]:
    """(runs, n) of the n-gram repeated back to back the most times (most tokens covered)."""
    best = (1, 1)
    for n in range(1, max_n + 1):
        for start in range(0, max(0, len(tokens) - 2 * n + 1)):
            runs = 1
            while tokens[start + runs * n : start + (runs + 1) * n] == tokens[start : start + n]:
                runs += 1
            if runs * n > best[0] * best[1] or (runs * n == best[0] * best[1] and runs > best[0]):
                best = (runs, n)
    return best


def is_repetitive(text: str) -> bool:
    """True when text repeats itself the way decoders that lost track of the audio do."""
    if len(text.encode("utf-8")) >= COMPRESSION_MIN_BYTES:
        if compression_ratio(text) > COMPRESSION_RATIO_MAX:
            return True
    runs, n = longest_repeat(_tokens(text.lower()))
    return runs >= REPEAT_MIN_RUNS and runs * n >= REPEAT_MIN_TOKENS


def is_filler(text: str) -> bool:
    """True when an ASR text is only a known non-speech filler."""
    if text.strip() and _MUSIC.match(text):
        return True
    norm = " ".join(_PUNCT.sub("", text.lower()).split())
    return bool(text.strip()) and norm in FILLERS


def flags_for(out: TaskText, asr: bool) -> list[str]:
    """Flags of one window's output for one task, in FLAG_ORDER."""
    found = set(out.flags)
    text = out.text or ""
    if text.strip():
        if asr and is_filler(text):
            found.add("filler")
        if is_repetitive(text):
            found.add("repetition")
        if out.avg_logprob is not None and out.avg_logprob < LOW_CONFIDENCE_LOGPROB:
            found.add("low_confidence")
    if out.truncated:
        found.add("truncated")
    return [f for f in FLAG_ORDER if f in found]


def merge_flags(*groups: list[str] | None) -> list[str]:
    """Union of flag lists, in FLAG_ORDER."""
    found = {f for g in groups if g for f in g}
    return [f for f in FLAG_ORDER if f in found]

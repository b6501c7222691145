"""Benchmark corpora: long mixed-format files made from the demo speech, and the demo corpus
repeated; plus N× copies of a corpus as hard links with distinct names (distinct URIs, so the
listing keeps every one) for the memory-flatness runs.

Generated files are kept in the work directory with a stamp of their parameters, so a second
run with the same parameters reuses them (generation is never part of a timed figure).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "m4a")  # cycled through, one format per file
FILE_MINUTES = (1.0, 2.0, 3.0, 4.0, 5.0)  # lengths of generated files, cycled
SOURCE_RATES = (16_000, 22_050, 44_100, 48_000)  # Hz, cycled; opus is always 48 kHz
GAP_S = (0.2, 1.5)  # range of pauses between sentences, seconds
TONE_S = 2.0  # a tone or noise burst every few sentences, seconds
STAMP = "_corpus.json"  # parameters a generated folder was made with
DEMO_SR = 16_000  # Hz: demo clips are decoded to this before mixing
SF_BLOCK = 1 << 15  # frames per libsndfile write


SPEECH_DIR = Path("data/demo")  # speech clips the corpora mix; `earmark bench ... --speech DIR`


def demo_dir() -> Path:
    """The speech clips benchmarks mix into their corpora: `--speech DIR`, by default the
    bundled demo corpus of the checkout the bench runs in (./data/demo)."""
    if not SPEECH_DIR.is_dir():
        raise FileNotFoundError(
            f"earmark bench needs a folder of speech clips to mix: {SPEECH_DIR} does not exist; "
            "run it from the earmark checkout (data/demo) or pass --speech DIR"
        )
    return SPEECH_DIR


def audio_files(folder: Path) -> list[Path]:
    from earmark.source.listing import AUDIO_EXTENSIONS

    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS
    )


def demo_clips(folder: Path | None = None) -> list[np.ndarray]:
    """Every demo clip decoded to mono float32 at 16 kHz."""
    from earmark.audio.decode import decode_audio

    out = []
    for p in audio_files(folder or demo_dir()):
        with open(p, "rb") as f:
            out.append(decode_audio(f, what=str(p)).samples)
    return out


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Linear interpolation: enough for benchmark content (the decoder resamples it back)."""
    if sr_in == sr_out:
        return x
    n = int(len(x) * sr_out / sr_in)
    return np.interp(np.arange(n) * (sr_in / sr_out), np.arange(len(x)), x).astype(np.float32)


def synth_signal(
    clips: list[np.ndarray], seconds: float, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Speech clips separated by pauses, with a tone or noise burst now and then, at `sr`."""
    n = int(seconds * DEMO_SR)
    parts, total, k = [], 0, 0
    while total < n:
        if k % 5 == 4:  # non-speech every fifth item
            t = np.arange(int(TONE_S * DEMO_SR)) / DEMO_SR
            burst = (
                0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
                if k % 2
                else 0.05 * rng.standard_normal(len(t))
            )
            parts.append(burst.astype(np.float32))
        else:
            parts.append(clips[rng.integers(len(clips))])
        parts.append(np.zeros(int(rng.uniform(*GAP_S) * DEMO_SR), np.float32))
        total += len(parts[-2]) + len(parts[-1])
        k += 1
    return _resample(np.concatenate(parts)[:n], DEMO_SR, sr)


def write_audio(path: Path, samples: np.ndarray, sr: int) -> Path:
    """Write (channels, n) float32 samples; the container/codec follow the file's extension."""
    ext = path.suffix.lstrip(".")
    if ext in ("wav", "flac", "ogg"):
        import soundfile as sf

        subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[ext]
        # in blocks: libsndfile's Vorbis encoder crashes on minutes-long single writes
        with sf.SoundFile(str(path), "w", sr, samples.shape[0], subtype=subtype) as f:
            for i in range(0, samples.shape[1], SF_BLOCK):
                f.write(np.ascontiguousarray(samples[:, i : i + SF_BLOCK].T))
        return path
    import av

    container, codec = {
        "mp3": ("mp3", "libmp3lame"),
        "opus": ("ogg", "libopus"),
        "m4a": ("ipod", "aac"),
    }[ext]
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for i in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, i : i + step]), format="fltp", layout=layout
            )
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _stamped(folder: Path, params: dict) -> bool:
    stamp = folder / STAMP
    return stamp.exists() and json.loads(stamp.read_text()) == params


def _stamp(folder: Path, params: dict) -> None:
    (folder / STAMP).write_text(json.dumps(params))


def mixed_corpus(
    folder: Path, hours: float, *, seed: int = 0, demo: Path | None = None
) -> list[Path]:
    """≥ `hours` of audio in 1-5 min files cycling through FORMATS, rates and mono/stereo."""
    params = {"kind": "mixed", "hours": hours, "seed": seed, "version": 1}
    folder.mkdir(parents=True, exist_ok=True)
    if _stamped(folder, params):
        return audio_files(folder)
    for p in folder.iterdir():
        p.unlink()
    clips = demo_clips(demo)
    rng = np.random.default_rng(seed)
    total, i = 0.0, 0
    while total < hours * 3600:
        ext = FORMATS[i % len(FORMATS)]
        minutes = FILE_MINUTES[i % len(FILE_MINUTES)]
        sr = 48_000 if ext == "opus" else SOURCE_RATES[i % len(SOURCE_RATES)]
        mono = synth_signal(clips, minutes * 60, sr, rng)
        chans = np.stack([mono, 0.7 * mono]) if i % 3 == 1 else mono[None, :]  # every 3rd stereo
        write_audio(folder / f"f{i:03d}_{int(minutes)}min_{sr}.{ext}", chans.astype(np.float32), sr)
        total += minutes * 60
        i += 1
    _stamp(folder, params)
    return audio_files(folder)


def link_copies(files: list[Path], folder: Path, copies: int) -> list[Path]:
    """`copies` hard links of every file under distinct names (copies when links fail)."""
    params = {"kind": "links", "copies": copies, "files": [str(f) for f in files], "version": 1}
    folder.mkdir(parents=True, exist_ok=True)
    if _stamped(folder, params):
        return audio_files(folder)
    for p in folder.iterdir():
        p.unlink()
    for k in range(copies):
        for f in files:
            dst = folder / f"c{k:03d}_{f.name}"
            try:
                os.link(f, dst)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(f, dst)
    _stamp(folder, params)
    return audio_files(folder)


def repeated_demo(
    folder: Path, minutes: float, demo: Path | None = None
) -> tuple[list[Path], float]:
    """The demo corpus linked as many times as it takes to reach `minutes` of audio.

    Returns the files and their total duration in seconds.
    """
    from earmark.audio.decode import decode_audio

    src = audio_files(demo or demo_dir())
    seconds = 0.0
    for p in src:
        with open(p, "rb") as f:
            seconds += decode_audio(f, keep_samples=False).duration_s
    copies = max(1, int(np.ceil(minutes * 60 / seconds)))
    return link_copies(src, folder, copies), seconds * copies

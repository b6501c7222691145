"""Corpora of `earmark bench scale`: archives of N tiny files made of hard links, and the same
real audio loose, packed into Parquet (the Hugging Face struct {bytes, path}) and packed into
WebDataset tar shards.

A handful of distinct seed files (WAV and FLAC, 8-22 kHz, 0.1-0.25 s, different content) are
linked N times into nested folders of at most FILES_PER_DIR files, so a million-file archive
costs a million directory entries and almost no disk. A JSON Lines manifest lists them (`uri`,
absolute paths). A stamp of the parameters lets a kept work directory reuse the links; the
manifest is written again every time and the "1 % new" files live apart (in `files/new/`),
removed before every run, so each run starts from exactly N files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np

FILES_PER_DIR = 1000  # files per nested folder
# (extension, Hz, seconds, tone Hz; 0 is noise): distinct codecs, rates, durations and content
SEEDS = (
    ("wav", 16_000, 0.10, 440.0),
    ("flac", 16_000, 0.15, 660.0),
    ("wav", 8_000, 0.20, 0.0),
    ("flac", 22_050, 0.25, 880.0),
)
STAMP = "_scale_corpus.json"
NEW_DIR = "new"  # under files/: the files added for the "1 % new" rerun
CLIP_S = (1.0, 5.0)  # range of packed-comparison clip lengths, seconds
CLIP_SR = 16_000  # Hz of the packed-comparison clips
ROW_GROUP = 100  # Parquet rows per row group: the listing's unit of a Parquet file
PARQUET_ROWS = 500  # clips per Parquet file (and per folder of loose clips)
TAR_MEMBERS = 100  # clips per tar shard: one decode task each, like a Parquet row group


def seed_files(folder: Path) -> list[Path]:
    """The distinct tiny files every corpus links to."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i, (ext, sr, seconds, tone) in enumerate(SEEDS):
        t = np.arange(int(sr * seconds)) / sr
        x = 0.3 * np.sin(2 * np.pi * tone * t) if tone else 0.05 * rng.standard_normal(len(t))
        path = folder / f"seed{i}_{sr}.{ext}"
        sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
        out.append(path)
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, dst)


def _link_range(seeds: list[Path], root: Path, start: int, stop: int) -> list[str]:
    """Links numbered start..stop-1 under `root`, FILES_PER_DIR to a folder; their paths."""
    uris = []
    for i in range(start, stop):
        folder = root / f"d{i // FILES_PER_DIR:05d}"
        if i == start or i % FILES_PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        src = seeds[i % len(seeds)]
        dst = folder / f"f{i:08d}{src.suffix}"
        _link(src, dst)
        uris.append(str(dst))
    return uris


def _write_manifest(path: Path, uris: list[str], mode: str = "w") -> None:
    with open(path, mode) as f:
        f.writelines(json.dumps({"uri": u}) + "\n" for u in uris)


def build_scale_corpus(root: Path, n: int) -> dict:
    """N linked files under root/files and root/manifest.jsonl; reused when the stamp matches.

    Returns {"files": folder, "manifest": path, "build_s": seconds, "reused": bool}."""
    t0 = time.perf_counter()
    files, manifest, stamp = root / "files", root / "manifest.jsonl", root / STAMP
    params = {"n": n, "seeds": [list(s) for s in SEEDS], "per_dir": FILES_PER_DIR, "version": 1}
    shutil.rmtree(files / NEW_DIR, ignore_errors=True)
    reused = stamp.exists() and json.loads(stamp.read_text()) == params
    if reused:
        seeds = sorted((root / "seeds").iterdir())
        uris = [
            str(files / f"d{i // FILES_PER_DIR:05d}" / f"f{i:08d}{seeds[i % len(seeds)].suffix}")
            for i in range(n)
        ]
    else:
        shutil.rmtree(root, ignore_errors=True)
        seeds = seed_files(root / "seeds")
        uris = _link_range(seeds, files, 0, n)
        stamp.write_text(json.dumps(params))
    _write_manifest(manifest, uris)
    return {
        "files": files,
        "manifest": manifest,
        "build_s": time.perf_counter() - t0,
        "reused": reused,
    }


def add_new_files(root: Path, n: int, k: int) -> list[str]:
    """k more links (numbered from n) under files/new/, appended to the manifest."""
    seeds = sorted((root / "seeds").iterdir())
    uris = _link_range(seeds, root / "files" / NEW_DIR, n, n + k)
    _write_manifest(root / "manifest.jsonl", uris, mode="a")
    return uris


def speech_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` clips of CLIP_S seconds cut from the bench speech (earmark.bench.corpus), 16 kHz."""
    from earmark.bench.corpus import demo_clips

    speech = np.concatenate(demo_clips())
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.uniform(*CLIP_S) * CLIP_SR)
        start = int(rng.integers(0, max(1, len(speech) - n)))
        clip = speech[start : start + n]
        if len(clip) < n:  # speech shorter than a clip: loop it
            clip = np.resize(speech, n)
        out.append(clip.astype(np.float32))
    return out


def flac_bytes(x: np.ndarray, sr: int = CLIP_SR) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def packed_corpora(root: Path, clips: list[np.ndarray]) -> dict[str, Path]:
    """The same FLAC clips as loose files (PARQUET_ROWS to a folder), as Parquet files of
    PARQUET_ROWS rows ({bytes, path} struct column `audio`, ROW_GROUP rows per group) and as
    WebDataset tar shards of TAR_MEMBERS clips (key.flac + key.json).
    Folders by form: {"loose": ..., "parquet": ..., "webdataset": ...}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.rmtree(root, ignore_errors=True)
    forms = {k: root / k for k in ("loose", "parquet", "webdataset")}
    for p in forms.values():
        p.mkdir(parents=True)
    data = [flac_bytes(c) for c in clips]
    keys = [f"clip{i:06d}" for i in range(len(data))]
    meta = [json.dumps({"seconds": len(c) / CLIP_SR}) for c in clips]
    for i, (key, b) in enumerate(zip(keys, data, strict=True)):
        folder = forms["loose"] / f"d{i // PARQUET_ROWS:04d}"
        folder.mkdir(exist_ok=True)
        (folder / f"{key}.flac").write_bytes(b)
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for s in range(0, len(data), PARQUET_ROWS):
        part = range(s, min(s + PARQUET_ROWS, len(data)))
        audio = pa.array([{"bytes": data[i], "path": f"{keys[i]}.flac"} for i in part], audio_type)
        table = pa.table({"audio": audio, "meta_json": pa.array([meta[i] for i in part])})
        path = forms["parquet"] / f"part-{s // PARQUET_ROWS:05d}.parquet"
        pq.write_table(table, path, row_group_size=ROW_GROUP)
    for s in range(0, len(data), TAR_MEMBERS):
        with tarfile.open(forms["webdataset"] / f"shard-{s // TAR_MEMBERS:05d}.tar", "w") as tar:
            for i in range(s, min(s + TAR_MEMBERS, len(data))):
                for name, payload in ((f"{keys[i]}.flac", data[i]), (f"{keys[i]}.json", meta[i])):
                    raw = payload if isinstance(payload, bytes) else payload.encode()
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(raw), 0
                    tar.addfile(info, io.BytesIO(raw))
    return forms

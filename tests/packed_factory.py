"""Packed archives for tests, written with the real writers: Parquet with the Hugging Face
`Audio` struct {bytes, path} (pyarrow) and WebDataset tar shards (tarfile)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def hf_parquet(path: Path, clips: list[tuple[str, bytes | None]], row_group_size: int = 2) -> Path:
    """clips: (name, encoded bytes or None); extra columns `speaker` and `n`."""
    audio = [{"bytes": b, "path": name} for name, b in clips]  # bytes None: a path only
    table = pa.table(
        {
            "audio": pa.array(audio, HF_AUDIO),
            "speaker": [f"spk{i % 2}" for i in range(len(clips))],
            "n": list(range(len(clips))),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def tar_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]], gz: bool = False) -> Path:
    """samples: (key, {extension: bytes}); members written in order, key.ext."""
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def meta_json(**kw) -> bytes:
    return json.dumps(kw).encode()

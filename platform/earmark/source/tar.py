"""WebDataset tar shards (plain or gzip) read sample by sample from a stream: members grouped by
key (`0001.flac` + `0001.json` + `0001.txt`), the audio member's bytes and the others as meta.
What the bytes say becomes a `Member` (an error member when unusable); a storage error raised
by the file object propagates unchanged (see earmark.source.packed)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from earmark.contracts import ErrorKind
from earmark.source.listing import AUDIO_EXTENSIONS, meta_value
from earmark.source.packed import Member, Watched, error_member


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset key and extension: up to / after the first dot of the basename."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def _is_audio(ext: str) -> bool:
    return ext.rpartition(".")[2].lower() in AUDIO_EXTENSIONS


class _Sample:
    """The members of one key, gathered as they stream by."""

    def __init__(self, key: str, repeated: bool):
        self.key, self.repeated = key, repeated
        self.names, self.other_audio, self.too_large, self.not_text = [], [], [], []
        self.audio = self.data = self.size = self.bad_json = None  # audio: the member's name
        self.json_meta, self.text_meta = {}, {}

    def wants(self, name: str, ext: str, size: int, max_bytes: int) -> bool:
        """Note a member; True when its bytes are to be read."""
        self.names.append(name)
        if _is_audio(ext):
            # A second audio member is most often another encoding of the same clip (flac + mp3):
            # keep the first, name the others (never read) in meta['other_audio'], no error.
            if self.audio is not None:
                self.other_audio.append(name)
                return False
            self.audio, self.size = name, size
        if size > max_bytes:
            self.too_large.append(f"{name} ({size} bytes)")
            return False
        return bool(ext)  # a member without an extension has no meta key to go under

    def add(self, name: str, ext: str, data: bytes) -> None:
        if _is_audio(ext):
            self.data = data
        elif ext.lower() == "json":  # only `key.json` is merged key by key; `key.x.json` is text
            try:
                obj = json.loads(data)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                self.bad_json = f"{name} is not valid JSON ({exc})"
                return
            if not isinstance(obj, dict):
                self.bad_json = f"{name} holds a JSON {type(obj).__name__}, not an object"
                return
            self.json_meta = {k: meta_value(v) for k, v in obj.items() if v is not None}
        else:
            try:
                self.text_meta[ext] = data.decode("utf-8")
            except UnicodeDecodeError:  # binary side members (.npy, .jpg) are not carried
                self.not_text.append(name)

    def member(self, what: str, max_bytes: int) -> Member:
        meta = {**self.json_meta, **self.text_meta}  # a member file wins over a JSON key
        if self.other_audio:
            meta["other_audio"] = ",".join(self.other_audio)
        if self.not_text:
            meta["not_text"] = ",".join(self.not_text)
        where, key = f"{what}: sample {self.key!r}", self.key
        if self.repeated:
            msg = f"{where} appears again after other samples (members of a sample must be "
            return error_member(key, ErrorKind.CORRUPT, msg + f"adjacent): {', '.join(self.names)}")
        if self.audio is None:
            msg = f"{where} has no audio member (members: {', '.join(self.names)})"
            return error_member(key, ErrorKind.NO_AUDIO, msg, meta)
        if self.too_large:
            msg = f"{where}: {', '.join(self.too_large)} over the {max_bytes} byte limit, not read"
            return error_member(key, ErrorKind.TOO_LARGE, msg, meta, self.size)
        if self.bad_json is not None:
            msg = f"{where}: {self.bad_json}"
            return error_member(key, ErrorKind.CORRUPT, msg, meta, self.size)
        if not self.data:
            msg = f"{where}: the audio member {self.audio} is empty (0 bytes)"
            return error_member(key, ErrorKind.EMPTY_FILE, msg, meta, 0)
        return Member(key, self.data, meta, None, self.size)


def _damage_kind(exc: BaseException) -> ErrorKind:
    cut = isinstance(exc, tarfile.EmptyHeaderError | tarfile.TruncatedHeaderError)  # no header
    return ErrorKind.TRUNCATED if cut or "unexpected end" in str(exc) else ErrorKind.CORRUPT


def iter_tar_members(f: Any, *, max_bytes: int, what: str) -> Iterator[Member]:
    """Samples of a tar shard (plain or gzip, from the bytes; a stream: `f` need not seek) in order.
    A damaged shard yields the complete samples read before the damage, then one error member
    keyed by the sample open when it broke ('' when none), which may lack members. A shard must
    end with the tar end-of-archive block: a stream that just stops is TRUNCATED."""
    watched = Watched(f)
    stops: list[Exception] = []  # why tarfile stopped reading headers (it ends silently)

    class _Info(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tf)
            except tarfile.HeaderError as exc:
                stops.append(exc)
                raise

    try:
        tf = tarfile.open(fileobj=watched, mode="r|*", tarinfo=_Info)
    except Exception as exc:
        if watched.failure is not None:
            raise
        kind = _damage_kind(stops[-1] if stops else exc)
        kind = ErrorKind.EMPTY_FILE if watched.bytes_read == 0 else kind
        msg = f"{what} is not a readable tar shard ({type(exc).__name__}: {exc})"
        yield replace(error_member("", kind, msg), damage=True)
        return
    sample: _Sample | None = None
    seen: set[str] = set()
    done = 0
    broken: BaseException | None = None
    with tf:  # closes tarfile's stream, never `f`
        try:
            while (ti := tf.next()) is not None:
                tf.members.clear()  # a stream has no use for the members it passed
                if not ti.isreg():
                    continue
                key, ext = split_member_name(ti.name)
                if sample is None or key != sample.key:
                    if sample is not None:
                        yield sample.member(what, max_bytes)
                        done += 1
                    sample = _Sample(key, key in seen)
                    seen.add(key)
                if sample.wants(ti.name, ext, ti.size, max_bytes):
                    sample.add(ti.name, ext, tf.extractfile(ti).read(ti.size))
        except Exception as exc:  # what tarfile, gzip or zlib say of the bytes
            broken = exc
    if broken is None and stops and not isinstance(stops[-1], tarfile.EOFHeaderError):
        broken = stops[-1]  # tarfile takes a cut or garbled header for the end of the archive
    if broken is None:
        if sample is not None:
            yield sample.member(what, max_bytes)
        return
    if watched.failure is not None:
        raise broken
    key = sample.key if sample is not None else ""
    msg = f"{what} is cut or damaged at sample {key!r}, after {done} complete sample(s) and "
    msg += f"{watched.bytes_read} bytes of the shard ({type(broken).__name__}: {broken})"
    yield replace(error_member(key, _damage_kind(broken), msg), damage=True)

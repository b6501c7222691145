"""render_report(): the HTML page has every section, chart and sample row it promises."""

from __future__ import annotations

import datetime as dt
import random
import re
import struct
import wave
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from earmark.contracts import rows_to_table
from earmark.report import render_report
from earmark.report.html import browser_audio_src
from earmark.report.plots import nice_ticks
from earmark.report.stats import compute_stats, duration_bins, open_output

PLOT_IDS = (
    "plot-duration",
    "plot-status",
    "plot-errors",
    "plot-tags",
    "plot-throughput",
    "plot-realtime",
    "plot-codec",
    "plot-sample-rate",
    "plot-container",
    "plot-channels",
)
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def write_wav(path: Path, seconds: float = 0.2, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(struct.pack(f"<{n}h", *([1000, -1000] * (n // 2))))


def make_output(root: Path, n: int = 120, seed: int = 3) -> Path:
    """An output directory with varied rows in two Parquet parts; 3 files exist on disk."""
    rng = random.Random(seed)
    audio, out = root / "audio", root / "out"
    audio.mkdir(parents=True)
    out.mkdir()
    codecs = [("mp3", "mp3", 44100, 2), ("flac", "flac", 16000, 1), ("pcm_s16le", "wav", 8000, 1)]
    vocab = ["speech", "music", "dog", "rain", "car horn", "birdsong", "applause"]
    rows = []
    for i in range(n):
        codec, container, rate, ch = codecs[i % 3]
        row = {
            "audio_id": f"id{i:04d}",
            "uri": f"file://{audio}/f{i:04d}.{container}",
            "status": "ok",
            "created_at": T0 + dt.timedelta(seconds=3 * i + rng.random()),
            "model": "whisper:tiny.en",
            "job_id": "em-test",
        }
        if i % 17 == 5:
            row.update(status="error", error_stage="decode", error_kind="corrupt",
                       error=f"invalid data in frame {i}")  # fmt: skip
        elif i % 29 == 7:
            row.update(status="error", error_stage="read", error_kind="not_found",
                       error="file vanished")  # fmt: skip
        elif i == 11:
            row.update(status="skipped")
        else:
            dur = rng.lognormvariate(2.5, 1.0)
            row.update(
                duration_s=dur,
                codec=codec,
                container=container,
                source_sample_rate=rate,
                source_channels=ch,
                transcript=f"transcript number {i} <b>bold?</b>",
                tags=rng.sample(vocab, rng.randint(1, 3)),
                decode_s=dur / 200,
                infer_s=dur / 20,
                num_windows=1 + int(dur // 30),
            )
        rows.append(row)
    rows[0]["uri"] = f"file://{audio}/real0.wav"
    rows[1]["uri"] = "s3://bucket/archive/x.mp3"
    rows[2]["uri"] = "https://example.org/y.flac"
    write_wav(audio / "real0.wav")
    pq.write_table(rows_to_table(rows[: n // 2]), out / "part-0.parquet")
    pq.write_table(rows_to_table(rows[n // 2 :]), out / "part-1.parquet")
    return out


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids[a["id"]] = tag


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _Collector, Path]:
    root = tmp_path_factory.mktemp("report")
    out = make_output(root)
    path = render_report(str(out), root / "site" / "report.html")
    text = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    return text, parser, root


def test_page_has_every_chart_and_table(page: tuple[str, _Collector, Path]) -> None:
    text, parser, _ = page
    for pid in PLOT_IDS:
        assert parser.ids.get(pid) == "svg", pid
    for tid in ("table-errors", "table-samples"):
        assert parser.ids.get(tid) == "table", tid
    assert parser.ids.get("summary") == "section"
    # Charts carry real marks, not placeholders.
    svg = {m.group(1): m.group(0) for m in re.finditer(r'<svg id="([^"]+)".*?</svg>', text)}
    assert svg["plot-duration"].count('class="bin"') >= 5
    assert svg["plot-status"].count('class="bar"') == 3
    assert svg["plot-tags"].count('class="bar"') == 7
    assert svg["plot-codec"].count('class="bar"') == 3
    assert "44.1 kHz" in svg["plot-sample-rate"]
    assert 'class="series"' in svg["plot-throughput"]
    assert "corrupt" in svg["plot-errors"] and "not_found" in svg["plot-errors"]


def test_page_is_self_contained(page: tuple[str, _Collector, Path]) -> None:
    text, parser, _ = page
    for tag, attrs in parser.tags:
        if tag in ("script", "link", "img", "iframe"):
            pytest.fail(f"external-capable element <{tag}> in the report")
        for key in ("href", "src"):
            value = attrs.get(key) or ""
            assert tag == "audio" or not value.startswith(("http", "//")), (tag, value)
    assert "<b>bold?</b>" not in text  # model text is escaped
    assert "&lt;b&gt;bold?&lt;/b&gt;" in text


def test_sample_table_is_bounded_and_includes_failures(page: tuple[str, _Collector, Path]) -> None:
    text, _, _ = page
    rows = re.search(r'<table id="table-samples">(.*?)</table>', text, re.S)
    assert rows is not None and rows.group(1).count("<tr>") == 41  # header + 40 rows
    assert "invalid data in frame" in rows.group(1)  # failures are sampled too
    assert "Sample rows (40 of 120)" in text


def test_audio_players_only_for_browser_reachable_files(tmp_path: Path) -> None:
    out = make_output(tmp_path, n=20)
    text = render_report(str(out), tmp_path / "r.html", max_samples=50).read_text()
    parser = _Collector()
    parser.feed(text)
    audios = [a["src"] for tag, a in parser.tags if tag == "audio"]
    assert sorted(audios) == sorted(
        [(tmp_path / "audio" / "real0.wav").as_uri(), "https://example.org/y.flac"]
    )
    assert "s3:// is not reachable from a browser" in text
    assert "file not found on this machine" in text


def test_stats_numbers(tmp_path: Path) -> None:
    out = make_output(tmp_path, n=60)
    s = compute_stats(open_output(str(out)))
    n_err = sum(1 for i in range(60) if i % 17 == 5 or (i % 29 == 7 and i % 17 != 5))
    assert s.n_rows == 60
    assert s.status == {"ok": 60 - n_err - 1, "error": n_err, "skipped": 1}
    assert sum(s.error_kinds.values()) == n_err
    assert s.errors[0]["count"] == max(s.error_kinds.values())
    assert len(s.durations) == s.status["ok"]
    assert s.wall_s == pytest.approx(177, abs=1.5)
    assert sum(f * s.bucket_s / 60 for f in s.files_per_min) == pytest.approx(60)
    assert sum(a * s.bucket_s for a in s.audio_s_per_s) == pytest.approx(s.total_audio_s)


def test_empty_and_degenerate_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"audio_id": "a", "uri": "/no/a.wav", "status": "error", "error_kind": "not_found"}]
    pq.write_table(rows_to_table(rows), out / "p.parquet")
    text = render_report(str(out), tmp_path / "r.html").read_text()
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in text  # ids stay, with "no data" placeholders
    assert "no timestamps" in text and "no data" in text


def test_helpers() -> None:
    assert nice_ticks(0, 97) == [0, 20, 40, 60, 80]
    assert nice_ticks(0, 97, cover=True) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 17, count=3) == [5, 10, 15]
    edges, counts, log = duration_bins([1.0, 2.0, 3.0, 4.0])
    assert not log and sum(counts) == 4 and edges[0] == 0.0
    edges, counts, log = duration_bins([0.5, 5.0, 50.0, 500.0, 5000.0])
    assert log and sum(counts) == 5
    assert browser_audio_src("http://h/x.wav") == ("http://h/x.wav", "")
    assert browser_audio_src("gs://b/x.wav")[0] is None


def test_flags_and_speech_are_counted_and_shown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    base = {"status": "ok", "duration_s": 10.0, "transcript": "x"}
    rows = [
        {**base, "audio_id": "a", "uri": "/a.wav", "speech_s": 0.0, "flags": ["no_speech"]},
        {**base, "audio_id": "b", "uri": "/b.wav", "speech_s": 6.0, "flags": ["filler"]},
        {**base, "audio_id": "c", "uri": "/c.wav", "speech_s": 9.0, "flags": []},
        {
            **base,
            "audio_id": "d",
            "uri": "/d.wav",
            "speech_s": 5.0,
            "flags": ["filler", "low_confidence"],
        },
    ]
    pq.write_table(rows_to_table(rows), out / "p.parquet")
    s = compute_stats(open_output(str(out)))
    assert s.flags == {"filler": 2, "no_speech": 1, "low_confidence": 1} and s.n_flagged == 3
    assert (s.n_speech_measured, s.n_no_speech, s.total_speech_s) == (4, 1, 20.0)
    text = render_report(str(out), tmp_path / "r.html").read_text()
    assert 'id="plot-flags"' in text and "3 of 4 ok files flagged" in text
    assert "50%" in text and "of the audio is speech" in text  # 20 s of 40 s
    assert "speech 60% · flags: filler" in text  # a sample row shows its own


def test_an_output_written_before_flags_existed_still_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    old = rows_to_table([{"audio_id": "a", "uri": "/a.wav", "status": "ok", "duration_s": 1.0}])
    pq.write_table(old.drop_columns(["flags", "speech_s", "language"]), out / "p.parquet")
    s = compute_stats(open_output(str(out)))
    assert s.flags == {} and s.n_speech_measured == 0
    assert "no file flagged" in render_report(str(out), tmp_path / "r.html").read_text()

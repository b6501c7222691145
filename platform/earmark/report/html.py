"""`earmark report`: one self-contained HTML page describing an annotation run.

Everything is inline (CSS, SVG charts), so the file can be mailed or archived and opened without
a network. Element ids are stable for tests and for linking: `summary`, `plot-duration`,
`plot-status`, `plot-errors`, `table-errors`, `plot-tags`, `plot-throughput`, `plot-realtime`,
`plot-codec`, `plot-sample-rate`, `plot-container`, `plot-channels`, `table-samples`.
"""

from __future__ import annotations

import datetime as dt
import os
from html import escape
from pathlib import Path
from typing import Any

from earmark import __version__
from earmark.report import plots
from earmark.report.stats import RunStats, compute_stats, duration_bins, open_output, sample_rows
from earmark.storage import Location, LocationLike

SAMPLE_ROWS = 40
TEXT_CHARS = 400  # longest text shown per cell in the sample table
STATUS_COLORS = {"ok": "#3a9d5d", "error": "#c0392b", "skipped": "#95a5a6"}

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#222}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:13px;line-height:1.5}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#666}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;align-items:start}
svg.chart{display:block;max-width:100%;height:auto}
figure{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0;padding:10px}
figcaption{font-weight:bold;font-size:14px;margin-bottom:6px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:12px}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef0f3} td.num{text-align:right} .err{color:#c0392b}
.muted{color:#888;font-style:italic} audio{width:220px;height:32px}
td.text{max-width:460px;word-wrap:break-word}
"""


def browser_audio_src(uri: str | None) -> tuple[str | None, str]:
    """(URL a browser can play, or None; reason when None). Local files must exist here."""
    if not uri:
        return None, "no URI"
    if uri.startswith(("http://", "https://")):
        return uri, ""
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if "://" in path:
        return None, f"{uri.split('://', 1)[0]}:// is not reachable from a browser"
    if os.path.isfile(path):
        return Path(os.path.abspath(path)).as_uri(), ""
    return None, "file not found on this machine"


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _figure(caption: str, svg: str, note: str = "") -> str:
    extra = f'<div class="meta">{escape(note)}</div>' if note else ""
    return f"<figure><figcaption>{escape(caption)}</figcaption>{svg}{extra}</figure>"


def _hours(seconds: float) -> str:
    return plots.fmt_seconds(seconds) if seconds else "0 s"


def _summary(s: RunStats) -> str:
    ok, err, skip = (s.status.get(k, 0) for k in ("ok", "error", "skipped"))
    cards = [
        _card(f"{s.n_rows:,}", "files"),
        _card(f"{ok:,}", "ok"),
        _card(f"{err:,}", "errors"),
        _card(f"{skip:,}", "skipped"),
        _card(_hours(s.total_audio_s), "audio annotated"),
    ]
    if s.wall_s:
        cards.append(_card(_hours(s.wall_s), "wall time (first→last row)"))
        cards.append(_card(f"{s.total_audio_s / s.wall_s:.3g}×", "audio per wall time"))
    cards.append(_card(_hours(s.total_decode_s), "decode time (all workers)"))
    cards.append(_card(_hours(s.total_infer_s), "model time (all workers)"))
    if s.total_audio_s and s.total_infer_s:
        cards.append(_card(f"{s.total_infer_s / s.total_audio_s:.3g}", "real-time factor (model)"))
    if s.n_speech_measured:
        share = s.total_speech_s / s.speech_audio_s if s.speech_audio_s else 0.0
        cards.append(_card(f"{share:.0%}", "of the audio is speech (silero-vad)"))
        cards.append(_card(f"{s.n_no_speech:,}", "files with no speech"))
    if s.flags:
        cards.append(_card(f"{s.n_flagged:,}", "files flagged"))
    return '<section id="summary"><div class="cards">' + "".join(cards) + "</div></section>"


def _error_table(s: RunStats) -> str:
    if not s.errors:
        return '<p id="table-errors" class="muted">No failed files.</p>'
    rows = []
    for g in s.errors:
        examples = "<br>".join(
            f"<code>{escape(os.path.basename(u) or u)}</code>: {escape(m[:TEXT_CHARS])}"
            for u, m in g["examples"]
        )
        rows.append(
            f"<tr><td>{escape(g['stage'])}</td><td>{escape(g['kind'])}</td>"
            f'<td class="num">{g["count"]:,}</td><td>{examples}</td></tr>'
        )
    head = "<tr><th>stage</th><th>kind</th><th>files</th><th>examples</th></tr>"
    return f'<table id="table-errors">{head}{"".join(rows)}</table>'


def _row_text(r: dict[str, Any]) -> str:
    parts = []
    if r.get("status") == "skipped":
        parts.append(f'<span class="muted">skipped {escape(r.get("error") or "")}</span>')
    elif r.get("status") != "ok":
        kind = f"{r.get('error_stage') or '?'}/{r.get('error_kind') or '?'}"
        message = escape((r.get("error") or "")[:TEXT_CHARS])
        parts.append(f'<span class="err">[{escape(kind)}] {message}</span>')
    quality = []
    if r.get("speech_s") is not None and r.get("duration_s"):
        quality.append(f"speech {r['speech_s'] / r['duration_s']:.0%}")
    if r.get("flags"):
        quality.append("flags: " + ", ".join(r["flags"]))
    if quality:
        parts.append(f'<span class="muted">{escape(" · ".join(quality))}</span>')
    for name in ("transcript", "caption"):
        if r.get(name):
            parts.append(f"<b>{name}:</b> {escape(r[name][:TEXT_CHARS])}")
    if r.get("tags"):
        parts.append(f"<b>tags:</b> {escape('; '.join(r['tags']))}")
    for a in r.get("answers") or []:
        name, text = a.get("name") or "?", (a.get("text") or "")[:TEXT_CHARS]
        parts.append(f"<b>{escape(name)}:</b> {escape(text)}")
    return "<br>".join(parts) or '<span class="muted">(no output)</span>'


def _samples_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>#</th><th>file</th><th>status</th><th>duration</th><th>format</th>"
        "<th>result</th><th>listen</th></tr>"
    )
    body = []
    for i, r in enumerate(rows, 1):
        uri = r.get("uri") or ""
        src, why = browser_audio_src(uri)
        player = (
            f'<audio controls preload="none" src="{escape(src)}"></audio>'
            if src
            else f'<span class="muted">{escape(why)}</span>'
        )
        dur = r.get("duration_s")
        fmt = " ".join(
            str(x)
            for x in (
                r.get("codec"),
                f"{r['source_sample_rate']} Hz" if r.get("source_sample_rate") else None,
                f"{r['source_channels']} ch" if r.get("source_channels") else None,
            )
            if x
        )
        body.append(
            f'<tr><td class="num">{i}</td><td title="{escape(uri)}">'
            f"{escape(os.path.basename(uri.rstrip('/')) or uri)}</td>"
            f"<td>{escape(r.get('status') or '?')}</td>"
            f'<td class="num">{plots.fmt_seconds(dur) if dur is not None else "—"}</td>'
            f'<td>{escape(fmt) or "—"}</td><td class="text">{_row_text(r)}</td>'
            f"<td>{player}</td></tr>"
        )
    return f'<table id="table-samples">{head}{"".join(body)}</table>'


def _top(d: dict[str, int], n: int = 20) -> list[tuple[str, float]]:
    return [(k, float(v)) for k, v in list(d.items())[:n]]


def build_html(output: str, s: RunStats, samples: list[dict[str, Any]]) -> str:
    """The page as a string."""
    edges, counts, log = duration_bins(s.durations)
    duration_note = "logarithmic bins" if log else ""
    meta = (
        f"Output <code>{escape(output)}</code> · generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by earmark {__version__}<br>"
        f"Models: {escape(', '.join(s.models) or '—')} · jobs: {escape(', '.join(s.jobs) or '—')}"
        f" · written by earmark {escape(', '.join(s.versions) or '—')}"
    )
    bucket = f"per {plots.fmt_seconds(s.bucket_s)} bucket of row timestamps" if s.bucket_s else ""
    tag_note = (
        f"{s.n_tagged:,} files tagged, {s.n_distinct_tags:,} distinct labels (top {len(s.tags)})"
        if s.n_tagged
        else ""
    )
    sections = [
        f"<h1>earmark run report</h1><div class='meta'>{meta}</div>",
        _summary(s),
        '<h2 id="section-content">Durations and tags</h2><div class="grid">',
        _figure(
            "Duration of decoded files",
            plots.histogram(edges, counts, "plot-duration", "Duration histogram", "duration", log),
            duration_note,
        ),
        _figure(
            "Most frequent tags",
            plots.bar_chart([(k, float(v)) for k, v in s.tags], "plot-tags", "Tags"),
            tag_note,
        ),
        '</div><h2 id="section-quality">Quality flags</h2><div class="grid">',
        _figure(
            "Files per quality flag",
            plots.bar_chart(_top(s.flags), "plot-flags", "Flags", plots.PALETTE[2]),
            f"{s.n_flagged:,} of {s.status.get('ok', 0):,} ok files flagged"
            if s.flags
            else "no file flagged, or an output written before flags existed",
        ),
        '</div><h2 id="section-status">Status and errors</h2><div class="grid">',
        _figure(
            "Files by status",
            plots.bar_chart(_top(s.status), "plot-status", "Status", colors=STATUS_COLORS),
        ),
        _figure(
            "Failures by kind",
            plots.bar_chart(_top(s.error_kinds), "plot-errors", "Errors", plots.PALETTE[3]),
        ),
        "</div><h3>Failures by stage and kind</h3>",
        _error_table(s),
        '<h2 id="section-throughput">Throughput</h2><div class="grid">',
        _figure(
            "Files finished per minute",
            plots.time_series(s.times, s.files_per_min, "plot-throughput", "Files", "files / min"),
            bucket,
        ),
        _figure(
            "Audio annotated per second of wall time",
            plots.time_series(
                s.times,
                s.audio_s_per_s,
                "plot-realtime",
                "Audio rate",
                "audio s / s",
                plots.PALETTE[1],
            ),  # fmt: skip
            bucket,
        ),
        '</div><h2 id="section-formats">Formats</h2><div class="grid">',
        _figure("Codec", plots.bar_chart(_top(s.codecs), "plot-codec", "Codec")),
        _figure(
            "Sample rate",
            plots.bar_chart(_top(s.sample_rates), "plot-sample-rate", "Rate", plots.PALETTE[4]),
        ),
        _figure(
            "Container",
            plots.bar_chart(_top(s.containers), "plot-container", "Container", plots.PALETTE[5]),
        ),
        _figure(
            "Channels",
            plots.bar_chart(_top(s.channels), "plot-channels", "Channels", plots.PALETTE[1]),
        ),
        f'</div><h2 id="section-samples">Sample rows ({len(samples)} of {s.n_rows:,})</h2>',
        _samples_table(samples),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>earmark report: {escape(output)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )


def render_report(
    output: LocationLike,
    html_path: str | os.PathLike[str],
    max_samples: int = SAMPLE_ROWS,
) -> Path:
    """Read an output (local or any fsspec URL) and write its report to a local HTML file."""
    output = Location.of(output)
    dataset = open_output(output)
    stats = compute_stats(dataset)
    samples = sample_rows(dataset, max_samples)
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(output.url, stats, samples), encoding="utf-8")
    return path

"""The run report renders in a real browser: headless Chromium draws the charts.

Chromium is required (CI installs Debian's `chromium`); without it this test fails, naming the fix.
The screenshot is decoded by a small PNG reader below (no imaging library needed) and must show
the charts' colours in quantity, not a blank or unstyled page.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from earmark.contracts import rows_to_table
from earmark.report import render_report
from earmark.report.html import STATUS_COLORS
from earmark.report.plots import PALETTE

CHROMIUM = os.environ.get("EARMARK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
)
WINDOW = (1200, 2000)
BROWSER_TIMEOUT_S = 90
PLOT_IDS = (
    "plot-duration",
    "plot-tags",
    "plot-status",
    "plot-errors",
    "plot-throughput",
    "plot-realtime",
    "plot-codec",
    "plot-sample-rate",
)


def _chromium() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if not path:
        pytest.fail(
            f"headless Chromium not found at {CHROMIUM}: install it with "
            "`apt-get install -y chromium` (or set EARMARK_CHROMIUM to its path)"
        )
    return path


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG per-row filters (None, Sub, Up, Average, Paeth) → pixel bytes."""
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        ftype, line = rows[y, 0], rows[y, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: running sum along each channel, mod 256
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint32) % 256
            cur = cur.astype(np.uint8).reshape(-1)
        elif ftype == 2:
            cur = line + prev  # uint8 arithmetic wraps mod 256
        else:  # Average / Paeth depend on the reconstructed left byte: sequential
            b = prev.tolist()
            c_line = bytearray(line.tobytes())
            for i in range(stride):
                a = c_line[i - bpp] if i >= bpp else 0
                if ftype == 3:
                    c_line[i] = (c_line[i] + ((a + b[i]) >> 1)) & 0xFF
                else:
                    c = b[i - bpp] if i >= bpp else 0
                    p = a + b[i] - c
                    pa, pb, pc = abs(p - a), abs(p - b[i]), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b[i] if pb <= pc else c)
                    c_line[i] = (c_line[i] + pred) & 0xFF
            cur = np.frombuffer(bytes(c_line), np.uint8)
        out[y] = cur
        prev = cur
    return out


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG as an (height, width, 3) uint8 array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    assert header is not None, "PNG without IHDR"
    width, height, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 3 if ctype == 2 else 4
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    pixels = _unfilter(rows.reshape(height, width * bpp + 1), bpp)
    return pixels.reshape(height, width, bpp)[:, :, :3]


def _colour_fraction(img: np.ndarray, hex_colour: str, tol: int = 8) -> float:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], np.int16)
    close = np.all(np.abs(img.astype(np.int16) - rgb) <= tol, axis=2)
    return float(close.mean())


def _make_output(root: Path, n: int = 150) -> Path:
    rng = np.random.default_rng(5)
    out = root / "out"
    out.mkdir(parents=True)
    t0 = dt.datetime(2025, 5, 1, 8, 0, tzinfo=dt.UTC)
    vocab = ["speech", "music", "dog", "rain", "engine", "laughter", "birds"]
    codecs = [("mp3", "mp3", 44100), ("flac", "flac", 16000), ("opus", "ogg", 48000)]
    rows = []
    for i in range(n):
        codec, container, rate = codecs[i % 3]
        row = {
            "audio_id": f"a{i}",
            "uri": f"s3://archive/set/{i:05d}.{container}",
            "status": "ok",
            "created_at": t0 + dt.timedelta(seconds=float(2 * i + rng.random())),
        }
        if i % 9 == 4:
            kind = ("corrupt", "truncated", "not_found")[(i // 9) % 3]
            row.update(status="error", error_stage="decode", error_kind=kind, error="bad data")
        else:
            dur = float(rng.lognormal(2.0, 1.2))
            row.update(
                duration_s=dur,
                codec=codec,
                container=container,
                source_sample_rate=rate,
                source_channels=1 + i % 2,
                transcript=f"words of file {i}",
                tags=list(rng.choice(vocab, size=1 + i % 3, replace=False)),
                decode_s=dur / 100,
                infer_s=dur / 10,
            )
        rows.append(row)
    pq.write_table(rows_to_table(rows), out / "part-0.parquet")
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chromium-report")
    return render_report(str(_make_output(root)), root / "report.html")


def test_dom_has_the_charts(rendered: Path, tmp_path: Path) -> None:
    proc = _run_chromium(["--dump-dom", rendered.as_uri()], tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "earmark run report" in dom
    for pid in PLOT_IDS:
        m = re.search(rf'<svg id="{pid}"[^>]*>(.*?)</svg>', dom, re.S)
        assert m, f"{pid} missing from the rendered DOM"
        marks = re.findall(r'class="(bar|bin|series)"', m.group(1))
        assert marks, f"{pid} has no drawn marks (only a placeholder)"
    errors = re.search(r'<svg id="plot-errors".*?</svg>', dom, re.S)
    assert errors and errors.group(0).count('class="bar"') == 3
    assert re.search(r'<table id="table-samples">.*?words of file', dom, re.S)


def test_screenshot_shows_the_charts(rendered: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = _run_chromium(
        [f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", rendered.as_uri()],
        tmp_path / "profile",
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = read_png(shot)
    assert img.shape[:2] == (WINDOW[1], WINDOW[0])
    # "Ink": pixels far from both white and the page background (#f4f5f7); ~8% when it works.
    pix = img.astype(np.int16)
    far_white = np.abs(pix - 255).max(axis=2) > 40
    far_bg = np.abs(pix - np.array([0xF4, 0xF5, 0xF7], np.int16)).max(axis=2) > 40
    ink = float((far_white & far_bg).mean())
    assert ink > 0.04, f"page looks blank: {ink:.1%} of pixels drawn"
    q = (img // 16).astype(np.int32)  # 16 levels per channel, packed into one int per pixel
    packed = (q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]).ravel()
    distinct = int(np.count_nonzero(np.bincount(packed)))
    assert distinct > 40, f"only {distinct} distinct colours"
    # The chart fills are drawn: bars/histogram blue, status green, failures red, series green.
    assert _colour_fraction(img, PALETTE[0]) > 0.01, "no histogram / tag bars visible"
    assert _colour_fraction(img, STATUS_COLORS["ok"]) > 0.001, "no status bar visible"
    assert _colour_fraction(img, PALETTE[3]) > 0.0005, "no failure bars visible"
    # Charts sit where the page puts them: the top half holds the duration histogram.
    top = img[: WINDOW[1] // 2]
    assert _colour_fraction(top, PALETTE[0]) > 0.01

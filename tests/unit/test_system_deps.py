"""`make test`'s setup path: scripts/system_deps.sh finds, installs or explains Chromium.

The script runs for real with a PATH that holds only fake executables, so the machine's own
Chromium, apt-get and sudo are never seen and nothing is installed here. The script needs no
external tool besides apt-get/sudo, which is what makes that PATH enough.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from paths import REPO

SCRIPT = REPO / "scripts" / "system_deps.sh"
BASH = shutil.which("bash") or "/bin/bash"
CHMOD = shutil.which("chmod") or "/bin/chmod"

# Records every call, one line of arguments each; `install` succeeds by dropping a fake
# chromium into the fake bin folder, as the real package would put one on PATH.
APT_GET_INSTALLS = """#!{bash}
echo "$*" >> "$FAKE_LOG"
if [[ "$1" == install ]]; then
  printf '#!{bash}\\nexit 0\\n' > "$FAKE_BIN/chromium"
  {chmod} +x "$FAKE_BIN/chromium"
fi
"""
APT_GET_FAILS = """#!{bash}
echo "$*" >> "$FAKE_LOG"
echo "E: Unable to locate package chromium" >&2
exit 100
"""
# Password-less sudo: sets the VAR=value arguments, then runs the command as is (builtins like
# `true` included, since the fake PATH has no /usr/bin).
SUDO = """#!{bash}
[[ "$1" == -n ]] && shift
while [[ "$1" == *=* ]]; do export "$1"; shift; done
"$@"
"""


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(body.format(bash=BASH, chmod=CHMOD))
    path.chmod(0o755)


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Runs the script with only tmp_path/bin on PATH; returns it and apt-get's recorded calls."""
    log = tmp_path / "apt-get.log"
    full_env = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path), "FAKE_LOG": str(log),
                "FAKE_BIN": str(tmp_path / "bin"), **env}  # fmt: skip
    proc = subprocess.run(
        [BASH, str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=30, check=False
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    _fake(path, "sudo", SUDO)  # so the install path is the same whether tests run as root or not
    return path


def _assert_explains(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0
    assert "Chromium is missing" in proc.stderr
    assert "apt-get install -y chromium" in proc.stderr
    assert "test_report_chromium" in proc.stderr


@pytest.mark.parametrize("name", ["chromium", "chromium-browser"])
def test_present_chromium_installs_nothing(tmp_path: Path, bin_dir: Path, name: str) -> None:
    _fake(bin_dir, name, "#!{bash}\nexit 0\n")
    _fake(bin_dir, "apt-get", APT_GET_INSTALLS)
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls == []
    assert proc.stdout == proc.stderr == ""  # quiet when there is nothing to do


def test_earmark_chromium_path_counts_as_present(tmp_path: Path, bin_dir: Path) -> None:
    elsewhere = tmp_path / "opt" / "chrome"
    elsewhere.parent.mkdir()
    _fake(elsewhere.parent, elsewhere.name, "#!{bash}\nexit 0\n")
    _fake(bin_dir, "apt-get", APT_GET_INSTALLS)
    proc, calls = _run(tmp_path, EARMARK_CHROMIUM=str(elsewhere))
    assert proc.returncode == 0, proc.stderr
    assert calls == []


def test_missing_chromium_without_install_rights_explains(tmp_path: Path, bin_dir: Path) -> None:
    _fake(bin_dir, "apt-get", APT_GET_INSTALLS)
    proc, calls = _run(tmp_path, EARMARK_SYSDEPS_NO_INSTALL="1")
    _assert_explains(proc)
    assert calls == []
    assert not (bin_dir / "chromium").exists()


def test_failing_apt_get_explains_and_shows_its_output(tmp_path: Path, bin_dir: Path) -> None:
    _fake(bin_dir, "apt-get", APT_GET_FAILS)
    proc, calls = _run(tmp_path)
    _assert_explains(proc)
    assert "Unable to locate package chromium" in proc.stderr
    assert calls  # it did try


def test_no_apt_get_explains(tmp_path: Path, bin_dir: Path) -> None:
    proc, _ = _run(tmp_path)
    _assert_explains(proc)
    assert "no apt-get" in proc.stderr


def test_missing_chromium_is_installed_once(tmp_path: Path, bin_dir: Path) -> None:
    _fake(bin_dir, "apt-get", APT_GET_INSTALLS)
    proc, calls = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls[0] == "update -qq"
    assert re.fullmatch(r"install .*\bchromium", calls[-1]), calls
    assert os.access(bin_dir / "chromium", os.X_OK)
    # idempotent: a second run finds it and calls apt-get no more
    proc, calls_again = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert calls_again == calls


def test_make_test_runs_the_script_and_ci_only_calls_make_test() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test:.*\bsystem-deps\b", makefile, re.M)
    assert re.search(r"^system-deps:\n\t@?bash scripts/system_deps\.sh$", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [ln for ln in ci if ln.strip() and not ln.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert not any("apt-get" in ln or "chromium" in ln for ln in commands)

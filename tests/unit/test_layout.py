"""House rules: platform/ is a source root that never shadows the standard library."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

from paths import REPO

STDLIB = os.path.realpath(sysconfig.get_paths()["stdlib"])


def _platform_file(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    out = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.__file__); platform.system()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return os.path.realpath(out.stdout.strip())


def test_platform_has_no_init():
    assert (REPO / "platform" / "earmark" / "__init__.py").exists()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_platform_from_repo_root_is_stdlib():
    assert _platform_file({}).startswith(STDLIB)


def test_import_platform_with_repo_on_pythonpath_is_stdlib():
    # Ray's working_dir puts the repo root on sys.path / PYTHONPATH
    assert _platform_file({"PYTHONPATH": str(REPO)}).startswith(STDLIB)


def test_no_tracked_file_over_5mb():
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    big = [f for f in files if (REPO / f).exists() and (REPO / f).stat().st_size > 5 << 20]
    assert not big, big

#!/usr/bin/env bash
# System tools the test suite needs beyond the virtualenv. Called by `make test` (and so by CI).
# Idempotent and silent when everything is present; installs with apt-get when it can (as root,
# or through password-less sudo); otherwise fails naming what is missing and how to install it.
#
# Only shell builtins are used besides apt-get/sudo, so tests can run it with a PATH holding
# nothing but fakes.
#
# Environment (for tests and unusual machines):
#   EARMARK_CHROMIUM           path to a Chromium binary to use instead of a PATH lookup
#   EARMARK_CHROMIUM_NAMES     names to look for on PATH (default: "chromium chromium-browser")
#   EARMARK_SYSDEPS_NO_INSTALL set to 1 to only check, never install
set -euo pipefail

CHROMIUM_PACKAGE=chromium
INSTALL_HINT="apt-get update && apt-get install -y ${CHROMIUM_PACKAGE}"

have_chromium() {
  if [[ -n "${EARMARK_CHROMIUM:-}" && -x "${EARMARK_CHROMIUM}" ]]; then
    return 0
  fi
  local name
  for name in ${EARMARK_CHROMIUM_NAMES:-chromium chromium-browser}; do
    if command -v "$name" >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

fail() {
  {
    echo "error: headless Chromium is missing; the HTML-report tests (tests/integration/test_report_chromium.py) need it."
    echo "  $1"
    echo "  Install it as root:  ${INSTALL_HINT}"
    echo "  (or point EARMARK_CHROMIUM at an existing Chromium binary), then rerun 'make test'."
  } >&2
  exit 1
}

# Runs apt-get, directly or through "sudo -n"; its output is shown only when it fails, so a
# successful install stays quiet.
apt_install() {
  local -a run=("$@")
  local out
  if ! out=$("${run[@]}" apt-get update -qq 2>&1) ||
    ! out=$("${run[@]}" apt-get install -y -qq "$CHROMIUM_PACKAGE" 2>&1); then
    echo "$out" >&2
    fail "apt-get could not install the '${CHROMIUM_PACKAGE}' package (output above)."
  fi
}

if have_chromium; then
  exit 0
fi

if [[ "${EARMARK_SYSDEPS_NO_INSTALL:-0}" == 1 ]]; then
  fail "Automatic installation is disabled (EARMARK_SYSDEPS_NO_INSTALL=1)."
fi

if ! command -v apt-get >/dev/null 2>&1; then
  fail "This machine has no apt-get; install Chromium with its package manager."
fi

export DEBIAN_FRONTEND=noninteractive
if [[ "$EUID" -eq 0 ]]; then
  runner=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  # sudo drops most of the environment; pass the non-interactive setting explicitly.
  runner=(sudo -n DEBIAN_FRONTEND=noninteractive)
else
  fail "Not root, and 'sudo -n' is not available to install it."
fi
echo "installing ${CHROMIUM_PACKAGE} (needed by the HTML-report tests) with apt-get..." >&2
apt_install "${runner[@]}"

# Forget cached lookups so the freshly installed binary is found.
hash -r
if ! have_chromium; then
  fail "apt-get finished but no chromium binary is on PATH."
fi

#!/usr/bin/env bash
# Check scripts/embed-launcher.service with systemd-analyze verify, in a way that can fail.
#
# systemd-analyze reports unknown keys and bad values only as warnings (exit 0), and it rejects an
# ExecStart= binary that is not installed on this machine. So this verifies a copy whose ExecStart=
# is an existing binary, treats any output as a failure, and first proves on a broken copy that
# the tool does report mistakes here (otherwise the check would pass vacuously). Then it checks the
# hardening: `systemd-analyze security` must rate the unit at most MAX_EXPOSURE (issue 13).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT=$ROOT/scripts/embed-launcher.service
INSTALLER=$ROOT/scripts/install-systemd.sh
EXPECTED_EXEC=ExecStart=/opt/embed-launcher/bin/embed-launcher
MAX_EXPOSURE=2.0

fail() {
    echo "verify-systemd-unit: FAILED: $*" >&2
    exit 1
}

if ! command -v systemd-analyze >/dev/null; then
    echo "verify-systemd-unit: SKIPPED: systemd-analyze is not installed (apt-get install systemd)." >&2
    exit 0
fi

# The unit starts what the installer installs.
grep -qx "$EXPECTED_EXEC" "$UNIT" || fail "$UNIT must say $EXPECTED_EXEC (the installer's venv)."
grep -q '^DEFAULT_PREFIX=/opt/embed-launcher\b' "$INSTALLER" || fail "$INSTALLER's DEFAULT_PREFIX differs from the unit."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
true_bin=$(command -v true)

# Negative control: an unknown key must be reported.
mkdir "$tmp/control"
sed -e "s#^ExecStart=.*#ExecStart=$true_bin#" -e 's#^\[Service\]$#[Service]\nNoSuchSetting=1#' "$UNIT" \
    >"$tmp/control/embed-launcher.service"
control=$(systemd-analyze verify --man=no "$tmp/control/embed-launcher.service" 2>&1 || true)
[[ $control == *NoSuchSetting* ]] \
    || fail "systemd-analyze did not report an unknown key on this machine, so it cannot check the unit."

mkdir "$tmp/unit"
sed "s#^ExecStart=.*#ExecStart=$true_bin#" "$UNIT" >"$tmp/unit/embed-launcher.service"
if ! out=$(systemd-analyze verify --man=no "$tmp/unit/embed-launcher.service" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify exited non-zero."
fi
if [[ -n $out ]]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify reported problems (above)."
fi

# --threshold counts tenths: 20 means an exposure of 2.0. Offline: the unit as written, not as a
# running service on this machine. A copy without its hardening must fail, or the check is vacuous.
threshold=${MAX_EXPOSURE/./}
sed '/^# Hardening/,/^\[Install\]/{/^\[Install\]/!d}' "$tmp/unit/embed-launcher.service" >"$tmp/control/embed-launcher.service"
if systemd-analyze security --offline=true --threshold="$threshold" "$tmp/control/embed-launcher.service" >/dev/null 2>&1; then
    fail "systemd-analyze security accepted an unhardened copy, so it cannot check the unit here."
fi
if ! out=$(systemd-analyze security --offline=true --threshold="$threshold" "$tmp/unit/embed-launcher.service" 2>&1); then
    printf '%s\n' "$out" | grep '✗' >&2 || true
    fail "exposure above $MAX_EXPOSURE: $(printf '%s\n' "$out" | tail -n 1)"
fi
exposure=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "verify-systemd-unit: OK ($(systemd-analyze --version | head -n 1); exposure $exposure)"

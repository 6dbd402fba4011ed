#!/usr/bin/env bash
# Install (or remove) embed-launcher as a systemd service on this machine. Idempotent: run it
# again to upgrade; nothing that exists is overwritten except the venv's packages, the unit and the
# embed_manage wrapper. A running service is restarted when its code or unit changed; a stopped one
# stays stopped (unless --enable).
#
#   sudo scripts/install-systemd.sh                 # install from this checkout
#   sudo scripts/install-systemd.sh --enable        # ... and start it now and at boot
#   sudo scripts/install-systemd.sh --source 'embed-launcher==0.1.0'
#   scripts/install-systemd.sh --dry-run            # print what would be done
#   sudo scripts/install-systemd.sh --uninstall [--purge]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT_NAME=embed-launcher.service
UNIT_SRC=$ROOT/scripts/$UNIT_NAME
UNIT_DST=/etc/systemd/system/$UNIT_NAME
DEFAULT_PREFIX=/opt/embed-launcher  # the ExecStart= path in the shipped unit
CONF_DIR=/etc/embed-launcher
ENV_FILE=$CONF_DIR/embed.env
DATA_DIR=/var/lib/embed-launcher
MANAGE_WRAPPER=/usr/local/bin/embed_manage
WRAPPER_MARK="# installed by embed-launcher install-systemd.sh"
SERVICE_USER=embed

PREFIX=$DEFAULT_PREFIX
SOURCE=$ROOT
PYTHON=python3
ENABLE=0
UNINSTALL=0
PURGE=0
DRY_RUN=0

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    cat <<EOF
Options:
  --source SPEC   what pip installs: a path or a requirement (default: $ROOT)
  --prefix DIR    the virtualenv (default: $DEFAULT_PREFIX)
  --python EXE    interpreter for the venv, 3.11 or newer (default: python3)
  --enable        systemctl enable --now after installing
  --uninstall     stop and remove the service, the venv and the embed_manage wrapper;
                  keeps $CONF_DIR, $DATA_DIR (API key, models) and the '$SERVICE_USER' user
  --purge         with --uninstall: also remove those, including the API key and models
  --dry-run       print the commands instead of running them
EOF
}

die() {
    echo "install-systemd: $*" >&2
    exit 2
}

say() { echo "==> $*"; }

# Run a command, or only show it with --dry-run.
run() {
    if ((DRY_RUN)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# Write stdin to a file with mode/owner, or only say so with --dry-run.
write_file() {
    local path=$1 mode=$2 owner=$3 tmp
    if ((DRY_RUN)); then
        echo "+ write $path (mode $mode, owner $owner):"
        sed 's/^/|   /'
        return
    fi
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
}

have_systemd() { [[ -d /run/systemd/system ]]; }

# "active", "activating" (also: waiting to be restarted), "inactive", "failed", ...; "none" without systemd.
service_state() {
    if have_systemd; then
        systemctl is-active "$UNIT_NAME" 2>/dev/null || true
    else
        echo none
    fi
}

# A hash of what the running service executes: the unit, and the venv's Python files and package
# metadata. pip reinstalls a checkout even when nothing changed; this tells whether anything did.
installed_fingerprint() {
    {
        cat "$UNIT_DST" 2>/dev/null || true
        if [[ -d $PREFIX/lib ]]; then
            find "$PREFIX/lib" -type f \( -name '*.py' -o -name METADATA \) -print0 | sort -z \
                | xargs -0 -r sha256sum
        fi
    } | sha256sum | cut -d' ' -f1
}

parse_args() {
    while (($#)); do
        case $1 in
            --source) SOURCE=${2:?--source needs a value}; shift ;;
            --prefix) PREFIX=${2:?--prefix needs a value}; shift ;;
            --python) PYTHON=${2:?--python needs a value}; shift ;;
            --enable) ENABLE=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --dry-run) DRY_RUN=1 ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option '$1'." ;;
        esac
        shift
    done
    [[ $PREFIX == /* ]] || die "--prefix must be an absolute path, got '$PREFIX'."
    ((PURGE == 0 || UNINSTALL == 1)) || die "--purge only goes with --uninstall."
    ((DRY_RUN || EUID == 0)) || die "run as root (sudo), or add --dry-run to see what would be done."
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found; install python3 (3.11+) and python3-venv, or pass --python."
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is older than 3.11; pass --python with a newer interpreter."
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "$PYTHON cannot create virtualenvs; install python3-venv (Debian/Ubuntu) and retry."
}

ensure_user() {
    local nologin
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    if ! getent group "$SERVICE_USER" >/dev/null; then
        say "creating system group $SERVICE_USER"
        run groupadd --system "$SERVICE_USER"
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        say "creating system user $SERVICE_USER"
        run useradd --system --gid "$SERVICE_USER" --home-dir "$DATA_DIR" --no-create-home \
            --shell "$nologin" "$SERVICE_USER"
    fi
}

install_venv() {
    if [[ ! -x $PREFIX/bin/python ]]; then
        say "creating virtualenv $PREFIX"
        run "$PYTHON" -m venv "$PREFIX"
    fi
    say "installing $SOURCE into $PREFIX"
    run "$PREFIX/bin/pip" install --disable-pip-version-check --upgrade "$SOURCE"
    if ((DRY_RUN == 0)) && ! runuser -u "$SERVICE_USER" -- "$PREFIX/bin/python" -c pass 2>/dev/null; then
        die "user '$SERVICE_USER' cannot run $PREFIX/bin/python (is $PYTHON under /root, e.g. pyenv?);" \
            "reinstall with --python /usr/bin/python3 after removing $PREFIX."
    fi
}

# embed_manage for admins: the service's data dir and env file, run as the service user so that
# files it writes (--pullmodel) stay the service's.
install_manage_wrapper() {
    say "installing $MANAGE_WRAPPER"
    write_file "$MANAGE_WRAPPER" 0755 root:root <<EOF
#!/bin/sh
$WRAPPER_MARK
: "\${EMBED_DATA_DIR:=$DATA_DIR}"
: "\${EMBED_ENV_FILE:=$ENV_FILE}"
export EMBED_DATA_DIR EMBED_ENV_FILE
if [ "\$(id -u)" -eq 0 ]; then
    exec runuser -u $SERVICE_USER -- "$PREFIX/bin/embed_manage" "\$@"
fi
exec "$PREFIX/bin/embed_manage" "\$@"
EOF
}

install_dirs() {
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    # systemd's StateDirectory= would create it at start; embed_manage --pullmodel may come first.
    [[ -d $DATA_DIR ]] || run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
}

install_env_file() {
    if [[ -e $ENV_FILE ]]; then
        say "keeping existing $ENV_FILE"
    elif [[ -f $ROOT/embed.env.example ]]; then
        say "creating $ENV_FILE from embed.env.example"
        run install -m 0640 -o root -g "$SERVICE_USER" "$ROOT/embed.env.example" "$ENV_FILE"
    else
        say "creating an empty $ENV_FILE"
        write_file "$ENV_FILE" 0640 "root:$SERVICE_USER" <<<"# embed-launcher settings (KEY=value); see embed.env.example."
    fi
}

install_unit() {
    [[ -f $UNIT_SRC ]] || die "$UNIT_SRC not found; run this script from an embed-launcher checkout."
    say "installing $UNIT_DST"
    sed "s#^ExecStart=$DEFAULT_PREFIX/#ExecStart=$PREFIX/#" "$UNIT_SRC" | write_file "$UNIT_DST" 0644 root:root
    if have_systemd; then
        run systemctl daemon-reload
    else
        say "systemd is not running here: skipping daemon-reload"
    fi
}

warn_if_no_tei() {
    if ! PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin command -v text-embeddings-router >/dev/null \
        && ! grep -qs '^[[:space:]]*EMBED_TEI_BIN=' "$ENV_FILE"; then
        echo "Warning: text-embeddings-router is not on the service's PATH; install TEI or set" \
            "EMBED_TEI_BIN in $ENV_FILE before starting." >&2
    fi
}

# A running service keeps executing the old code until it restarts: restart it when the code or
# the unit changed. A stopped service stays stopped unless --enable asks for it to run.
apply_upgrade() {
    local state_before=$1 fingerprint_before=$2
    if ! have_systemd; then
        say "done. systemd is not running here; start it later with: systemctl enable --now $UNIT_NAME"
        return
    fi
    case $state_before in
        active | activating | reloading)
            if ((DRY_RUN)); then
                say "$UNIT_NAME is running: it will be restarted if the code or the unit changed"
                run systemctl restart "$UNIT_NAME"
            elif [[ $(installed_fingerprint) != "$fingerprint_before" ]]; then
                say "$UNIT_NAME was running the previous version: restarting it"
                run systemctl restart "$UNIT_NAME"
            else
                say "$UNIT_NAME is running and nothing changed: not restarting it"
            fi
            if ((ENABLE)); then run systemctl enable "$UNIT_NAME"; fi
            ;;
        *)
            if ((ENABLE)); then
                say "enabling and starting $UNIT_NAME"
                run systemctl enable --now "$UNIT_NAME"
            elif [[ -n $fingerprint_before ]]; then
                say "$UNIT_NAME is not running ($state_before): left stopped; start it with: systemctl start $UNIT_NAME"
            else
                say "done. Start with: systemctl enable --now $UNIT_NAME; follow with: journalctl -fu $UNIT_NAME"
            fi
            ;;
    esac
}

do_install() {
    local state_before fingerprint_before=""
    check_python
    state_before=$(service_state)
    if [[ -e $UNIT_DST ]]; then fingerprint_before=$(installed_fingerprint); fi
    ensure_user
    install_venv
    install_manage_wrapper
    install_dirs
    install_env_file
    install_unit
    warn_if_no_tei
    apply_upgrade "$state_before" "$fingerprint_before"
}

do_uninstall() {
    if have_systemd && [[ -e $UNIT_DST ]]; then
        run systemctl disable --now "$UNIT_NAME"
    fi
    [[ ! -e $UNIT_DST ]] || run rm -f "$UNIT_DST"
    if have_systemd; then run systemctl daemon-reload; fi
    if grep -qsF "$WRAPPER_MARK" "$MANAGE_WRAPPER"; then run rm -f "$MANAGE_WRAPPER"; fi
    [[ ! -e $PREFIX ]] || run rm -rf "$PREFIX"
    if ((PURGE)); then
        run rm -rf "$CONF_DIR" "$DATA_DIR"
        if getent passwd "$SERVICE_USER" >/dev/null; then run userdel "$SERVICE_USER"; fi
        if getent group "$SERVICE_USER" >/dev/null; then run groupdel "$SERVICE_USER"; fi
    else
        say "kept $CONF_DIR, $DATA_DIR and user '$SERVICE_USER' (add --purge to remove them)"
    fi
}

parse_args "$@"
if ((UNINSTALL)); then do_uninstall; else do_install; fi

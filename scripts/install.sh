#!/usr/bin/env bash
# Installs unspoof as a server: the binary, its man pages and shell completions, a starting
# configuration /etc/unspoof/unspoof.toml (never overwritten), and a hardened systemd unit
# (unspoof.service) that runs `unspoof serve` as a dynamic user with the data directory
# /var/lib/unspoof, a read-only system, and no privilege but binding port 25.
#
#   sudo scripts/install.sh                 # build (cargo shows its progress) and install
#   scripts/install.sh --help
#
# Then: set protected_domains in /etc/unspoof/unspoof.toml, `unspoof policy check` it, and
# `systemctl enable --now unspoof`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

prefix=/usr/local
sysconfdir=/etc
unitdir=/etc/systemd/system
datadir=/var/lib/unspoof
binary=""

usage() {
  cat <<EOF
usage: scripts/install.sh [options]
  --prefix DIR      where bin/, share/man/ and the completions go (default $prefix)
  --sysconfdir DIR  where unspoof/unspoof.toml goes (default $sysconfdir)
  --unitdir DIR     where unspoof.service goes (default $unitdir); "" installs no unit
  --binary FILE     install this unspoof binary instead of building one with cargo
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --sysconfdir) sysconfdir="$2"; shift 2 ;;
    --unitdir) unitdir="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
  esac
done

bindir="$prefix/bin"
mkdir -p "$bindir"
if [ -n "$binary" ]; then
  install -m 0755 "$binary" "$bindir/unspoof"
else
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: cargo is not on this PATH (under sudo, rustup's cargo often is not)." >&2
    echo "  Build as yourself: cargo install --path crates/cli --locked" >&2
    echo "  then: sudo scripts/install.sh --binary ~/.cargo/bin/unspoof" >&2
    exit 69
  fi
  echo "== building unspoof (the first build takes several minutes)"
  cargo install --path "$root/crates/cli" --locked --root "$prefix"
fi
unspoof="$bindir/unspoof"
echo "== installed $("$unspoof" --version) as $unspoof"

man1="$prefix/share/man/man1"
"$unspoof" man --out-dir "$man1"
echo "== man pages in $man1 (man unspoof)"
mkdir -p "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
  "$prefix/share/fish/vendor_completions.d"
"$unspoof" completions bash >"$prefix/share/bash-completion/completions/unspoof"
"$unspoof" completions zsh >"$prefix/share/zsh/site-functions/_unspoof"
"$unspoof" completions fish >"$prefix/share/fish/vendor_completions.d/unspoof.fish"
echo "== completions for bash, zsh and fish under $prefix/share"

confdir="$sysconfdir/unspoof"
config="$confdir/unspoof.toml"
mkdir -p "$confdir"
if [ -e "$config" ]; then
  echo "== $config exists: left as it is"
else
  cat >"$config" <<EOF
# $config: the site's policy and its SMTP gateway, written by scripts/install.sh.
# Every key, with its default and what it does: examples/unspoof.toml and man unspoof.
# Check it with: unspoof policy check $config

# Your own mail domains: mail from outside that claims one of them must prove it, or it is
# refused. They are also the domains the gateway accepts mail for. Change this first.
protected_domains = ["example.localhost"]

# Hosts whose Received headers are ours (internal relays, submission clients).
internal_networks = []

[gateway]
data_dir = "$datadir"          # Maildir, quarantine spool, SQLite store, TLS certificate
listen = "0.0.0.0:25"                 # inbound SMTP for protected_domains
submission = ""                       # off until [[gateway.users]] exist (docs/gateway.md)
metrics = "127.0.0.1:9425"            # Prometheus /metrics and /healthz; keep it on loopback
# downstream = "127.0.0.1:10025"      # the site's real MTA; without it, mail goes into the Maildir
EOF
  echo "== wrote $config (set protected_domains)"
fi

if [ -n "$unitdir" ]; then
  mkdir -p "$unitdir"
  cat >"$unitdir/unspoof.service" <<EOF
# unspoof.service: the SMTP gateway, written by scripts/install.sh.
# A dynamic user (no account to manage), the data directory $datadir (StateDirectory),
# nothing else writable, and of root's powers only binding ports below 1024.
[Unit]
Description=unspoof SMTP gateway: stops forged email
Documentation=man:unspoof(1) man:unspoof-serve(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
Environment=UNSPOOF_CONFIG=$config
ExecStart=$unspoof serve --config $config
# SIGTERM drains: transactions in flight finish (drain_timeout, 60 s by default) first.
KillSignal=SIGTERM
TimeoutStopSec=90
Restart=on-failure
RestartSec=2

DynamicUser=yes
StateDirectory=unspoof
StateDirectoryMode=0750
UMask=0027
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
EOF
  echo "== wrote $unitdir/unspoof.service"
  if [ "$unitdir" = /etc/systemd/system ] && command -v systemctl >/dev/null 2>&1 &&
    [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
fi

cat <<EOF

Next:
  1. set protected_domains (and [gateway] downstream) in $config
  2. $unspoof policy check $config
  3. systemctl enable --now unspoof
  4. sudo unspoof log search --config $config     (the records; UNSPOOF_CONFIG works too)
EOF

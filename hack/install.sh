#!/usr/bin/env bash
# Sets up berth on this machine and starts berthd: installs the system packages, builds release
# binaries, installs them to /usr/local/bin, writes the default config to /etc/berth/config.toml
# (if there is none) and starts berthd on unix:///run/berth/berth.sock. Run as root; idempotent.
# With BERTH_PREBUILT=<dir> it installs the berthd and berth-shim binaries found there instead of
# building them, and no packages (the VM lane's guest, hack/vm/, has no compiler and no network).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: must run as root" >&2
  exit 1
fi
if [ -n "${BERTH_PREBUILT:-}" ]; then
  install -m 0755 "$BERTH_PREBUILT/berthd" "$BERTH_PREBUILT/berth-shim" /usr/local/bin/
else
  if ! command -v cargo >/dev/null; then
    echo "install.sh: cargo (Rust >= 1.85) is required and was not found on PATH" >&2
    exit 1
  fi
  bash hack/install-deps.sh
  cargo build --release --locked -p berth-runtime --bins
  # The shim alone, so it links none of the daemon's extra features (one shim runs per pod).
  cargo build --profile shim --locked -p berth-shim --bins
  install -m 0755 target/release/berthd target/shim/berth-shim /usr/local/bin/
fi

install -d -m 0755 /etc/berth /etc/berth/certs.d /etc/berth/config.d
if [ ! -e /etc/berth/config.toml ]; then
  /usr/local/bin/berthd config > /etc/berth/config.toml
  echo "install.sh: wrote default /etc/berth/config.toml"
fi

if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  cat > /etc/systemd/system/berthd.service <<'UNIT'
[Unit]
Description=berth CRI container runtime
After=network-online.target local-fs.target

[Service]
ExecStart=/usr/local/bin/berthd
Type=simple
Restart=always
RestartSec=2
KillMode=process
Delegate=yes
LimitNOFILE=1048576
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable berthd >/dev/null
  systemctl restart berthd
else
  # No systemd: run berthd in the background, remembering its PID so a re-run restarts it.
  install -d -m 0700 /run/berth
  pidfile=/run/berth/berthd.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
     && [ "$(readlink "/proc/$(cat "$pidfile")/exe" 2>/dev/null)" = /usr/local/bin/berthd ]; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  nohup setsid /usr/local/bin/berthd >>/var/log/berthd.log 2>&1 < /dev/null &
  echo $! > "$pidfile"
fi

for _ in $(seq 100); do
  [ -S /run/berth/berth.sock ] && break
  sleep 0.1
done
if [ ! -S /run/berth/berth.sock ]; then
  echo "install.sh: berthd did not open /run/berth/berth.sock; see /var/log/berthd.log or journalctl -u berthd" >&2
  exit 1
fi
echo "berthd is running: unix:///run/berth/berth.sock (logs: /var/log/berthd.log or journalctl -u berthd)"

#!/usr/bin/env bash
# Set up everything nodeport-lab needs on a Debian or Ubuntu machine, and nothing more. Safe to run again:
# it installs only missing packages, starts Open vSwitch only if it is not running, and reinstalls the
# Python environment only when setup.py changed.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh installs packages and starts Open vSwitch, so it must run as root: sudo ./setup.sh" >&2
  exit 1
fi

# Mininet and Open vSwitch from the distribution; real programs the lab runs inside its hosts (iperf3; nginx,
# with its realip and ssl modules, in ingress and Gateway pods; haproxy as the PROXY-protocol load balancer).
PACKAGES="mininet openvswitch-switch iperf3 nginx haproxy ethtool curl iproute2 iputils-ping procps kmod iptables python3 python3-venv python3-pip"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
  # The lab runs nginx and haproxy inside its own hosts only: the system services that installing them
  # starts (on systemd machines) would hold ports 80/443 on the machine itself, so stop the ones we installed.
  if [ -d /run/systemd/system ]; then
    for service in nginx haproxy; do
      case " $missing " in *" $service "*) systemctl disable --now "$service" >/dev/null 2>&1 || true ;; esac
    done
  fi
fi

# Open vSwitch: its daemons must run. Without the kernel module the lab uses the userspace datapath,
# which needs nothing more than ovsdb-server and ovs-vswitchd.
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  echo "setup: starting Open vSwitch" >&2
  if [ -d /run/systemd/system ]; then
    systemctl start openvswitch-switch
  else
    # In containers ovs-ctl's "ulimit" and "modprobe" complaints are harmless.
    /usr/share/openvswitch/scripts/ovs-ctl --system-id=random start >/dev/null 2>&1 || true
  fi
  ovs-vsctl --timeout=10 show >/dev/null || { echo "setup: Open vSwitch did not start" >&2; exit 1; }
fi

# Python: a venv from the system python3, with its site-packages, so that it sees the distribution's Mininet.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import mininet.net" 2>/dev/null; then
  echo "setup: creating .venv" >&2
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=".venv/.nodeport-lab-installed"
want="$(sha256sum setup.py | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv" >&2
  log="$(mktemp)"
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "setup: pip install failed" >&2; exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi

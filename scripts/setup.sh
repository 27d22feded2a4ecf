#!/usr/bin/env bash
# Installs what Synapse needs on a Debian/Ubuntu machine: system packages (when root),
# then a virtualenv with the Python packages. Safe to rerun: it only adds what is missing.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

# One package per need; --no-install-recommends keeps qemu from pulling ~180 extras.
SYSTEM_PACKAGES=(
  # llama.cpp and kernel builds
  build-essential cmake ninja-build ccache git pkg-config bc bison flex libelf-dev libssl-dev dwarves cpio kmod
  # crash diagnosis of a built binary that dies (backtrace, faulting instruction)
  gdb
  # kernel sources (6.12 has EEVDF) and a static busybox for the tiny-kernel boot test
  linux-source-6.12 linux-config-6.12 busybox-static xz-utils
  # the older 6.1 tree (CFS, no EEVDF) for the phase 03 comparison test
  linux-source-6.1 linux-config-6.1
  # disks and the base system
  parted fdisk dosfstools xfsprogs e2fsprogs debootstrap arch-install-scripts systemd-boot systemd-boot-efi mtools zstd util-linux
  # boots under QEMU with UEFI firmware
  qemu-system-x86 ovmf
  # facts
  dmidecode pciutils procps
  # systemd-analyze verify/security for generated units
  systemd
  # the fleet (aios fleet): an sshd per test host, the load balancer in front of the replicas,
  # the firewall around llama.cpp's rpc-server
  openssh-server openssh-client haproxy nftables iproute2
  python3-venv
  # the browser test of a JupyterLab session (tests/test_lab_browser.py): selenium drives these
  chromium chromium-driver
  # tests/test_index.py parses the index page's sorting script
  nodejs
)

missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: run as root: apt-get install --no-install-recommends ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
"$VENV/bin/python" -m ipykernel install --sys-prefix --name synapse --display-name "Synapse (.venv)" >/dev/null
# This venv's JupyterLab (aios lab) never asks to fetch news from the internet: machines are often offline
SETTINGS="$VENV/share/jupyter/lab/settings"
if [ ! -e "$SETTINGS/overrides.json" ]; then
  mkdir -p "$SETTINGS"
  echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
    > "$SETTINGS/overrides.json"
fi
echo "setup: ready ($VENV)"

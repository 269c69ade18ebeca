#!/bin/bash
# Usage: build.sh SUITE DIR   (SUITE = trixie | sid; DIR = target, must not exist or be empty)
# Builds a minimal Debian chroot with Slurm + munge + lua (for job_submit.lua) + python3.
set -euo pipefail
SUITE=${1:?suite}; DIR=${2:?dir}
# The Debian mirror the machine's own apt sources name (deb822 or one-line format).
MIRROR=${MIRROR:-$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
                   | grep -v security | head -1 | awk '{print $2}')}
[ -n "$MIRROR" ] || { echo "no Debian mirror in the apt sources; set MIRROR" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq mmdebstrap; }
[ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && { echo "$DIR exists and is not empty" >&2; exit 1; }
EXTRA=()
# sid's Release file on the mirror can be past its Valid-Until date
[ "$SUITE" = sid ] || [ "$SUITE" = unstable ] && EXTRA+=(--aptopt='Acquire::Check-Valid-Until "false"')
start=$(date +%s.%N)
mmdebstrap --variant=minbase "${EXTRA[@]}" \
  --include=slurm-wlm,slurm-client,munge,python3-venv,procps,iproute2,lua5.4 \
  "$SUITE" "$DIR" "$MIRROR"
end=$(date +%s.%N)
printf 'build %s -> %s: %.1f s\n' "$SUITE" "$DIR" "$(echo "$end - $start" | bc)"
chroot "$DIR" dpkg-query -W slurm-wlm slurmctld slurmd munge 2>/dev/null || true

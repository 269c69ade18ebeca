#!/usr/bin/env bash
# The two set-up commands of the README, on a fresh Debian machine as root:
#   bash run.sh demo   - the main job: a simulated MIG node serving jobs
#   bash run.sh test   - the whole test suite
# Both install what they need: Debian packages (slurm-wlm, munge; slurmdbd and
# mariadb-server, which the accounting tests start on their own ports; mmdebstrap,
# which builds the chroots holding newer Slurms for the tests) and the Python
# package with its test extras into .venv (editable, for development); Slurm
# runs the built wheel, installed into a venv of its own.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SLURM_MIG_VENV:-$PWD/.venv}

install_debian_packages() {
    local missing=()
    for pkg in slurm-wlm slurmdbd mariadb-server munge python3-venv lua5.1 mmdebstrap; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

install_python_package() {
    # The development venv (editable, with the test extras) runs pytest and the
    # unit tests. Slurm never runs it: the demo and every end-to-end test build
    # this checkout's wheel and install it as an admin would (tests/harness/install.py).
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
}

case "${1:-}" in
    demo) install_debian_packages; install_python_package; exec "$VENV/bin/python" demo/demo.py ;;
    test) install_debian_packages; install_python_package; shift; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) echo "usage: bash run.sh demo|test [pytest args]" >&2; exit 2 ;;
esac

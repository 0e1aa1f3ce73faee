#!/usr/bin/env bash
# Sets up a fresh Debian machine for keyfab: the system packages the tests and the
# demo use (installed only when running as root and only those missing), then a
# virtual environment with the exact versions from requirements.lock and keyfab
# installed editable with all its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

missing=()
while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < scripts/system-packages.txt

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: not root, so not installing: ${missing[*]} (tests that need them skip)" >&2
    fi
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
# keyfab itself with every extra (pkcs11, tpm2, server, postgres): the lock already
# holds their packages, so --no-index makes this offline and fails if the lock lacks one.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-build-isolation \
    -e '.[all]'

#!/usr/bin/env bash
# Helm chart check: renders, lints and schema-validates helm/account-sync with Helm's own engine
# and validates every rendered manifest against the Kubernetes schemas (helm/tests, pytest).
#
# Needs only python3 with venv and access to PyPI: the tools go into a venv under target/
# (pinned in .ci/requirements-chart.txt, reused while that file is unchanged). No helm binary,
# no cluster, no network at test time.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/chart-venv
requirements=.ci/requirements-chart.txt
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Wheels only: helm-python-sdk's source distribution would need Go and a C compiler.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: -r "$requirements"
  echo "$want" >"$stamp"
fi

"$venv/bin/python" -c 'import helm_python as h; print(f"Helm SDK {h.helm_sdk_version()} (libhelm_c {h.helm_c_version()})")'

# No bytecode or pytest cache left in the work tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider helm/tests

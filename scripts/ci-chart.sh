#!/usr/bin/env bash
# CI step for the Helm chart: installs Helm's engine (helm-python-sdk, Helm's Go SDK as a shared library, no
# helm binary) and offline Kubernetes schemas (kubernetes-validate), then lints, renders and validates
# charts/lockstep. Prints `chart: N passed, M failed`; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  'helm-python-sdk>=0.2.2,<0.3' 'kubernetes-validate>=1.33'
exec "$PYTHON" scripts/check-chart.py

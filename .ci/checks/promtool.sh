#!/usr/bin/env bash
# Alert rules: `promtool check rules` (syntax, PromQL, templates) and `promtool test rules` (unit
# tests: each alert fires, and stays quiet, when it should). promtool comes from the Debian package
# `prometheus`, which .ci/run installs. The live /metrics exposition and the metric names the
# dashboard and the alerts query are checked by tests/metrics.rs (cargo test).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: install the Debian package 'prometheus'" >&2
  exit 1
fi
promtool --version | head -n1

promtool check rules helm/account-sync/files/alerts.yaml
promtool test rules monitoring/alerts_test.yaml

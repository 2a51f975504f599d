#!/usr/bin/env bash
# Checks the Prometheus configuration and rules and runs the rule unit tests
# (promtool: Debian's `prometheus` package).
set -euo pipefail
cd "$(dirname "$0")"
promtool check config prometheus.yml
promtool check rules rules/nexus.rules.yml
promtool test rules tests/*.yml

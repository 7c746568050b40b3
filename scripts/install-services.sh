#!/usr/bin/env bash
# Installs, from Debian's packages, what the integration tests start: Java 17+ and Maven
# (the local Kafka broker), and Debian's prometheus: promtool for the config, rules and
# dashboard checks, the server for the dashboard queries against a real run.
# Uses sudo when not root. Does nothing when all are present.
set -euo pipefail

need=()
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then need+=(openjdk-17-jre-headless); fi
command -v mvn >/dev/null || need+=(maven)
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]} from Debian's packages" >&2
$sudo apt-get update -qq
# --no-install-recommends: prometheus recommends node-exporter, which the tests do not use
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"

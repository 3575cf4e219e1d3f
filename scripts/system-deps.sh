#!/usr/bin/env bash
# Install the system packages the test suite needs, only where they are missing.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Spark tests: a JDK (java runs Spark; javac builds icebergdo's small S3 FileIO once) and the JDBC drivers.
{ command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1; } || need+=(default-jdk-headless)
[ -e /usr/share/java/sqlite-jdbc.jar ] || need+=(libxerial-sqlite-jdbc-java)
[ -e /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
# HTML health report test: a real headless browser (driven by Playwright with executable_path, never `playwright install`).
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
[ -n "${need[*]}" ] || exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "system-deps: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"

#!/usr/bin/env bash
# Makes the Python virtual environment that runs tests/mcp/fixture_server.py
# (the MCP server the MCP tests talk to): target/mcp-venv, with
# tests/mcp/requirements.txt installed. Run from anywhere; the tests then use
# target/mcp-venv/bin/python.
#
# Cheap and silent when the environment is already there with these
# requirements (a marker holds a copy of the requirements it was built from),
# so every test may call it. Tests running at once may call it together: a
# lock makes one of them build while the others wait.
#
# Needs python3 (3.10 or later) with venv; on Debian as root, python3-venv is
# installed when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/mcp-venv
requirements=tests/mcp/requirements.txt
marker=$venv/.installed-requirements

ready() {
  [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$marker"
}

ready && exit 0

mkdir -p target
exec 9>target/mcp-venv.lock
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
# Another caller may have built it while this one waited for the lock.
ready && exit 0

# Setup chatter goes to stderr: a caller may read this script's stdout.
exec 1>&2
echo "mcp setup: building $venv"

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "mcp setup: the MCP SDK needs python3 3.10 or later" >&2
  exit 1
fi
rm -f "$marker"
if ! python3 -m venv "$venv" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends python3-venv
    python3 -m venv "$venv"
  else
    echo "mcp setup: python3 cannot make a virtual environment; install python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
# Written last and whole, so that a failed or interrupted install is redone.
cp "$requirements" "$marker.tmp"
mv "$marker.tmp" "$marker"

#!/usr/bin/env bash
# Runs the Node-side tests of `blip2 serve` (tests/web/*.test.mjs): installs
# the pinned npm packages from package-lock.json into tests/web/node_modules,
# indexes 8 rendered shapes images (for /v1/search), starts the server on a
# free loopback port with the bundled shapes models, that index and an API key,
# runs the tests, and stops the server.
#
#   tests/web/run.sh BLIP2_BINARY SOURCE_DIR ARTIFACT_DIR
#
# Exit 77 (ctest's SKIP_RETURN_CODE) only when node, npm or chromium is not
# installed at all; scripts/setup installs them, so in CI these tests run.
set -euo pipefail

BLIP2="${1:?usage: run.sh BLIP2_BINARY SOURCE_DIR ARTIFACT_DIR}"
SRC="$(cd "${2:?usage: run.sh BLIP2_BINARY SOURCE_DIR ARTIFACT_DIR}" && pwd)"
ARTIFACTS="${3:?usage: run.sh BLIP2_BINARY SOURCE_DIR ARTIFACT_DIR}"
HERE="$SRC/tests/web"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

skip() { echo "web tests SKIPPED: $*"; exit 77; }
die() { echo "web tests: $*" >&2; exit 1; }

command -v node >/dev/null || skip "node is not installed (scripts/setup installs it)"
command -v npm >/dev/null || skip "npm is not installed (scripts/setup installs it)"
[ -x "$CHROMIUM" ] || skip "$CHROMIUM is not installed (scripts/setup installs Debian's chromium)"
[ -x "$BLIP2" ] || die "$BLIP2 is not an executable; build the blip2_cli target first"

# npm ci from the committed lock file; skipped when node_modules was installed
# from this exact lock file already (the stamp holds its checksum).
stamp="$HERE/node_modules/.blip2-lock-sha256"
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "web tests: npm ci in $HERE"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) \
    || die "npm ci failed in $HERE (the npm registry must be reachable the first time)"
  echo "$want" >"$stamp"
fi

mkdir -p "$ARTIFACTS"
ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/blip2-web.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  cp "$work/server.log" "$ARTIFACTS/web-server.log" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A small collection for the search box: 8 rendered val-split scenes.
"$BLIP2" shapes generate --out "$work/collection" --split val --count 8 >/dev/null \
  || die "blip2 shapes generate failed"
"$BLIP2" index build -m "$SRC/models/shapes/retrieval" --images "$work/collection" --out "$work/index" >/dev/null \
  || die "blip2 index build failed"

export BLIP2_API_KEY="web-test-$RANDOM$RANDOM"
"$BLIP2" serve --host 127.0.0.1 --port 0 \
  -m "$SRC/models/shapes/opt" --retrieval-model "$SRC/models/shapes/retrieval" \
  --index "$work/index" --web-root "$SRC/apps/server/web" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

# The server prints `listening on http://HOST:PORT` once the models are loaded.
url=""
for _ in $(seq 600); do
  url="$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$work/server.out" | head -n1)"
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.out" "$work/server.log" >&2; die "blip2 serve exited before listening"; }
  sleep 0.2
done
[ -n "$url" ] || { cat "$work/server.log" >&2; die "blip2 serve did not print 'listening on' within 120 s"; }
echo "web tests: server at $url"

export BLIP2_URL="$url" BLIP2_SOURCE_DIR="$SRC" BLIP2_ARTIFACTS="$ARTIFACTS" CHROMIUM
cd "$HERE"
status=0
# One file at a time (node 18's --test has no --test-concurrency): the openai client, then the page.
for t in openai_client.test.mjs page.test.mjs; do
  node --test "$t" || status=1
done
if [ "$status" -ne 0 ]; then
  echo "--- server stderr (last 40 lines) ---" >&2
  tail -n 40 "$work/server.log" >&2 || true
fi
exit "$status"

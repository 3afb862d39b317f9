#!/usr/bin/env bash
# Installs the build tree to a temporary prefix, builds examples/ against it
# with find_package(blip2), and runs the installed CLI and the example on the
# installed bundled model: both must print the build tree CLI's caption.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/lib/cmake/blip2/blip2Config.cmake"
cmake -S "$src/examples" -B "$tmp/examples" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/examples" -j2 >/dev/null
image="$src/examples/shapes-1.png"
want=$("$build/bin/blip2" caption -m "$src/models/shapes/opt" "$image" 2>/dev/null)
# The installed CLI finds its bundled model under share/blip2 with no --model,
# and the installed SentencePiece shim for the T5 tokenizer.
got_cli=$(cd "$tmp" && env -u BLIP2_MODEL "$tmp/prefix/bin/blip2" caption "$image" 2>/dev/null)
got_example=$("$tmp/examples/caption_example" "$tmp/prefix/share/blip2/models/shapes/opt" "$image" | head -1)
want_t5=$("$build/bin/blip2" caption -m "$src/models/shapes/t5" "$image" 2>/dev/null)
got_t5=$("$tmp/prefix/bin/blip2" caption -m "$tmp/prefix/share/blip2/models/shapes/t5" "$image" 2>/dev/null)
status=0
for pair in "cli:$got_cli" "example:$got_example" "t5:$got_t5"; do
  name=${pair%%:*} got=${pair#*:}
  expect=$want
  [ "$name" = t5 ] && expect=$want_t5
  if [ "$got" != "$expect" ] || [ -z "$got" ]; then
    echo "install_test: $name printed '$got', the build tree printed '$expect'" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "install_test: installed CLI, find_package example and T5 shim agree: '$want' / '$want_t5'"
exit $status

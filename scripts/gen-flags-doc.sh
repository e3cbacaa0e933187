#!/usr/bin/env bash
# Writes docs/flags.md, the flag reference, from the binary's own --help: one section per
# subcommand. tests/flags_doc.rs fails when the file no longer matches the binary.
#
#   scripts/gen-flags-doc.sh            # builds the debug binary, then writes docs/flags.md
#   scripts/gen-flags-doc.sh BINARY     # uses BINARY instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-}
if [ -z "$BIN" ]; then
  cargo build --quiet
  BIN=target/debug/convrnn-serve
fi
# No CONVRNN_* from this shell: clap prints an environment variable's value in the help. Trailing
# blanks (clap indents its empty lines) are dropped; tests/flags_doc.rs compares the same way.
help() { env -i PATH="$PATH" "$BIN" "$@" --help | sed 's/[[:space:]]*$//'; }
# Subcommands as the top-level help lists them ("Commands:" up to the blank line), but `help`.
SUBCOMMANDS=$(help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && $1 != "help" { print $1 }')
OUT=docs/flags.md
{
  echo "# Command-line reference"
  echo
  echo "Generated from \`convrnn-serve --help\` by \`scripts/gen-flags-doc.sh\`; \`tests/flags_doc.rs\` fails"
  echo "when it no longer matches the binary. Every flag of \`serve\` can also be set through the"
  echo "environment variable shown beside it (\`[env: CONVRNN_...]\`), as Docker and the Kubernetes"
  echo "manifests do. Why the defaults are what they are: [performance.md](performance.md)."
  echo
  echo "## \`convrnn-serve\`"
  echo
  echo '```text'
  help
  echo '```'
  for sub in $SUBCOMMANDS; do
    echo
    echo "## \`convrnn-serve $sub\`"
    echo
    echo '```text'
    help "$sub"
    echo '```'
  done
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($(echo $SUBCOMMANDS | wc -w) subcommands)"

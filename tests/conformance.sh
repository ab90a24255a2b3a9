#!/usr/bin/env bash
# The Lua 5.4 test suite (its `testes/` directory, which is not part of this repository), file by
# file, under `llmspell run` and under the stock interpreter, in portable mode (_U = true, as the
# suite's README says for a stock build: no internal-test library `T`, no C libraries built).
#
#   tests/conformance.sh DIR [LLMSPELL] [LUA]
#     DIR       the suite's testes/ directory (e.g. `git archive v5.4.8 testes` from github.com/lua/lua)
#     LLMSPELL  the binary (default target/debug/llmspell); LUA the reference (default lua5.4)
# Prints one line per file: name, the reference's result, llmspell's; exits 1 if a file passes under
# the reference and fails under llmspell. all.lua (the driver) and heavy.lua (hours) are skipped.
set -uo pipefail
dir=${1:?usage: tests/conformance.sh DIR [LLMSPELL] [LUA]}
bin=$(realpath "${2:-target/debug/llmspell}")
lua=${3:-lua5.4}
limit=${CONFORMANCE_TIMEOUT:-600}
home=$(mktemp -d /tmp/llmspell-conformance.XXXXXX)
trap 'LLMSPELL_HOME=$home "$bin" kernel stop --all >/dev/null 2>&1; rm -rf "$home"' EXIT
export LLMSPELL_HOME=$home LUA_INIT='_U = true; _soft = true; _port = true; _nomsg = true'
cd "$dir" || exit 2
logs=$home/logs; mkdir -p "$logs"
worse=0
printf '%-16s %-8s %-8s\n' file "$lua" llmspell
for f in *.lua; do
    case $f in all.lua|heavy.lua) continue ;; esac
    timeout "$limit" "$lua" "$f" >"$logs/$f.lua.out" 2>&1 </dev/null && a=pass || a="FAIL($?)"
    timeout "$limit" "$bin" run "$f" >"$logs/$f.ll.out" 2>&1 </dev/null && b=pass || b="FAIL($?)"
    printf '%-16s %-8s %-8s\n' "$f" "$a" "$b"
    if [ "$a" = pass ] && [ "$b" != pass ]; then
        worse=1
        tail -5 "$logs/$f.ll.out" | sed 's/^/    /'
    fi
done
exit $worse

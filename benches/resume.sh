#!/usr/bin/env bash
# Resuming a cut transfer: a new 1 GiB file of noise whose first push was cut at about
# half, then the run that completes it. fsync-repl (its partial file kept in
# DEST/.fsync-repl/partial) against `rsync -a --partial` (its partial file left at the
# final name, the basis of its next delta), both through the same local stand-in for
# ssh (no encryption: the CPU side of the resume, not the link).
#
#   benches/resume.sh            RUNS=5 by default; SCRATCH=/dev/shm; SIZE_MIB=1024
#
# The cut state is made once, by killing a real push once its partial file holds half
# the file; rsync gets the same prefix. hyperfine's --prepare restores both states before
# every run, so only the resuming run is timed. Then one untimed run each counts the bytes
# sent (fsync-repl --json wire_bytes_sent, rsync --stats "Total bytes sent"), and every
# result is compared with the source byte for byte.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FSYNC_REPL:-$REPO/target/release/fsync-repl}
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
for t in hyperfine rsync python3; do
    command -v "$t" >/dev/null || { echo "resume.sh: $t not found" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "resume.sh: build $BIN first (cargo build --release)" >&2; exit 2; }
W=$(mktemp -d "${SCRATCH:-/dev/shm}/resume-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT

# A local stand-in for ssh: drops the options and the host, runs the command via sh -c.
cat >"$W/rsh" <<'EOF'
#!/bin/sh
case " $* " in
*" -- "*) while [ "$1" != "--" ]; do shift; done; shift ;;
*) shift ;;
esac
exec sh -c "$*"
EOF
chmod +x "$W/rsh"

mkdir "$W/src"
python3 - "$W/src/big.bin" "$SIZE_MIB" <<'EOF'
import os, sys
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) // 16):
        f.write(os.urandom(16 << 20))
EOF
half=$((SIZE_MIB << 19))

# The cut: a push at 300 MiB/s, killed once its partial file holds half the file.
"$BIN" push -q --rsh "$W/rsh" --remote-bin "$BIN" --bwlimit 300M \
    "$W/src" "testhost:$W/fr-cut" 2>/dev/null &
pid=$!
kept=0
while [ "$kept" -lt "$half" ]; do
    kept=$(stat -c %s "$W"/fr-cut/.fsync-repl/partial/*.0 2>/dev/null || echo 0)
    kill -0 "$pid" 2>/dev/null || { echo "resume.sh: the push ended before the cut" >&2; exit 1; }
    sleep 0.01
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
sleep 1
kept=$(stat -c %s "$W"/fr-cut/.fsync-repl/partial/*.0)
echo "cut after $kept of $((SIZE_MIB << 20)) bytes"

fr_prep="rm -rf $W/fr && cp -a $W/fr-cut $W/fr"
rs_prep="rm -rf $W/rs && mkdir $W/rs && head -c $kept $W/src/big.bin >$W/rs/big.bin"
fr="$BIN push -q --rsh $W/rsh --remote-bin $BIN $W/src testhost:$W/fr"
rs="rsync -a --partial -e $W/rsh $W/src/ testhost:$W/rs/"
hyperfine --runs "$RUNS" --export-json "$W/times.json" \
    --prepare "$fr_prep" -n fsync-repl "$fr" \
    --prepare "$rs_prep" -n "rsync --partial" "$rs"

eval "$fr_prep"
fr_bytes=$("$BIN" push --json --rsh "$W/rsh" --remote-bin "$BIN" "$W/src" "testhost:$W/fr" |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["wire_bytes_sent"])')
eval "$rs_prep"
rs_bytes=$(rsync -a --partial --stats -e "$W/rsh" "$W/src/" "testhost:$W/rs/" |
    sed -n 's/^Total bytes sent: //p' | tr -d ,)
cmp "$W/src/big.bin" "$W/fr/big.bin"
cmp "$W/src/big.bin" "$W/rs/big.bin"
[ ! -e "$W/fr/.fsync-repl/partial" ] || { echo "resume.sh: a partial file was left" >&2; exit 1; }
python3 - "$W/times.json" "$fr_bytes" "$rs_bytes" "$((SIZE_MIB << 20))" <<'EOF'
import json, statistics, sys
r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(sys.argv[1]))["results"]}
fr, rs = r["fsync-repl"], r["rsync --partial"]
frb, rsb, size = (int(v) for v in sys.argv[2:5])
print(f"time  (median): fsync-repl {fr*1000:,.0f} ms, rsync {rs*1000:,.0f} ms, ratio {fr/rs:.3f}")
print(f"bytes sent:     fsync-repl {frb:,} ({frb/size:.1%} of the file), rsync {rsb:,}, ratio {frb/rsb:.3f}")
EOF

#!/usr/bin/env bash
# Snapshot and prune benchmark on the project's corpus (examples/corpus.rs), on tmpfs so
# CPU-side work is timed.
#
#   benches/snapshot.sh
#
# 1. `fsync-repl snapshot DEST` against `cp -al DEST/current X` in ONE hyperfine run
#    (target: snapshot <= 1.0x cp -al). --prepare removes the previous copies, so each
#    run copies the full corpus. The snapshot is checked against current with corpus compare.
# 2. `fsync-repl prune --keep-last 1` (removing one snapshot of the corpus) against
#    `rm -rf` of a `cp -al` copy, unthrottled and with --iops-limit 20000.
#
# Environment (all optional)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   SCRATCH      parent of the scratch directory (use tmpfs)  [/dev/shm]
#   RUNS         hyperfine runs per command                    [10]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-/dev/shm}
RUNS=${RUNS:-10}
BIN=$REPO/target/release/fsync-repl
(cd "$REPO" && cargo build --release -q)
. "$REPO/benches/corpus.sh"
W=$(mktemp -d "$SCRATCH/fsync-repl-snapbench.XXXXXX")
trap 'rm -rf "$W"' EXIT
"$CORPUS" make "$W/src" >/dev/null
"$BIN" push -q "$W/src" "$W/dst/current"
echo "corpus: $(find "$W/dst/current" | wc -l) entries"

echo "== snapshot vs cp -al"
hyperfine -N -w 2 -r "$RUNS" --export-json "$W/snap.json" \
  --prepare "rm -rf $W/dst/snapshots $W/dst/.fsync-repl $W/cpal" \
  "cp -al $W/dst/current $W/cpal" \
  "$BIN snapshot -q $W/dst"
"$CORPUS" compare "$W/dst/current" "$W/dst/snapshots/"*
python3 - "$W/snap.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"]
cp, snap = r[0], r[1]
print(f"snapshot / cp -al: mean {snap['mean']/cp['mean']:.2f}x, median {snap['median']/cp['median']:.2f}x, "
      f"fastest {min(snap['times'])/min(cp['times']):.2f}x (target <= 1.00)")
PY

echo "== prune vs rm -rf"
reset="rm -rf $W/dst/snapshots $W/dst/.fsync-repl $W/cpal && $BIN snapshot -q $W/dst && $BIN snapshot -q $W/dst && cp -al $W/dst/current $W/cpal"
hyperfine -N -w 1 -r "$RUNS" --prepare "sh -c '$reset'" \
  "rm -rf $W/cpal" \
  "$BIN prune -q --keep-last 1 $W/dst" \
  "$BIN prune -q --keep-last 1 --iops-limit 20000 $W/dst"

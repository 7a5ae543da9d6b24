#!/usr/bin/env bash
# Restore and verify benchmark on the project's corpus (examples/corpus.rs), on tmpfs so
# the CPU side is timed.
#
#   benches/verify.sh
#
# 1. `fsync-repl verify DEST` (one snapshot of the corpus, read against its catalogue)
#    against `b3sum` of the same files (`find -type f | xargs b3sum`), in ONE hyperfine
#    run; both unthrottled. b3sum: `cargo install b3sum` (the BLAKE3 team's CLI).
# 2. What the catalogue adds to a snapshot: `snapshot` of an unchanged `current` (every
#    inode already in the previous catalogue: nothing is read) against `cp -al` of it,
#    and the first snapshot (everything read) for scale. `hashed_bytes` of the manifest
#    shows what was read.
# 3. `restore` of one home directory against `cp -a` of it out of the snapshot.
#
# Environment (all optional)
#   CORPUS       the corpus tool [built from examples/corpus.rs]
#   SCRATCH      parent of the scratch directory (use tmpfs)  [/dev/shm]
#   RUNS         hyperfine runs per command                    [10]
#   B3SUM        the b3sum binary                              [b3sum on PATH]
#   BASE         an fsync-repl without catalogues (an older build), timed beside
#                the snapshot of an unchanged tree: what the catalogue adds   [none]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-/dev/shm}
RUNS=${RUNS:-10}
B3SUM=${B3SUM:-$(command -v b3sum || echo "$HOME/.cargo/bin/b3sum")}
[[ -x $B3SUM ]] || { echo "b3sum not found: cargo install b3sum, or set B3SUM" >&2; exit 1; }
BIN=$REPO/target/release/fsync-repl
(cd "$REPO" && cargo build --release -q)
. "$REPO/benches/corpus.sh"
W=$(mktemp -d "$SCRATCH/fsync-repl-verifybench.XXXXXX")
trap 'rm -rf "$W"' EXIT
"$CORPUS" make "$W/src" >/dev/null
"$BIN" push -q "$W/src" "$W/dst/current"
"$BIN" snapshot --json "$W/dst" >"$W/first.json"
SNAP=$(ls "$W/dst/snapshots")
echo "corpus: $(find "$W/dst/current" -type f | wc -l) files, $(du -sh --apparent-size "$W/dst/current" | cut -f1)"
echo "first snapshot read: $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["hashed_files"], "files,", m["hashed_bytes"], "bytes")' "$W/first.json")"

echo "== verify vs b3sum"
hyperfine -N -w 2 -r "$RUNS" --export-json "$W/verify.json" \
  "sh -c 'cd $W/dst/snapshots/$SNAP && find . -type f -print0 | xargs -0 $B3SUM >/dev/null'" \
  "$BIN verify -q --ionice none --nice 0 $W/dst"
"$BIN" verify --json "$W/dst" | python3 -c 'import json,sys; o=json.load(sys.stdin); print("verify:", o["files"], "files,", o["inodes_read"], "inodes read, differ:", len(o["differ"]))'

echo "== snapshot of an unchanged tree (catalogue reused) vs cp -al"
# Back to the first snapshot alone before each run, so each run's previous catalogue
# is the first snapshot's.
cat >"$W/reset.sh" <<SH
rm -rf "$W/cpal"
find "$W/dst/snapshots" -mindepth 1 -maxdepth 1 ! -name "$SNAP" -exec rm -rf {} +
find "$W/dst/.fsync-repl/snapshots" -type f ! -name "$SNAP.*" -delete
SH
BASECMD=()
[[ -n ${BASE:-} ]] && BASECMD=("$BASE snapshot -q $W/dst")
hyperfine -N -w 2 -r "$RUNS" --export-json "$W/snap.json" --prepare "sh $W/reset.sh" \
  "cp -al $W/dst/current $W/cpal" \
  "$BIN snapshot -q $W/dst" "${BASECMD[@]}"
sh "$W/reset.sh"
"$BIN" snapshot --json "$W/dst" | python3 -c 'import json,sys; m=json.load(sys.stdin); print("unchanged snapshot read:", m["hashed_files"], "files,", m["hashed_bytes"], "bytes")'

echo "== restore of one home vs cp -a"
HOME1=$(ls "$W/dst/snapshots/$SNAP" | head -1)
hyperfine -N -w 1 -r "$RUNS" --prepare "rm -rf $W/to $W/cpa" \
  "cp -a $W/dst/snapshots/$SNAP/$HOME1 $W/cpa" \
  "$BIN restore -q --ionice none --nice 0 $W/dst $HOME1 --to $W/to"

python3 - "$W/verify.json" "$W/snap.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))["results"]
s = json.load(open(sys.argv[2]))["results"]
print(f"verify / b3sum: median {v[1]['median']/v[0]['median']:.2f}x "
      f"({v[1]['median']*1000:.0f} ms vs {v[0]['median']*1000:.0f} ms)")
print(f"unchanged snapshot / cp -al: median {s[1]['median']/s[0]['median']:.2f}x "
      f"({s[1]['median']*1000:.1f} ms vs {s[0]['median']*1000:.1f} ms)")
if len(s) > 2:
    print(f"unchanged snapshot / same without catalogue: median {s[1]['median']/s[2]['median']:.2f}x "
          f"({s[1]['median']*1000:.1f} ms vs {s[2]['median']*1000:.1f} ms)")
PY

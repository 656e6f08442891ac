#!/usr/bin/env bash
# Runs the real, unmodified F5-TTS trainer on CPU through the shim and checks: a fresh run
# finishes; SIGKILL + restart resumes from model_last.pt; a torn model_last.pt crashes it;
# the NaN switch makes the loss and the saved weights non-finite, in one process only.
#
#   integration/f5tts/prove.sh [VENV]        VENV defaults to .venv-f5 (make integration builds it); ~3 min on 2 cores
#
# Deletes and rebuilds <VENV>/lib/python3.X/{data/integration_tiny_char,ckpts/integration_tiny}.
# Logs go to $LOGS (default: a fresh temp dir), printed at the end.
set -euo pipefail

VENV=$(cd "${1:-$(dirname "$0")/../../.venv-f5}" && pwd)
PY=$VENV/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
LOGS=${LOGS:-$(mktemp -d -t f5prove.XXXXXX)}
export PYTHONPATH=$HERE/shim PYTHONUNBUFFERED=1  # unbuffered: stdout lines arrive as printed
unset F5_SHIM_NAN_AT_UPDATE F5_SHIM_NAN_ONCE_FILE

# Not integration/: a folder named f5_tts in the cwd would join the f5_tts namespace package and
# move the trainer's data and checkpoint folders. The logs dir is safe.
cd "$LOGS"
ROOT=$("$PY" -c 'import f5_tts.train, pathlib; print(pathlib.Path(f5_tts.train.__path__[0]).parents[2])')
CKPT=$ROOT/ckpts/integration_tiny  # ckpts.save_dir of tiny.yaml, below <f5_tts>/../..
ONCE=$LOGS/nan.once

train() {  # train NAME [&]: stdout -> NAME.out, stderr -> NAME.err
    nice -n 10 "$PY" -m f5_tts.train.train --config-dir "$HERE" --config-name tiny >"$1.out" 2>"$1.err"
}
first_update() { grep -o 'update=[0-9]*' "$1.err" | head -1 | cut -d= -f2; }
kill_after_save() {  # kill_after_save NAME UPDATE: start NAME in the background, SIGKILL it after that save
    nice -n 10 "$PY" -m f5_tts.train.train --config-dir "$HERE" --config-name tiny >"$1.out" 2>"$1.err" &
    local pid=$!
    until grep -q "Saved last checkpoint at update $2\$" "$1.out"; do sleep 0.05; done
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true  # (quiet: no "Killed" notice)
}
nonfinite() {  # nonfinite FILE: count of non-finite elements in the saved model weights
    "$PY" -c 'import sys, torch
c = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
print(c["update"], sum(int((~t.isfinite()).sum()) for t in c["model_state_dict"].values() if t.is_floating_point()))' "$1"
}
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; exit 1; }

SECONDS=0
"$PY" "$HERE/make_data.py" >make_data.log 2>&1 || fail "make_data.py (see $LOGS/make_data.log)"
ok "dataset built (${SECONDS}s)"

rm -rf "$CKPT"; SECONDS=0
train fresh || fail "fresh run exited $?"
grep -qx 'Saved last checkpoint at update 96' fresh.out || fail "fresh run: no final save"
ok "fresh run reached update 96 and exited 0 (${SECONDS}s)"

rm -rf "$CKPT"
kill_after_save killed 30
train resumed || fail "resumed run exited $?"
[[ $(first_update resumed) -gt 30 ]] || fail "resumed run started at update $(first_update resumed)"
ok "SIGKILL after update 30, restart continued at update $(first_update resumed) and finished"

SECONDS=0
"$PY" -c 'import f5_tts.model.trainer' 2>/dev/null  # warm the page cache, then time a clean import
SECONDS=0; "$PY" -c 'import f5_tts.model' && ok "import f5_tts.model: ${SECONDS}s (whole seconds)"

truncate -s 1000000 "$CKPT/model_last.pt"
rc=0; train torn || rc=$?
[[ $rc == 1 && $(tail -1 torn.err) == "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace." ]] \
    || fail "torn checkpoint: rc=$rc, last line: $(tail -1 torn.err)"
ok "torn model_last.pt: exit 1, $(grep '^RuntimeError' torn.err | cut -c1-80)..."

rm -rf "$CKPT" "$ONCE"
export F5_SHIM_NAN_AT_UPDATE=50 F5_SHIM_NAN_ONCE_FILE=$ONCE
kill_after_save nan_killed 30
[[ ! -e $ONCE ]] || fail "NaN fired before update 50"
train nan || fail "NaN run exited $?"
grep -q '\[f5-shim\] injecting NaN loss from update 50' nan.err || fail "no injection at update 50 after resume"
grep -q 'loss=nan, update=50' nan.err || fail "no loss=nan in the progress bar"
read -r update bad < <(nonfinite "$CKPT/model_last.pt")
[[ $bad -gt 0 ]] || fail "weights still finite"
read -r u40 bad40 < <(nonfinite "$CKPT/model_40.pt")
[[ $bad40 == 0 ]] || fail "model_40.pt already non-finite"
ok "NaN from update 50 (after a resume at 30): model_last.pt (update $update) has $bad non-finite weights, model_40.pt none"

rm -rf "$CKPT"
train nan_again || fail "second NaN-armed run exited $?"
! grep -q 'loss=nan' nan_again.err || fail "NaN fired again although $ONCE existed"
ok "with the once-file present a fresh run stays finite"

echo "logs: $LOGS"

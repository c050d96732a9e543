#!/usr/bin/env bash
# The prepared device check: run it on a machine with a GPU, as ONE command
# (about 8 minutes there), then record what it wrote in benchmarks/README.md.
#
#   OUT=/some/folder bash benchmarks/device_check.sh          (default OUT: device-check/)
#   QUICK=1 bash benchmarks/device_check.sh                   (the CPU fallback's small sizes)
#
# Steps (each under its own time limit; a failed or timed-out step is recorded and the next runs):
#   1. environment: torch, CUDA, the GPU;
#   2. the suite's device tests (tests/test_device.py: dataset items, __getitems__, DataLoader,
#      materialize, save_pretrained from the device; one distillation step per objective and
#      parameterisation; experts for one epoch), and the CUDA cases of tests/test_augment.py;
#   3. benchmarks/synthesis.py on the device (batched against per-item synthesis, DataLoader overhead);
#   4. benchmarks/distill_step.py on the device (the paper's IPC 10 settings; QUICK: the cpu case, IPC 1).
# Everything goes to $OUT: environment.txt, tests.txt, synthesis.md, distill_step.md, summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-check}"
QUICK="${QUICK:-0}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the working tree, installed or not
device=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
: > "$OUT/summary.txt"
step() {  # name, limit (s), output file, command...
    local name=$1 limit=$2 file=$3 start=$SECONDS rc
    shift 3
    timeout "$limit" "$@" > "$OUT/$file" 2>&1
    rc=$?
    echo "$name: rc $rc, $((SECONDS - start)) s, output in $file" | tee -a "$OUT/summary.txt"
}
step environment 60 environment.txt python -c "
import platform, torch
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), 'python', platform.python_version())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1), 'GiB')
"
step tests 240 tests.txt python -m pytest -q -p no:cacheprovider -m "not slow" tests/test_device.py tests/test_augment.py -k "cuda or device"
if [[ $QUICK == 1 ]]; then
    step synthesis 120 synthesis.md python benchmarks/synthesis.py --device "$device" --ipc 1 --repeats 1 --seconds 0.2
    step distill_step 120 distill_step.md python benchmarks/distill_step.py --device "$device" --cases cpu --ipc 1 \
        --parameterizations haba --unrolls full --no-dm --variants after --rounds 1 --iterations 1
else
    step synthesis 120 synthesis.md python benchmarks/synthesis.py --device "$device" --ipc 10 --repeats 5
    step distill_step 180 distill_step.md python benchmarks/distill_step.py --device "$device" --cases paper --ipc 1 10 \
        --variants after --rounds 1 --iterations 2
fi
echo "device: $device; outputs in $OUT"

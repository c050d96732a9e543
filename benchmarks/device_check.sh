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
#   4. benchmarks/distill_step.py on the device (the paper's IPC 10 settings; QUICK: the cpu case, IPC 1);
#   5. benchmarks/dm_step.py on the device (dm-dance against DM, eager and compiled);
#   6. a real dataset: fashion_mnist-ipc10's gpu-dance profile distilled end to end (experts on the device),
#      the dataset folder and its summary kept as dance-dataset.tgz (QUICK: 4 iterations, one narrow expert).
# Everything goes to $OUT: environment.txt, tests.txt, synthesis.md, distill_step.md, dm_step.md, dance.txt,
# dance-dataset.tgz, summary.txt.
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
step tests 120 tests.txt python -m pytest -q -p no:cacheprovider -m "not slow" tests/test_device.py tests/test_augment.py -k "cuda or device"
if [[ $QUICK == 1 ]]; then
    step synthesis 120 synthesis.md python benchmarks/synthesis.py --device "$device" --ipc 1 --repeats 1 --seconds 0.2
    step distill_step 90 distill_step.md python benchmarks/distill_step.py --device "$device" --cases cpu --ipc 1 \
        --parameterizations haba --unrolls full --no-dm --variants after --rounds 1 --iterations 1
    step dm_step 90 dm_step.md python benchmarks/dm_step.py --device "$device" --ipc 10 --parameterizations plain \
        --variants eager --rounds 1 --iterations 1
    # the dance step's pipeline on a small scale: one narrow expert, a few iterations, eager networks
    sets=(--set schedule.iterations=4 --set schedule.eval_every=2 --set schedule.eval_epochs=1 --set evaluation.epochs=1
          --set experts.epochs=1 --set experts.count=1 --set experts.net_options.width=16
          --set objective.dm-dance.compile=false)
else
    step synthesis 45 synthesis.md python benchmarks/synthesis.py --device "$device" --ipc 10 --repeats 5
    step distill_step 90 distill_step.md python benchmarks/distill_step.py --device "$device" --cases paper --ipc 1 10 \
        --variants after --rounds 1 --iterations 2
    step dm_step 60 dm_step.md python benchmarks/dm_step.py --device "$device" --variants eager compile --rounds 2 \
        --iterations 3
    sets=()
fi
if [[ -d ${DATA_ROOT:-} ]]; then
    run="$OUT/dance-run"
    step dance 330 dance.txt python -m haba_datasets.cli distill recipes/fashion_mnist-ipc10.yaml --profile gpu-dance \
        --data-root "$DATA_ROOT" --device "$device" -o "$run" "${sets[@]}"
    # the finished dataset, or (stopped at the limit) the best one validated so far
    kept=$( [[ -d $run/dataset ]] && echo dataset || echo best )
    tar czf "$OUT/dance-dataset.tgz" -C "$run" "$kept" $( [[ -f $run/summary.json ]] && echo summary.json ) log.jsonl \
        && rm -rf "$run"
fi
echo "device: $device; outputs in $OUT"

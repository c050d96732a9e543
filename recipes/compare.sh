#!/usr/bin/env bash
# HaBa against plain images at equal storage and equal iterations, on trajectory matching (MTT) and
# on distribution matching (DM, and DM under partly trained networks: dmt): CIFAR-10, storage of 10
# images per class, the recipe's cpu, cpu-dm and cpu-dm-trained profiles; then random real images (ZCA) under the same final protocol. Resumable: finished
# runs are skipped, an interrupted one continues from its checkpoint. Final evaluation: 1 run x 500
# epochs of the protocol (seed 0; a run costs 10-30 min on 2 busy cores).
#   bash recipes/compare.sh [DATA_ROOT] [RUN ...]     (default ../shared/data; RUN: c10-ipc10-<objective>-<kind>,
#                                                        default every run, then random real images and the 3-run std)
# Runs go to runs/ (experts included); the small results (summary, reports, logs, pictures) are
# copied to recipes/results/compare/<run>/. Table: python recipes/compare_table.py
set -euo pipefail
cd "$(dirname "$0")/.."
export HABA_DATA_ROOT="${1:-../shared/data}"
shift || true
experts=runs/experts/cifar10-ipc10-cpu
results=recipes/results/compare
run() {  # run name, profile, parameterisation
    [[ -f runs/$1/summary.json ]] || haba-datasets distill recipes/cifar10-ipc10.yaml --profile "$2" \
        --set parameterization.kind="$3" --set evaluation.runs=1 --experts-dir "$experts" -o "runs/$1" --resume
    python recipes/keep_results.py "runs/$1" "$results/$1"
}
declare -A profiles=([mtt]=cpu [dm]=cpu-dm [dmt]=cpu-dm-trained)  # dmt: DM under partly trained networks
if (( $# )); then
    for name in "$@"; do
        objective=${name#c10-ipc10-} objective=${objective%-*}
        [[ -v "profiles[$objective]" && $name =~ -(haba|plain)$ ]] || { echo "unknown run $name" >&2; exit 2; }
        run "$name" "${profiles[$objective]}" "${BASH_REMATCH[1]}"
    done
    exit 0
fi
for objective in mtt dm dmt; do
    for kind in haba plain; do run "c10-ipc10-$objective-$kind" "${profiles[$objective]}" $kind; done
done
random=runs/c10-ipc10-random-zca
[[ -f $random/report.json ]] || haba-datasets evaluate cifar10 --ipc 10 --preprocessing zca --runs 1 --epochs 500 -o $random
python recipes/keep_results.py $random "$results/c10-ipc10-random-zca"
# The std: every selected dataset again with 3 runs (seeds 0-2) x 500 epochs.
for r in mtt-haba mtt-plain dm-haba dm-plain dmt-haba dmt-plain; do
    [[ -f runs/seeds/$r/report.json ]] || haba-datasets evaluate runs/c10-ipc10-$r/dataset --runs 3 --epochs 500 -o runs/seeds/$r
    python recipes/keep_results.py "runs/seeds/$r" "$results/seeds/$r"
done

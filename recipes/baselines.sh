#!/usr/bin/env bash
# Reference points: ConvNet trained with the evaluation protocol on random real subsets and on the
# whole training split. Resumable: a setting whose report.json exists is skipped.
#   bash recipes/baselines.sh [DATA_ROOT]      (default ../shared/data); reports go to recipes/results/baselines/
set -euo pipefail
root="${1:-../shared/data}"
out=recipes/results/baselines
run() {  # output folder, then the arguments of `haba-datasets evaluate`
    local dir="$out/$1"; shift
    [[ -f "$dir/report.json" ]] && { echo "done: $dir"; return; }
    haba-datasets evaluate "$@" --data-root "$root" --curve-points 4 -o "runs/baselines/${dir##*/}"
    python recipes/keep_results.py "runs/baselines/${dir##*/}" "$dir"
}
run cifar10-ipc10 cifar10 --ipc 10 --runs 5 --epochs 1000
run cifar10-ipc1 cifar10 --ipc 1 --runs 5 --epochs 1000
run fmnist-ipc1 fashion_mnist --ipc 1 --runs 5 --epochs 1000
run fmnist-ipc10 fashion_mnist --ipc 10 --runs 3 --epochs 1000
run cifar10-whole cifar10 --runs 1 --epochs 6
run fmnist-whole fashion_mnist --runs 1 --epochs 4
run cifar10-ipc50 cifar10 --ipc 50 --runs 1 --epochs 300
run fmnist-ipc50 fashion_mnist --ipc 50 --runs 1 --epochs 300
run cifar10-ipc10-nodsa cifar10 --ipc 10 --runs 3 --epochs 1000 --no-dsa

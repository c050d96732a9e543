#!/usr/bin/env bash
# The zoo end to end on this machine's CPU, resumable (finished steps are skipped):
#   1. distill each entry with its recipe's `zoo` profile (the settings of the entry, written as what they
#      change in the `cpu` profile; MTT experts shared by the CIFAR-10 entries and by the Fashion-MNIST entries);
#   2. bundle it into haba_datasets/zoo/<name> (recipes/zoo.py: ZCA truncated to rank 512; the hallucinators' `normalize`
#      turned on where the images drifted beyond 10x the real data's std, the threshold of evaluate's note: MTT on
#      instance-normalised students cannot see an image's scale, and networks without instance norm diverge on such
#      images; measured by recipes/normalize_check.py, the entries' scales are in docs/what-we-learned.md);
#   3. measure it through its zoo name with the README's command (the card's protocol, default threads);
#   4. record that measurement on its card, and copy the run's small results to recipes/results/zoo/<name>/.
#     bash recipes/zoo.sh [DATA_ROOT]     (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-../shared/data}"
export HABA_DATA_ROOT="$root"
cifar=runs/experts/cifar10-ipc10-cpu fmnist=runs/experts/fashion_mnist-cpu w64=runs/experts/cifar10-w64
distill() {  # run folder, recipe name, profile, experts folder (-: none, for DM)
    local experts=(--experts-dir "$4")
    [[ $4 != - ]] || experts=()
    [[ -f $1/summary.json ]] || haba-datasets distill recipes/$2.yaml --profile "$3" "${experts[@]}" -o "$1" --resume
}
publish() {  # name, run folder, runs, epochs[, bundle option]
    local name=$1 run=$2 out=recipes/results/zoo/$1
    python recipes/zoo.py bundle "$name" "$run" --runs "$3" --epochs "$4" ${5:-}
    [[ -f $out/report.json ]] || haba-datasets evaluate "$name" --data-root "$root" -o "runs/zoo/evaluation/$name"
    [[ -f $out/report.json ]] || python recipes/keep_results.py "runs/zoo/evaluation/$name" "$out"
    python recipes/zoo.py record "$name" "$out/report.json"
    python recipes/keep_results.py "$run" "$out/run"
}
distill runs/zoo/cifar10-ipc10 cifar10-ipc10 zoo $w64  # experts and student of width 64
distill runs/zoo/cifar10-ipc1 cifar10-ipc1 zoo $cifar
distill runs/zoo/cifar10-ipc50 cifar10-ipc50 zoo -  # HaBa on DM: no experts
distill runs/zoo/fashion_mnist-ipc10 fashion_mnist-ipc10 zoo $fmnist
distill runs/zoo/fashion_mnist-ipc1 fashion_mnist-ipc1 zoo $fmnist
publish cifar10-ipc10 runs/zoo/cifar10-ipc10 3 500 --normalize
publish cifar10-ipc1 runs/zoo/cifar10-ipc1 3 500 --normalize
publish fashion_mnist-ipc10 runs/zoo/fashion_mnist-ipc10 3 500 --normalize
publish fashion_mnist-ipc1 runs/zoo/fashion_mnist-ipc1 3 500  # its images at 7x the real std: kept as distilled
publish cifar10-ipc50 runs/zoo/cifar10-ipc50 3 300
python recipes/zoo_table.py

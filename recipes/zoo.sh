#!/usr/bin/env bash
# The zoo end to end on this machine's CPU, resumable (finished steps are skipped):
#   1. distill each entry with its recipe's `cpu` profile (1 final run; MTT experts shared by the
#      CIFAR-10 entries and by the Fashion-MNIST entries; cifar10-ipc10 is the MTT HaBa run of compare.sh);
#   2. bundle it into haba_datasets/zoo/<name> (recipes/zoo.py: ZCA truncated to rank 512);
#   3. measure it through its zoo name with the README's command (the card's protocol, default threads);
#   4. record that measurement on its card, and copy the run's small results to recipes/results/zoo/<name>/.
#     bash recipes/zoo.sh [DATA_ROOT]     (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-../shared/data}"
export HABA_DATA_ROOT="$root"
cifar=runs/experts/cifar10-ipc10-cpu fmnist=runs/experts/fashion_mnist-cpu
distill() {  # run folder, recipe name, more `distill` arguments (a later --profile wins)
    local run=$1 name=$2; shift 2
    [[ -f $run/summary.json ]] || haba-datasets distill recipes/$name.yaml --profile cpu --set evaluation.runs=1 -o $run --resume "$@"
}
keep() {  # a run's small results: run folder, destination
    mkdir -p "$2/evaluation"
    cp $1/{summary.json,log.jsonl,progress.png,dataset-grid.png} "$2/"
    cp $1/evaluation/{report.json,curves.png} "$2/evaluation/"
}
publish() {  # name, run folder, runs, epochs
    local name=$1 run=$2 out=recipes/results/zoo/$1
    python recipes/zoo.py bundle "$name" "$run" --runs "$3" --epochs "$4"
    [[ -f $out/report.json ]] || haba-datasets evaluate "$name" --data-root "$root" -o "$out"
    python recipes/zoo.py record "$name" "$out/report.json"
    keep "$run" "$out/run"
}
distill runs/c10-ipc10-mtt-haba cifar10-ipc10 --experts-dir $cifar
distill runs/zoo/cifar10-ipc1 cifar10-ipc1 --experts-dir $cifar --set experts.epochs=6
# IPC 50: two candidates, HaBa on MTT (200 iterations) and plain images on DM (`cpu-dm`); the zoo keeps the one
# with the higher validation accuracy in its final evaluation (1 x 300 epochs; see recipes/README.md)
distill runs/zoo/cifar10-ipc50 cifar10-ipc50 --experts-dir $cifar --set schedule.iterations=200 \
    --set schedule.eval_every=100 --set schedule.eval_epochs=30 --set evaluation.epochs=300
distill runs/zoo/cifar10-ipc50-dm-plain cifar10-ipc50 --profile cpu-dm --set parameterization.kind=plain \
    --set schedule.eval_epochs=50 --set evaluation.epochs=300
ipc50=$(python -c "import json, sys; v = {r: json.load(open(f'{r}/evaluation/report.json'))['val_accuracy']['mean'] for r in sys.argv[1:]}; print(max(v, key=v.get))" \
    runs/zoo/cifar10-ipc50 runs/zoo/cifar10-ipc50-dm-plain)
distill runs/zoo/fashion_mnist-ipc10 fashion_mnist-ipc10 --experts-dir $fmnist
distill runs/zoo/fashion_mnist-ipc1 fashion_mnist-ipc1 --experts-dir $fmnist --set experts.epochs=6
publish cifar10-ipc10 runs/c10-ipc10-mtt-haba 3 500
publish cifar10-ipc1 runs/zoo/cifar10-ipc1 3 500
publish fashion_mnist-ipc10 runs/zoo/fashion_mnist-ipc10 3 500
publish fashion_mnist-ipc1 runs/zoo/fashion_mnist-ipc1 3 500
publish cifar10-ipc50 "$ipc50" 3 300
keep runs/zoo/cifar10-ipc50 recipes/results/zoo/cifar10-ipc50/candidate-haba-mtt
python recipes/zoo_table.py

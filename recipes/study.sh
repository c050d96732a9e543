#!/usr/bin/env bash
# What limits accuracy at CPU budgets: CIFAR-10 at a storage of 10 images per class, HaBa on MTT, the
# recipe's `cpu` profile changed ONE factor at a time (the baseline is compare.sh's c10-ipc10-mtt-haba).
# Every run: 300 iterations, validation (100-epoch protocol) every 50, the best iteration on the
# validation split kept, then 1 run x 500 epochs of the final protocol. Resumable: a finished run is
# skipped, an interrupted one continues from its checkpoint. One thread per job.
#   bash recipes/study.sh [DATA_ROOT] [RUN ...]     (default ../shared/data, every run in the order below)
# Runs go to runs/study/<run> (experts to runs/experts/); small results to recipes/results/study/<run>/.
# Table: python recipes/study_table.py
set -euo pipefail
cd "$(dirname "$0")/.."
export HABA_DATA_ROOT="${1:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
shift || true
results=recipes/results/study
haba=parameterization.haba
declare -A experts=(
    [mf2]=cifar10-ipc10-cpu [mf2-basis]=cifar10-ipc10-cpu [mf2-all]=cifar10-ipc10-cpu [lr-bases-1000]=cifar10-ipc10-cpu
    [steps-40]=cifar10-ipc10-cpu [start-2]=cifar10-ipc10-cpu [width-64]=cifar10-w64 [experts-16]=cifar10-e16
)
declare -A sets=(
    # multi-formation: bases at 16x16 (4 per image slot: 36 per class, the storage of 9 full-size ones),
    # each inner step on 90 of the 360 bases (the baseline's batch, so the same cost per iteration)
    [mf2]="$haba.architecture=haba-conv-up $haba.basis_factor=2 $haba.bases_per_class=36 objective.mtt.batch_syn=90"
    # the same with the hallucinators' layers at 16x16 before upsampling: 1,344 values each instead of 5,568,
    # so 39 bases per class fit (306,240 values)
    [mf2-basis]="$haba.architecture=haba-conv-up $haba.hallucinator_options.at=basis $haba.basis_factor=2
                 $haba.bases_per_class=39 objective.mtt.batch_syn=90"
    [mf2-all]="$haba.architecture=haba-conv-up $haba.basis_factor=2 $haba.bases_per_class=36"  # all 360 per step
    [lr-bases-1000]="$haba.lr_bases=1000"
    [steps-40]="objective.mtt.syn_steps=40"
    [start-2]="objective.mtt.max_start_epoch=2"
    [width-64]="experts.net_options.width=64"  # experts and student (the adversary stays at 32)
    [experts-16]="experts.count=16"
)
train_experts() {  # a run's experts, first and timed: seconds added up in recipes/results/study/experts/<folder>.json
    local folder=${experts[$1]} width=32 count=4 start=$SECONDS
    [[ $1 == width-64 ]] && width=64
    [[ $1 == experts-16 ]] && count=16
    local finished
    finished=$(python -c "import sys; from haba_datasets.distill.experts import Experts; print(len(Experts.open(sys.argv[1]).ids))" \
        "runs/experts/$folder" 2>/dev/null) || finished=0
    (( finished >= count )) && return
    haba-datasets experts --dataset cifar10 --experts $count --epochs 6 --width $width --preprocessing zca --seed 0 \
        -o "runs/experts/$folder"
    local log=$results/experts/$folder.json spent=0
    mkdir -p "$results/experts"
    [[ -f $log ]] && spent=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['seconds'])" "$log")
    echo "{\"experts\": $count, \"epochs\": 6, \"width\": $width, \"threads\": $OMP_NUM_THREADS, \"seconds\": $((spent + SECONDS - start))}" > "$log"
}
order=(mf2 mf2-basis width-64 lr-bases-1000 steps-40 start-2 experts-16 mf2-all)
for name in "${@:-${order[@]}}"; do
    [[ -v "sets[$name]" ]] || { echo "unknown run $name (known: ${order[*]})" >&2; exit 2; }
    run=runs/study/$name args=()
    # 16 experts: the first 4 are the cpu profile's (an expert depends on (seed, index) only), 12 more are trained
    [[ $name != experts-16 || -d runs/experts/cifar10-e16 ]] || cp -r runs/experts/cifar10-ipc10-cpu runs/experts/cifar10-e16
    for kv in ${sets[$name]}; do args+=(--set "$kv"); done
    [[ -f $run/summary.json ]] || { train_experts "$name"; haba-datasets distill recipes/cifar10-ipc10.yaml --profile cpu --set evaluation.runs=1 \
        "${args[@]}" --experts-dir "runs/experts/${experts[$name]}" -o "$run" --resume; }
    mkdir -p "$results/$name/evaluation"
    cp $run/{summary.json,log.jsonl,progress.png,dataset-grid.png} "$results/$name/"
    cp $run/evaluation/{report.json,curves.png} "$results/$name/evaluation/"
    cp "$results/experts/${experts[$name]}.json" "$results/$name/experts.json"
done

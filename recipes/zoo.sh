#!/usr/bin/env bash
# The zoo end to end on this machine's CPU, resumable (finished steps are skipped). For each entry that
# `haba-datasets zoo list` names (haba_datasets/zoo: its recipe, profile, experts, run and results folders):
#   1. distill it with its recipe's `zoo` profile (MTT experts shared by the CIFAR-10 entries and by the
#      Fashion-MNIST entries, trained by the study);
#   2. bundle it into haba_datasets/zoo/<name> (`haba-datasets zoo bundle`: ZCA truncated to rank 512, the card's
#      protocol and its `normalize`: turned on where the images drifted beyond 10x the real data's std, the threshold
#      of evaluate's note; measured by recipes/normalize_check.py, the entries' scales are in docs/what-we-learned.md);
#   3. measure it through its zoo name with the README's command (the card's protocol, default threads);
#   4. record that measurement on its card, and copy the run's small results to recipes/results/zoo/<name>/.
#     bash recipes/zoo.sh [DATA_ROOT]     (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-../shared/data}"
export HABA_DATA_ROOT="$root"
while IFS=$'\t' read -r -u 3 name recipe profile experts run out _; do
    options=(--experts-dir "$experts")
    [[ $experts != - ]] || options=()  # DM: no experts
    [[ -f $run/summary.json ]] || haba-datasets distill "$recipe" --profile "$profile" "${options[@]}" -o "$run" --resume
    haba-datasets zoo bundle "$name" "$run"
    [[ -f $out/report.json ]] || haba-datasets evaluate "$name" --data-root "$root" -o "runs/zoo/evaluation/$name"
    [[ -f $out/report.json ]] || haba-datasets keep-results "runs/zoo/evaluation/$name" "$out"
    haba-datasets zoo record "$name" "$out/report.json"
    haba-datasets keep-results "$run" "$out/run"
done 3< <(haba-datasets zoo list | grep -v '^#')
python recipes/tables.py

#!/usr/bin/env bash
# What limits accuracy at CPU budgets: CIFAR-10, HaBa on MTT (and on DM), a recipe's `cpu` (`cpu-dm`) profile
# changed ONE factor at a time. Baselines: compare.sh's c10-ipc10-mtt-haba (IPC 10) and zoo.sh's cifar10-ipc1 (IPC 1);
# a run of a recipe's `zoo` profile changes one factor of that zoo entry (plain images at its budget).
# Every run: 300 iterations, validation (100-epoch protocol) every 50, the best iteration on the
# validation split kept, then 1 run x 500 epochs of the final protocol. Resumable: a finished run is
# skipped, an interrupted one continues from its checkpoint. One thread per job.
#   bash recipes/study.sh [DATA_ROOT] [RUN ...]     (default ../shared/data, every run in the order below;
#                                                    RUN:seeds evaluates RUN's dataset with 3 runs x 500 epochs;
#                                                    RUN:keep stores what RUN needs to continue on another machine
#                                                    in recipes/results/study/RUN/state, about 1.5 MB at IPC 1, to
#                                                    commit; a run missing from runs/study starts from it there)
# Runs go to runs/study/<run> (experts to runs/experts/); small results to recipes/results/study/<run>/.
# Table: python recipes/study_table.py
set -euo pipefail
cd "$(dirname "$0")/.."
export HABA_DATA_ROOT="${1:-../shared/data}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
shift || true
results=recipes/results/study
haba=parameterization.haba mf="parameterization.haba.architecture=haba-conv-up parameterization.haba.basis_factor=2"
# run -> "recipe[@profile] experts-folder setting=value ..." (profile: cpu unless named; experts: 4 x 6 epochs of
# width 32 unless the settings say; folder "-": none, for DM)
declare -A runs=(
    # multi-formation: bases at 16x16 (4 per image slot: 36 per class, the storage of 9 full-size ones),
    # each inner step on 90 of the 360 bases (the baseline's batch, so the same cost per iteration)
    [mf2]="cifar10-ipc10 cifar10-ipc10-cpu $mf $haba.bases_per_class=36 objective.mtt.batch_syn=90"
    # the same with the hallucinators' layers at 16x16 before upsampling: 1,344 values each instead of 5,568,
    # so 39 bases per class fit (306,240 values)
    [mf2-basis]="cifar10-ipc10 cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                 objective.mtt.batch_syn=90"
    # the same with the hallucinators' lr 10x smaller (what made multi-formation win at IPC 1: ipc1-mf2-basis-7-lr-10)
    [mf2-basis-lr-10]="cifar10-ipc10 cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                       objective.mtt.batch_syn=90 $haba.lr_hallucinators=10"
    # the `cpu` profile itself, remade beside one-factor runs on another machine (its experts retrained there)
    [cpu]="cifar10-ipc10 cifar10-ipc10-cpu"
    [mf2-all]="cifar10-ipc10 cifar10-ipc10-cpu $mf $haba.bases_per_class=36"  # all 360 bases in every inner step
    [lr-bases-1000]="cifar10-ipc10 cifar10-ipc10-cpu $haba.lr_bases=1000"
    [lr-hallucinators-10]="cifar10-ipc10 cifar10-ipc10-cpu $haba.lr_hallucinators=10"
    [init-default]="cifar10-ipc10 cifar10-ipc10-cpu $haba.hallucinator_options.init=default"  # the reference's init
    [steps-40]="cifar10-ipc10 cifar10-ipc10-cpu objective.mtt.syn_steps=40"
    [start-2]="cifar10-ipc10 cifar10-ipc10-cpu objective.mtt.max_start_epoch=2"
    # the student's 20 inner steps match one expert epoch instead of two (3 would pass the 6 epochs trained)
    [expert-epochs-1]="cifar10-ipc10 cifar10-ipc10-cpu objective.mtt.expert_epochs=1"
    [width-64]="cifar10-ipc10 cifar10-w64 experts.net_options.width=64"  # experts and student (the adversary: 32)
    # width-64 continued from its iteration-300 checkpoint to 600 iterations (the curve still rose at 300)
    [width-64-600]="cifar10-ipc10 cifar10-w64 experts.net_options.width=64 schedule.iterations=600"
    # the zoo's earlier cifar10-ipc10 (width 64, 600 iterations, 20 inner steps: the `zoo-steps-20` profile,
    # `zoo` when it ran) with plain images: the equal-budget baseline of that entry
    [zoo-plain]="cifar10-ipc10@zoo-steps-20 cifar10-w64 parameterization.kind=plain"
    # the zoo's cifar10-ipc10 with 40 inner steps instead of 20 (steps-40 led the width-32 study in the loop)
    [zoo-steps-40]="cifar10-ipc10@zoo cifar10-w64 objective.mtt.syn_steps=40"
    # its equal-budget baseline: plain images with 40 inner steps (zoo-plain has 20; the `zoo` profile has 40 now; the
    # setting says so for the record)
    [zoo-plain-steps-40]="cifar10-ipc10@zoo cifar10-w64 parameterization.kind=plain objective.mtt.syn_steps=40"
    # plain images at the storage of the other HaBa zoo entries (IPC 1: 2 images per class, 1.05x the HaBa entry's storage)
    # (the IPC 1 entries below made at 300 iterations say so: the zoo profile has more)
    [ipc1-plain-2]="cifar10-ipc1@zoo cifar10-ipc10-cpu parameterization.kind=plain ipc=2 schedule.iterations=300"
    # HaBa at that storage the other way: 7 bases of 16x16 per class + 5 hallucinators with layers at 16x16,
    # 60,480 values (0.98x 2 images per class, 1.03x the zoo's cifar10-ipc1)
    [ipc1-mf2-basis-7]="cifar10-ipc1@zoo cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=7
                        schedule.iterations=300"
    # the same with the hallucinators' lr 10x smaller (what made HaBa win on DM): do they drift on MTT too?
    [ipc1-mf2-basis-7-lr-10]="cifar10-ipc1@zoo cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis
                              $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=300"
    # the two IPC 1 zoo entries and their plain baselines at 600 iterations (the entries' curves still rose at 300);
    # the HaBa ones and Fashion-MNIST's plain one continue their 300-iteration checkpoints
    [ipc1-mf2-basis-7-lr-10-600]="cifar10-ipc1@zoo cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis
                                  $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=600"
    [ipc1-plain-2-600]="cifar10-ipc1@zoo cifar10-ipc10-cpu parameterization.kind=plain ipc=2 schedule.iterations=600"
    # continued again to 1,000 iterations (the HaBa entry's validation still rose at 600)
    [ipc1-mf2-basis-7-lr-10-1000]="cifar10-ipc1@zoo cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis
                                   $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=1000"
    [ipc1-plain-2-1000]="cifar10-ipc1@zoo cifar10-ipc10-cpu parameterization.kind=plain ipc=2 schedule.iterations=1000"
    # and to 1,500 (validation still rose at 1,000: 43.7 / 44.0 / 43.4 / 43.9 at 850-1,000)
    [ipc1-mf2-basis-7-lr-10-1500]="cifar10-ipc1@zoo cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis
                                   $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=1500"
    # its plain-image baseline at equal iterations (the zoo's cifar10-ipc1 is the 1,500-iteration HaBa run), run
    # straight to 1,500 (the 1,000-iteration run's checkpoint stayed on another machine)
    [ipc1-plain-2-1500]="cifar10-ipc1@zoo cifar10-ipc10-cpu parameterization.kind=plain ipc=2 schedule.iterations=1500"
    [fmnist-ipc1-mf2-basis-7-lr-10-600]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                         $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=600"
    # (zoo-full-size: the zoo profile fmnist-ipc1-plain-2 was made with, whose haba settings a plain run never reads)
    # the hallucinators' lr 10x smaller again (1): closer still to multi-formation alone
    [fmnist-ipc1-mf2-basis-7-lr-1]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                    $haba.bases_per_class=7 $haba.lr_hallucinators=1 schedule.iterations=300"
    # lr 1 continued to 600 iterations, and its limit: the hallucinators frozen at their init (multi-formation alone)
    [fmnist-ipc1-mf2-basis-7-lr-1-600]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                        $haba.bases_per_class=7 $haba.lr_hallucinators=1 schedule.iterations=600"
    [fmnist-ipc1-mf2-basis-7-lr-0]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                    $haba.bases_per_class=7 $haba.lr_hallucinators=0 schedule.iterations=300"
    # lr 1 with every image scaled like its basis (hallucinator option normalize): the scale the MTT loss cannot see
    # drifts no more
    [fmnist-ipc1-mf2-basis-7-lr-1-norm]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                         $haba.bases_per_class=7 $haba.lr_hallucinators=1 $haba.hallucinator_options.normalize=true
                                         schedule.iterations=300"
    [fmnist-ipc1-plain-2-600]="fashion_mnist-ipc1@zoo-full-size fashion_mnist-cpu parameterization.kind=plain ipc=2
                               schedule.iterations=600"
    # (the zoo profile's lr_hallucinators when it ran, which a plain run never reads: its recorded recipe)
    [fmnist-ipc10-plain]="fashion_mnist-ipc10@zoo fashion_mnist-cpu parameterization.kind=plain $haba.lr_hallucinators=100"
    # the zoo's earlier fashion_mnist-ipc10 (lr 100) with the hallucinators' lr 1 (what made HaBa beat plain images at
    # Fashion-MNIST IPC 1; lr 100 drifts the images to 580,000x the real std): the zoo profile since
    [fmnist-ipc10-lr-1]="fashion_mnist-ipc10@zoo fashion_mnist-cpu $haba.lr_hallucinators=1"
    [fmnist-ipc1-plain-2]="fashion_mnist-ipc1@zoo fashion_mnist-cpu parameterization.kind=plain ipc=2 schedule.iterations=300"
    # Fashion-MNIST's ipc1-mf2-basis-7-lr-10: 7 bases of 14x14 per class + 5 hallucinators with layers at 14x14,
    # 15,260 values (0.97x 2 images per class, 1.04x the zoo's fashion_mnist-ipc1)
    [fmnist-ipc1-mf2-basis-7-lr-10]="fashion_mnist-ipc1@zoo fashion_mnist-cpu $mf $haba.hallucinator_options.at=basis
                                     $haba.bases_per_class=7 $haba.lr_hallucinators=10 schedule.iterations=300"
    [experts-16]="cifar10-ipc10 cifar10-e16 experts.count=16"
    # DM (baselines: compare.sh's c10-ipc10-dm-haba and c10-ipc10-dm-plain): the hallucinators' lr 10x smaller
    [dm-lr-hallucinators-0.001]="cifar10-ipc10@cpu-dm - $haba.lr_hallucinators=0.001"
    # DM with the hallucinators' diversity term scaled to the DM loss (about 20; the cosine term is at most 0.1 x 1)
    [dm-lambda-cos-10]="cifar10-ipc10@cpu-dm - $haba.lambda_cos=10"
    # DM on multi-formation bases, the layers at 16x16 (39 bases per class, as mf2-basis)
    [dm-mf2-basis]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39"
    # the two together: multi-formation bases at 16x16 and the hallucinators' lr 10x smaller
    [dm-mf2-basis-lr-0.001]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                             $haba.lr_hallucinators=0.001"
    # continued from its iteration-800 checkpoint to 1,600 iterations (its validation still rose at 800)
    [dm-mf2-basis-lr-0.001-1600]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                                  $haba.lr_hallucinators=0.001 schedule.iterations=1600"
    # the control: the same with the hallucinators frozen near the identity (multi-formation alone, as IDC)
    [dm-mf2-basis-frozen]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                           $haba.lr_hallucinators=0"
    # its DM networks at width 64 instead of 32 (width paid on MTT; the paper's DM: 128),
    # and its real batch at the paper's 256 per class instead of 64
    [dm-mf2-basis-lr-0.001-w64]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                                 $haba.lr_hallucinators=0.001 objective.dm.net_options.width=64"
    [dm-mf2-basis-lr-0.001-real-256]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                                      $haba.lr_hallucinators=0.001 objective.dm.batch_real=256"
    # the real batch's control: plain DM images with 256 real images per class (equal storage, objective, iterations)
    [dm-plain-real-256]="cifar10-ipc10@cpu-dm - parameterization.kind=plain objective.dm.batch_real=256"
    # the real-256 winner continued from its iteration-800 checkpoint to 1,600 iterations (its validation rose at 800)
    [dm-mf2-basis-lr-0.001-real-256-1600]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis
                                           $haba.bases_per_class=39 $haba.lr_hallucinators=0.001
                                           objective.dm.batch_real=256 schedule.iterations=1600"
    # the zoo's cifar10-ipc50 (HaBa on DM, 64 real images per class) with 256: the IPC 10 finding at IPC 50
    [ipc50-real-256]="cifar10-ipc50@zoo - objective.dm.batch_real=256 evaluation.epochs=300"
    # width 64 with both lrs halved: the DM loss sums over twice the features at width 64 (about twice the loss, so
    # twice the step at the same lr), and width 64 led at iteration 200 and fell after
    [dm-mf2-basis-lr-0.001-w64-lr-half]="cifar10-ipc10@cpu-dm - $mf $haba.hallucinator_options.at=basis $haba.bases_per_class=39
                                         $haba.lr_bases=0.5 $haba.lr_hallucinators=0.0005 objective.dm.net_options.width=64"
    # (the same at IPC 50 is the `zoo` profile of recipes/cifar10-ipc50.yaml, made by recipes/zoo.sh)
    # the IPC 10 DM winner under partly trained networks (the cpu experts after a random epoch 0-6, as IDM/DANCE),
    # 400 iterations (compared with the winner's in-loop validation at iterations 200 and 400)
    [dmt-mf2-basis-lr-0.001]="cifar10-ipc10@cpu-dm-trained cifar10-ipc10-cpu $mf $haba.hallucinator_options.at=basis
                              $haba.bases_per_class=39 $haba.lr_hallucinators=0.001 schedule.iterations=400"
    # experts trained 16 epochs instead of 6, start epochs 0-11 instead of 0-3 (the targets reach epoch 13 of 16)
    [long-experts]="cifar10-ipc10 cifar10-e4x16 experts.epochs=16 objective.mtt.max_start_epoch=12"
    # the same with the student's step size starting at 0.05 (what the baseline learns by iteration 300), not 0.01
    [long-experts-lr]="cifar10-ipc10 cifar10-e4x16 experts.epochs=16 objective.mtt.max_start_epoch=12
                       objective.mtt.lr_teacher=0.05"
    # IPC 1 (the zoo's experts: 6 epochs). Plain images: the equal-storage baseline (the zoo's HaBa stores 1.9x);
    # multi-formation with the layers at 16x16: 3 bases per class + 5 hallucinators = 0.969x one image per class
    [ipc1-plain]="cifar10-ipc1 cifar10-ipc10-cpu experts.epochs=6 parameterization.kind=plain"
    [ipc1-mf2-basis]="cifar10-ipc1 cifar10-ipc10-cpu experts.epochs=6 $mf $haba.hallucinator_options.at=basis
                      $haba.bases_per_class=3"
    [ipc1-steps-50]="cifar10-ipc1 cifar10-ipc10-cpu experts.epochs=6 objective.mtt.syn_steps=50"  # the paper's
    [ipc1-width-64]="cifar10-ipc1 cifar10-w64 experts.epochs=6 experts.net_options.width=64"  # as width-64 at IPC 10
)
# a run that continues another: its folder starts as a copy of that run's (checkpoint, log, best/, grids/)
declare -A continues=([width-64-600]=width-64 [dm-mf2-basis-lr-0.001-1600]=dm-mf2-basis-lr-0.001
                      [dm-mf2-basis-lr-0.001-real-256-1600]=dm-mf2-basis-lr-0.001-real-256
                      [ipc1-mf2-basis-7-lr-10-600]=ipc1-mf2-basis-7-lr-10 [fmnist-ipc1-plain-2-600]=fmnist-ipc1-plain-2
                      [fmnist-ipc1-mf2-basis-7-lr-10-600]=fmnist-ipc1-mf2-basis-7-lr-10
                      [ipc1-mf2-basis-7-lr-10-1000]=ipc1-mf2-basis-7-lr-10-600 [ipc1-mf2-basis-7-lr-10-1500]=ipc1-mf2-basis-7-lr-10-1000
                      [ipc1-plain-2-1000]=ipc1-plain-2-600
                      [fmnist-ipc1-mf2-basis-7-lr-1-600]=fmnist-ipc1-mf2-basis-7-lr-1)
order=(cpu mf2 long-experts long-experts-lr mf2-basis mf2-basis-lr-10 width-64 width-64-600 lr-bases-1000 lr-hallucinators-10 init-default ipc1-plain ipc1-mf2-basis ipc1-steps-50 ipc1-width-64 zoo-plain zoo-steps-40 zoo-plain-steps-40 ipc1-plain-2 ipc1-mf2-basis-7 ipc1-mf2-basis-7-lr-10 fmnist-ipc10-plain fmnist-ipc1-plain-2 fmnist-ipc1-mf2-basis-7-lr-10 ipc1-mf2-basis-7-lr-10-600 ipc1-plain-2-600 ipc1-mf2-basis-7-lr-10-1000 ipc1-plain-2-1000 ipc1-mf2-basis-7-lr-10-1500 ipc1-plain-2-1500 fmnist-ipc1-mf2-basis-7-lr-10-600 fmnist-ipc1-mf2-basis-7-lr-1 fmnist-ipc1-mf2-basis-7-lr-1-600 fmnist-ipc1-mf2-basis-7-lr-0 fmnist-ipc1-mf2-basis-7-lr-1-norm fmnist-ipc1-plain-2-600 fmnist-ipc10-lr-1 steps-40 start-2 expert-epochs-1 experts-16 mf2-all
       dm-lr-hallucinators-0.001 dm-mf2-basis dm-mf2-basis-lr-0.001 dm-mf2-basis-lr-0.001-1600 dm-mf2-basis-frozen dm-mf2-basis-lr-0.001-w64 dm-mf2-basis-lr-0.001-w64-lr-half dm-mf2-basis-lr-0.001-real-256 dm-plain-real-256 dm-mf2-basis-lr-0.001-real-256-1600 ipc50-real-256 dmt-mf2-basis-lr-0.001 dm-lambda-cos-10)
train_experts() {  # experts folder, recipe, profile, settings: the run's experts trained first and timed
    local folder=$1 start=$SECONDS finished dataset count epochs width preprocessing
    # what the run's resolved recipe asks for (read as `haba-datasets distill` reads it)
    read -r dataset count epochs width preprocessing < <(python - "${@:2}" <<'PY'
import sys
from haba_datasets.distill.recipe import load_recipe, parse_overrides
recipe, profile, *sets = sys.argv[1:]
r = load_recipe(f"recipes/{recipe}.yaml", profile=profile, overrides=parse_overrides(sets))
e = r["experts"]
print(r["dataset"], e["count"], e["epochs"], e.get("net_options", {}).get("width", 128), r["preprocessing"])
PY
)
    # 16 experts: the first 4 are the cpu profile's (an expert depends on (seed, index) only), 12 more are trained;
    # the 4 count with their own training time
    if (( count > 4 )) && [[ ! -d runs/experts/$folder ]]; then
        cp -r runs/experts/cifar10-ipc10-cpu "runs/experts/$folder"
        cp runs/experts/cifar10-ipc10-cpu.timing.json "runs/experts/$folder.timing.json"
    fi
    finished=$(python -c "import sys; from haba_datasets.distill.experts import Experts; print(len(Experts.open(sys.argv[1]).ids))" \
        "runs/experts/$folder" 2>/dev/null) || finished=0
    (( finished >= count )) && return
    haba-datasets experts --dataset "$dataset" --experts "$count" --epochs "$epochs" --width "$width" \
        --preprocessing "$preprocessing" --seed 0 -o "runs/experts/$folder"
    # the time on this machine (a resumed training adds to it) goes with every run that uses these experts; the
    # study's shared record (the baselines' cost) keeps its first measurement
    local log=runs/experts/$folder.timing.json spent=0
    (( finished > 0 )) && [[ -f $log ]] && spent=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['seconds'])" "$log")
    echo "{\"experts\": $count, \"epochs\": $epochs, \"width\": $width, \"threads\": $OMP_NUM_THREADS, \"seconds\": $((spent + SECONDS - start))}" > "$log"
    mkdir -p "$results/experts" && { [[ -f $results/experts/$folder.json ]] || cp "$log" "$results/experts/$folder.json"; }
}
restore() {  # run, experts folder: a run missing here but kept (RUN:keep) is written back from its committed state
    local state=$results/$1/state
    [[ -d runs/study/$1 || ! -d $state ]] && return
    local source=(--experts-dir "runs/experts/$2")  # MTT: the experts' ZCA; DM: the ZCA fitted again
    [[ $2 != - ]] || source=(--data-root "$HABA_DATA_ROOT")
    haba-datasets restore-state "$state" "runs/study/$1" "${source[@]}"
}
for name in "${@:-${order[@]}}"; do
    if [[ $name == *:keep ]]; then  # RUN:keep commits what RUN needs to continue elsewhere (haba-datasets keep-state)
        name=${name%:keep}
        haba-datasets keep-state "runs/study/$name" "$results/$name/state"
        continue
    fi
    if [[ $name == *:seeds ]]; then  # RUN:seeds confirms RUN's selected dataset with the card's protocol (3 x 500)
        name=${name%:seeds} out=runs/study/seeds/$name
        [[ -f $out/report.json ]] || haba-datasets evaluate "runs/study/$name/dataset" --runs 3 --epochs 500 -o "$out"
        python recipes/keep_results.py "$out" "$results/seeds/$name"
        continue
    fi
    [[ -v "runs[$name]" ]] || { echo "unknown run $name (known: ${order[*]})" >&2; exit 2; }
    read -r recipe folder sets <<< "$(echo ${runs[$name]})"
    run=runs/study/$name args=() profile=cpu
    [[ $recipe == *@* ]] && profile=${recipe#*@} recipe=${recipe%@*}
    [[ $folder == - ]] || args+=(--experts-dir "runs/experts/$folder")
    for kv in $sets; do args+=(--set "$kv"); done
    if [[ ! -f $run/summary.json ]]; then
        [[ $folder == - ]] || train_experts "$folder" "$recipe" "$profile" $sets
        restore "$name" "$folder"
        if [[ -v "continues[$name]" && ! -d $run ]]; then
            from=runs/study/${continues[$name]}
            restore "${continues[$name]}" "$folder"
            [[ -f $from/checkpoint.safetensors ]] || { echo "$name continues ${continues[$name]}: run that first" >&2; exit 2; }
            mkdir -p "$run.partial" && cp -r $from/{checkpoint.safetensors,log.jsonl,best} "$run.partial/"
            [[ ! -d $from/grids ]] || cp -r $from/grids "$run.partial/"
            mv "$run.partial" "$run"
        fi
        haba-datasets distill "recipes/$recipe.yaml" --profile $profile --set evaluation.runs=1 "${args[@]}" -o "$run" --resume
    fi
    python recipes/keep_results.py "$run" "$results/$name"
    timing=runs/experts/$folder.timing.json  # absent for experts trained outside the study (zoo.sh): not timed
    [[ $folder == - || ! -f $timing ]] || cp "$timing" "$results/$name/experts.json"
done

#!/usr/bin/env bash
# The reproduction plan of results/REPRODUCTION.md ("Plan for the complete reproduction"), one
# function per block.  Every sweep is resumable: finished runs are kept (a run whose recorded
# flags differ is refused, never overwritten), interrupted trainings resume from their last
# epoch checkpoint, an interrupted evaluation restarts.  After each block the finished runs'
# metrics.json / flags.cfg are copied into results/runs/ (commit them) and the block's report
# is regenerated and spliced into results/REPRODUCTION.md (experiments.splice_report).  A
# command that fails (a sweep with a failed run, a report that refuses) is
# reported and the block goes on: its other sweeps run and its report is regenerated from the
# runs that finished; the block then counts as failed, and the next block runs (exit code 1 at
# the end).
#
#   bash results/reproduce.sh 2 3          # blocks 2 and 3, in that order
#   nohup bash results/reproduce.sh 2 3 4 5 6 7 8 9 > reproduce.log 2>&1 &
#
#   DRY_RUN=1 bash results/reproduce.sh 2   # print the block's commands, run nothing
#
# DATA_DIR (default ../shared/data) holds mnist/, fashion_mnist/ and notmnist/ (uqmix.data).
# Each run uses one thread; the sweeps run two at a time (--parallel=2, for 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
DATA_DIR=${DATA_DIR:-../shared/data}
C=experiments/configs
PYTHON=${PYTHON:-python}
MIX=("$PYTHON" -m experiments.sweep --binary=experiments.mixture_mnist --parallel=2
  "--extra_flags=--data_dir=$DATA_DIR" --extra_flag=--training_cache=runs/training_cache)
PN=("$PYTHON" -m experiments.sweep --binary=experiments.cifar_rkl --parallel=2
  "--extra_flags=--data_dir=$DATA_DIR"
  --extra_flag=--attack_iterations=1,2,5,10,20,50,100,200,500,1000)

# run COMMAND...: run it, or print it under DRY_RUN.  A failure is reported and marks the
# block failed (BLOCK_FAILED); the block goes on.
run() {
  if [ -n "${DRY_RUN:-}" ]; then
    echo "$*"
    return
  fi
  local status=0
  "$@" || status=$?
  if [ "$status" -ne 0 ]; then
    echo "== failed (exit code $status): $*" >&2
    BLOCK_FAILED=1
  fi
}

# cfgs NAME...: the flagfiles experiments/configs/NAME.cfg, comma-separated.
cfgs() {
  local IFS=,
  local files=()
  for name in "$@"; do files+=("$C/$name.cfg"); done
  echo "${files[*]}"
}

# collect ROOT: copy the finished runs' (those with a metrics.json) metrics.json, flags.cfg,
# config.json and uqmix_run.json of runs/ROOT to results/runs/ (the reports check with the last
# two that a folder's seeds were made alike).
collect() {
  if [ -n "${DRY_RUN:-}" ]; then
    echo "collect runs/$1 -> results/runs/$1"
    return
  fi
  [ -d "runs/$1" ] || return 0
  local metrics run file
  while IFS= read -r metrics; do
    run=$(dirname "$metrics")
    for file in metrics.json flags.cfg config.json uqmix_run.json; do
      if [ -f "runs/$run/$file" ]; then
        install -D -m 644 "runs/$run/$file" "results/runs/$run/$file"
      fi
    done
  done < <(cd runs && find "$1" -name metrics.json)
}

# restore_committed: a fresh clone (or a machine whose runs/ was lost) holds the finished runs
# only in results/runs/.  Each committed run whose runs/ folder does not exist at all gets its
# metrics.json, flags.cfg, config.json and uqmix_run.json copied back, so the sweep checks its
# record (experiments.sweep: same record, skipped; another record, refused) instead of running it
# again.  A runs/ folder that exists (an unfinished run's checkpoints) is never touched.
restore_committed() {
  if [ -n "${DRY_RUN:-}" ]; then
    echo "restore results/runs -> runs (missing run folders only)"
    return
  fi
  [ -d results/runs ] || return 0
  local metrics run file restored=0
  while IFS= read -r metrics; do
    run=$(dirname "$metrics")
    [ -e "runs/$run" ] && continue
    for file in metrics.json flags.cfg config.json uqmix_run.json; do
      if [ -f "results/runs/$run/$file" ]; then
        install -D -m 644 "results/runs/$run/$file" "runs/$run/$file"
      fi
    done
    restored=$((restored + 1))
  done < <(cd results/runs && find . -name metrics.json | sed 's|^\./||')
  if [ "$restored" -gt 0 ]; then
    echo "restored $restored finished runs from results/runs into runs/"
  fi
}

mixture_report() {
  collect "$1"
  run "$PYTHON" -m experiments.mixture_report "--sweep_root=results/runs/$1" \
    "--output_dir=results/$1" "--figures_dir=results/figures/$1"
  mixture_all_report
  splice
}

# The mixture report over every mixture root, results/mixture_all: the published tables in one
# comparison (Tables 1 and 2 are split over mixture and mixture_grid; a setting in several
# folders is reported from the one with most seeds, per attack protocol for Tables 4 and 7).
mixture_all_report() {
  run "$PYTHON" -m experiments.mixture_report \
    "--sweep_root=$(finished_roots mixture mixture_grid mixture_protocol)" \
    --output_dir=results/mixture_all --figures_dir=results/figures/mixture_all
}

# finished_roots ROOT...: results/runs/ROOT for each ROOT that holds a finished run (all of them
# under DRY_RUN), comma-separated: the --sweep_root of a report over several roots.
finished_roots() {
  local roots=() root
  for root in "$@"; do
    if [ -n "${DRY_RUN:-}" ] || [ -n "$(find "results/runs/$root" -name metrics.json 2> /dev/null)" ]; then
      roots+=("results/runs/$root")
    fi
  done
  local IFS=,
  echo "${roots[*]}"
}

# splice: the regenerated tables into results/REPRODUCTION.md (experiments.splice_report).
splice() {
  run "$PYTHON" -m experiments.splice_report --report=results/REPRODUCTION.md
}

# The full-length Prior Network report: results/pn_full over the roots pn_full, pn_full_kldir
# (KL-DIR next to KL-PMF) and pn_full_cw (C&W L2), those that have finished runs.
pn_full_report() {
  local root
  for root in pn_full pn_full_kldir pn_full_cw; do collect "$root"; done
  run "$PYTHON" -m experiments.pn_report \
    "--sweep_root=$(finished_roots pn_full pn_full_kldir pn_full_cw)" \
    --output_dir=results/pn_full --figures_dir=results/figures/pn_full
  splice
}

PROTOCOL_CONFIGS=$(cfgs mixture_mnist_ml_frozen mixture_mnist_vi_frozen mixture_fashion_ml_frozen \
  mixture_fashion_vi_frozen mixture_mnist_ml_ch3pgd mixture_mnist_vi_ch3pgd \
  mixture_fashion_ml_ch3pgd mixture_fashion_vi_ch3pgd mixture_mnist_ml_ch3pgd_frozen \
  mixture_mnist_vi_ch3pgd_frozen mixture_fashion_ml_ch3pgd_frozen mixture_fashion_vi_ch3pgd_frozen \
  mixture_fashion_ml_attacks mixture_fashion_vi_attacks)

# Block 1 (seed 0) and 3 (seeds 1, 2): the attack-protocol question.
block_1() {
  run "${MIX[@]}" --seeds=0 --output_root=runs/mixture_protocol "--flagfiles=$PROTOCOL_CONFIGS"
  mixture_report mixture_protocol
}
block_3() {
  run "${MIX[@]}" --seeds=1,2 --output_root=runs/mixture_protocol "--flagfiles=$PROTOCOL_CONFIGS"
  mixture_report mixture_protocol
}

# Block 2 (seed 0) and 6 (seeds 1, 2): full-length Prior Networks; black-box transfer on PN-RKL,
# PN-RKL-ADV (seed 0 only) and the DNN.
# The runs without black-box transfer two at a time (about 1.7 h a pair here).  With black-box
# transfer a run trains two networks, its own and the source (seed + 1000): one run at a time,
# the two trained at once by two processes of one thread each (--training_processes=2: the same
# networks).  On these 2 cores that is no faster than one process with two threads (PN-RKL-ADV:
# 551 s per epoch per network, against 279 s for one network with two threads), so PN-RKL-ADV
# with its source (over 3 h of training) does not fit a 3-hour session here: its seeds 1 and 2
# run without black-box transfer, alone with two threads (about 1.8 h); the report's white-box
# rows average all three seeds, its black-box row is seed 0's (n in every cell).
pn_pairs() {
  run "${PN[@]}" "--seeds=$1" --output_root=runs/pn_full "--flagfiles=$(cfgs mnist_kl mnist_dnn_adv)"
}
pn_blackbox() {
  run "${PN[@]}" --parallel=1 "--seeds=$1" --output_root=runs/pn_full \
    --extra_flag=--blackbox_transfer=true --extra_flag=--training_processes=2 \
    "--flagfiles=$(cfgs "${@:2}")"
}
block_2() {
  pn_pairs 0
  pn_blackbox 0 mnist_rkl mnist_dnn mnist_rkl_adv
  pn_full_report
}
block_6() {
  pn_pairs 1,2
  pn_blackbox 1,2 mnist_rkl mnist_dnn
  TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=2 run "${PN[@]}" --parallel=1 --seeds=1,2 \
    --output_root=runs/pn_full "--flagfiles=$(cfgs mnist_rkl_adv)"
  pn_full_report
}

# Block 4: Tables 1 and 2 complete and the Fashion-MNIST baselines, 3 seeds.
block_4() {
  run "${MIX[@]}" --seeds=0,1,2 --output_root=runs/mixture_grid "--flagfiles=$(cfgs \
    mixture_mnist_ml_prior1.5 mixture_mnist_vi_prior1.5 mixture_mnist_ml_lambda0.01 \
    mixture_mnist_vi_lambda0.01 mixture_mnist_ml_lambda0.001 mixture_mnist_vi_lambda0.001 \
    mixture_mnist_ml_lambda0.0001 mixture_mnist_vi_lambda0.0001 mixture_fashion_ml_prior0.5 \
    mixture_fashion_vi_prior0.5 mixture_fashion_ml_prior1.5 mixture_fashion_vi_prior1.5 \
    mixture_fashion_ml_prior3 mixture_fashion_vi_prior3 mixture_fashion_ml_lambda0.01 \
    mixture_fashion_vi_lambda0.01 mixture_fashion_ml_lambda0.001 mixture_fashion_vi_lambda0.001 \
    mixture_fashion_ml_lambda0.0001 mixture_fashion_vi_lambda0.0001 mixture_fashion_mc_dropout \
    mixture_fashion_ensemble mixture_fashion_deterministic)"
  mixture_report mixture_grid
}

# Block 5: the λ = σ² = 1 headlines with 10 seeds each in one root: MNIST seeds 0-9 in
# mixture_grid (seeds 0-2 again: results/runs/mixture's were made by earlier code), Fashion-MNIST
# seeds 1-9 next to block 1's seed 0 in mixture_protocol.
block_5() {
  run "${MIX[@]}" --seeds=0,1,2,3,4,5,6,7,8,9 --output_root=runs/mixture_grid \
    "--flagfiles=$(cfgs mixture_mnist_ml mixture_mnist_vi)"
  run "${MIX[@]}" --seeds=1,2,3,4,5,6,7,8,9 --output_root=runs/mixture_protocol \
    "--flagfiles=$(cfgs mixture_fashion_ml_attacks mixture_fashion_vi_attacks)"
  mixture_report mixture_grid
  mixture_report mixture_protocol
}

# Block 7: KL-DIR next to KL-PMF and the adaptive C&W L2 attack (own output roots), on block 2's
# networks (--reuse_training_from: copied from runs/pn_full/<configuration>/seed_0, not retrained).
block_7() {
  run "${PN[@]}" --seeds=0 --output_root=runs/pn_full_kldir --extra_flag=--attack_criterion=kl_dir \
    --extra_flag=--reuse_training_from=runs/pn_full "--flagfiles=$(cfgs mnist_rkl mnist_rkl_adv)"
  run "${PN[@]}" --seeds=0 --output_root=runs/pn_full_cw --extra_flag=--attack_method=cw \
    --extra_flag=--reuse_training_from=runs/pn_full "--flagfiles=$(cfgs mnist_rkl mnist_rkl_adv)"
  pn_full_report
}

# Blocks 8 and 9: the 5-network ensemble (3 seeds) and MC dropout with 100 samples (seed 0).
block_8() {
  run "${PN[@]}" --seeds=0,1,2 --output_root=runs/pn_full "--flagfiles=$(cfgs mnist_ensemble)"
  pn_full_report
}
block_9() {
  run "${PN[@]}" --seeds=0 --output_root=runs/pn_full "--flagfiles=$(cfgs mnist_mc_dropout)"
  pn_full_report
}

if [ $# -eq 0 ]; then
  echo "usage: bash results/reproduce.sh BLOCK... (1-9; see results/REPRODUCTION.md)" >&2
  exit 1
fi
for block in "$@"; do
  if ! declare -F "block_$block" > /dev/null; then
    echo "error: no block $block (blocks: 1-9)" >&2
    exit 1
  fi
done
# A failing block (a run that fails, a report that refuses) is reported and the next block runs;
# the exit code is 1 if any block failed.  PYTHON (default python) runs the sweeps and reports.
restore_committed
failed=()
for block in "$@"; do
  echo "== block $block ($(date -u +%FT%TZ))"
  set +e
  (
    set -e
    BLOCK_FAILED=
    "block_$block"
    [ -z "$BLOCK_FAILED" ]
  )
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "== block $block FAILED (exit code $status)" >&2
    failed+=("$block")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed blocks: ${failed[*]}" >&2
  exit 1
fi

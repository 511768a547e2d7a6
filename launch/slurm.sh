#!/usr/bin/env bash
# Submits one `python -m hypert5.<module>` command as a multi-node SLURM GPU job.
#
# Writes an sbatch script to logs/slurm/ and submits it; srun starts the same
# command once per GPU on every node. One task per GPU, not per node, because
# jax.distributed.initialize() on SLURM reads SLURM_NTASKS/SLURM_PROCID for the
# process group and gives each task the GPU numbered SLURM_LOCALID
# (local_device_ids=[SLURM_LOCALID]): a single task per node would drive only
# GPU 0. So every task must see all the node's GPUs: no --gpus-per-task, and
# srun --gpu-bind=none.
# The code and its .venv are used in place: the repository must be on a file
# system the nodes share, with a venv holding a CUDA jax (`make venv`, then
# `.venv/bin/pip install -c constraints.txt "jax[cuda12]"`).
# A command preempted by SIGTERM saves its step and exits 75 (hypert5/cli.py); the
# job script then requeues the job (#SBATCH --requeue), which resumes from there.
# --dry-run prints the script and the commands instead.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/slurm.sh --nodes N --gpus-per-node G [options] -- python -m hypert5.MODULE [ARGS...]

Submits an sbatch job that runs the command once per GPU (N x G tasks).

Required:
  --nodes N            number of nodes
  --gpus-per-node G    GPUs per node (= tasks per node)
Options:
  --partition P        SLURM partition
  --time T             wall-clock limit, e.g. 24:00:00
  --account A          account to charge
  --job-name J         default: hypert5-MODULE
  --cpus-per-task C    CPU cores per task
  --sbatch OPTION      one more "#SBATCH OPTION" line, e.g. --sbatch=--qos=high
                       (repeatable)
  --repo DIR           repository to run in (default: the one holding this script)
  --venv DIR           virtual environment (default: REPO/.venv)
  --dry-run            print the sbatch script and commands instead of submitting
  -h, --help           this message

Logs: REPO/logs/JOBNAME-JOBID.out for the job, REPO/logs/JOBNAME-JOBID-TASK.log per task.

Example:
  launch/slurm.sh --nodes 2 --gpus-per-node 8 --partition gpu --time 12:00:00 -- \
    python -m hypert5.train --config=configs/tiny.py --workdir=/shared/runs/tiny \
    --config.mesh_shape='(8,2)' --config.mesh_axes="('data','model')"
EOF
}

die() {
  printf 'slurm.sh: %s\n' "$*" >&2
  printf "Run 'launch/slurm.sh --help' for usage.\n" >&2
  exit 2
}

# POSIX single quotes: the sbatch script's shell reads each word back verbatim.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_words() {
  local word sep=""
  for word in "$@"; do
    printf '%s' "$sep"
    quote "$word"
    sep=" "
  done
}

# Prints the command (quoted) under --dry-run, runs it otherwise.
run() {
  if [[ $dry_run == 1 ]]; then
    quote_words "$@"
    printf '\n'
  else
    "$@"
  fi
}

nodes="" gpus_per_node="" partition="" time_limit="" account="" job_name=""
cpus_per_task="" repo="" venv="" dry_run=0
extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes|--gpus-per-node|--partition|--time|--account|--job-name|--cpus-per-task|\
    --sbatch|--repo|--venv)
      # A value that looks like a flag is a forgotten value (only --sbatch
      # takes flags), e.g. "--partition --dry-run" must not submit.
      [[ $# -ge 2 && ($1 == --sbatch || $2 != -*) ]] || die "$1 needs a value"
      set -- "$1=$2" "${@:3}"
      continue ;;
    --nodes=*) nodes=${1#*=} ;;
    --gpus-per-node=*) gpus_per_node=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --job-name=*) job_name=${1#*=} ;;
    --cpus-per-task=*) cpus_per_task=${1#*=} ;;
    --sbatch=*) extra+=("${1#*=}") ;;
    --repo=*) repo=${1#*=} ;;
    --venv=*) venv=${1#*=} ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --)" ;;
  esac
  shift
done

[[ -n $nodes ]] || die "missing --nodes N"
[[ -n $gpus_per_node ]] || die "missing --gpus-per-node G"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$nodes'"
[[ $gpus_per_node =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, got '$gpus_per_node'"
[[ -z $cpus_per_task || $cpus_per_task =~ ^[1-9][0-9]*$ ]] ||
  die "--cpus-per-task must be a positive integer, got '$cpus_per_task'"
[[ $# -gt 0 ]] || die "missing the command after --, e.g. -- python -m hypert5.train ..."
if [[ $# -lt 3 || ! $1 =~ ^python3?$ || $2 != -m || ! $3 =~ ^hypert5\.[A-Za-z0-9_.]+$ ]]; then
  die "the command must be 'python -m hypert5.MODULE ...', got: $(quote_words "$@")"
fi
module=${3#hypert5.}
job_name=${job_name:-hypert5-${module//./-}}

# #SBATCH lines are not read by a shell: values cannot be quoted, so refuse
# whitespace rather than let sbatch split them.
for option in ${extra[@]+"${extra[@]}"}; do
  [[ $option == -* ]] || die "--sbatch takes an sbatch option such as --qos=high, got '$option'"
done
for value in "$partition" "$time_limit" "$account" "$job_name" ${extra[@]+"${extra[@]}"}; do
  [[ ! $value =~ [[:space:]] ]] || die "an #SBATCH value has whitespace: '$value'"
done

if [[ -z $repo ]]; then
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fi
[[ -d $repo ]] || die "--repo $repo is not a directory"
repo=$(cd "$repo" && pwd)
venv=${venv:-$repo/.venv}
if [[ $dry_run == 0 && ! -x $venv/bin/python ]]; then
  die "no virtual environment at $venv (run 'make venv' in $repo, then add jax[cuda12])"
fi

sbatch_script() {
  printf '#!/bin/bash\n'
  printf '#SBATCH --job-name=%s\n' "$job_name"
  printf '#SBATCH --nodes=%s\n' "$nodes"
  printf '#SBATCH --ntasks-per-node=%s\n' "$gpus_per_node"
  printf '#SBATCH --gpus-per-node=%s\n' "$gpus_per_node"
  [[ -z $cpus_per_task ]] || printf '#SBATCH --cpus-per-task=%s\n' "$cpus_per_task"
  [[ -z $partition ]] || printf '#SBATCH --partition=%s\n' "$partition"
  [[ -z $time_limit ]] || printf '#SBATCH --time=%s\n' "$time_limit"
  [[ -z $account ]] || printf '#SBATCH --account=%s\n' "$account"
  printf '#SBATCH --output=logs/%%x-%%j.out\n'
  printf '#SBATCH --requeue\n'
  local option
  for option in ${extra[@]+"${extra[@]}"}; do
    printf '#SBATCH %s\n' "$option"
  done
  cat <<EOF
# Written by launch/slurm.sh: one task per GPU; jax.distributed.initialize()
# takes its process group from SLURM and uses GPU number SLURM_LOCALID.
set -euo pipefail
cd $(quote "$repo")
export PATH=$(quote "$venv/bin"):"\$PATH" VIRTUAL_ENV=$(quote "$venv") PYTHONUNBUFFERED=1
set +e
srun --kill-on-bad-exit=1 --gpu-bind=none --output=logs/%x-%j-%t.log $(quote_words "$@")
status=\$?
set -e
# 75: the command was preempted (SIGTERM) after saving its step; the job goes back
# in the queue and the same command resumes from that step.
if [[ \$status == 75 ]]; then
  echo "preempted: requeueing job \$SLURM_JOB_ID; it resumes from its saved step" >&2
  scontrol requeue "\$SLURM_JOB_ID"
fi
exit \$status
EOF
}

script="$repo/logs/slurm/$job_name-$(date +%Y%m%d-%H%M%S).sbatch"
if [[ $dry_run == 1 ]]; then
  printf '# %s:\n' "$script"
  sbatch_script "$@"
  printf '# Then:\n'
else
  mkdir -p "$repo/logs/slurm"
  sbatch_script "$@" >"$script"
  printf 'slurm.sh: wrote %s\n' "$script" >&2
fi
# sbatch opens logs/... for --output before the script runs, so it must exist.
run mkdir -p "$repo/logs"
run sbatch --chdir="$repo" "$script"

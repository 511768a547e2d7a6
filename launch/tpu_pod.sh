#!/usr/bin/env bash
# Runs one `python -m hypert5.<module>` command on every worker of a TPU VM pod.
#
# Every worker runs the same command; inside hypert5, jax.distributed.initialize()
# finds its peers on a TPU pod by itself. Steps, each a `gcloud` call over all
# workers:
#   1. ship the code: a local repository's working tree (tracked files, edits
#      included) as a tarball, or a clone of a git URL;
#   2. set up .venv with `make venv` (the workers need make and python3-venv),
#      then add jax[tpu] (libtpu);
#   3. run the command, logging to <remote-dir>/logs/<module>-<time>-<host>.log.
# --dry-run prints these commands, exactly as they would run, instead.
set -euo pipefail

readonly LIBTPU_URL="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
readonly ARCHIVE_NAME="hypert5-src.tar.gz"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh --tpu NAME --zone ZONE [options] -- python -m hypert5.MODULE [ARGS...]

Runs the command on every worker of a TPU VM pod (gcloud ... ssh --worker=all).

Required:
  --tpu NAME          TPU VM name (gcloud compute tpus tpu-vm list)
  --zone ZONE         its zone, e.g. us-central2-b
Options:
  --project P         Google Cloud project (default: gcloud's configured one)
  --repo PATH|URL     code to run: a local git checkout, whose tracked files are
                      shipped as they are in the working tree (untracked files are
                      not: `git add` them), or a git URL cloned on every worker
                      (default: the checkout holding this script)
  --branch B          branch, tag or commit to ship or check out (default: the
                      working tree for a local path, the remote's HEAD for a URL)
  --remote-dir DIR    where the code lives on the workers (default: hypert5,
                      relative to the home directory)
  --skip-setup        reuse the code and .venv already on the workers
  --detach            start the command in the background (nohup) and return
  --dry-run           print the commands instead of running them
  -h, --help          this message

Example:
  launch/tpu_pod.sh --tpu my-v4-32 --zone us-central2-b -- \
    python -m hypert5.train --config=configs/tiny.py --workdir=gs://bucket/run1 \
    --config.mesh_shape='(4,4)' --config.mesh_axes="('data','model')"
EOF
}

die() {
  printf 'tpu_pod.sh: %s\n' "$*" >&2
  printf "Run 'launch/tpu_pod.sh --help' for usage.\n" >&2
  exit 2
}

# POSIX single quotes, not printf %q: the worker's login shell parses the
# string, and %q's $'...' form is not POSIX sh.
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

# A comment on the plan: part of the printout under --dry-run, progress otherwise.
step() {
  if [[ $dry_run == 1 ]]; then
    printf '# %s\n' "$*"
  else
    printf 'tpu_pod.sh: %s\n' "$*" >&2
  fi
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

tpu="" zone="" project="" repo="" branch="" remote_dir="hypert5"
skip_setup=0 detach=0 dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --tpu|--zone|--project|--repo|--branch|--remote-dir)
      # A value that looks like a flag is a forgotten value: "--tpu --dry-run"
      # must not run for real.
      [[ $# -ge 2 && $2 != -* ]] || die "$1 needs a value"
      case $1 in
        --tpu) tpu=$2 ;;
        --zone) zone=$2 ;;
        --project) project=$2 ;;
        --repo) repo=$2 ;;
        --branch) branch=$2 ;;
        --remote-dir) remote_dir=$2 ;;
      esac
      shift 2 ;;
    --tpu=*) tpu=${1#*=}; shift ;;
    --zone=*) zone=${1#*=}; shift ;;
    --project=*) project=${1#*=}; shift ;;
    --repo=*) repo=${1#*=}; shift ;;
    --branch=*) branch=${1#*=}; shift ;;
    --remote-dir=*) remote_dir=${1#*=}; shift ;;
    --skip-setup) skip_setup=1; shift ;;
    --detach) detach=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (the command goes after --)" ;;
  esac
done

[[ -n $tpu ]] || die "missing --tpu NAME"
[[ -n $zone ]] || die "missing --zone ZONE"
[[ $# -gt 0 ]] || die "missing the command after --, e.g. -- python -m hypert5.train ..."
if [[ $# -lt 3 || ! $1 =~ ^python3?$ || $2 != -m || ! $3 =~ ^hypert5\.[A-Za-z0-9_.]+$ ]]; then
  die "the command must be 'python -m hypert5.MODULE ...', got: $(quote_words "$@")"
fi
[[ -n $remote_dir ]] || die "--remote-dir is empty"
module=${3#hypert5.}
log="logs/${module}-$(date +%Y%m%d-%H%M%S)-\$(hostname).log"

if [[ -z $repo ]]; then
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fi

where=("--zone=$zone")
if [[ -n $project ]]; then
  where+=("--project=$project")
fi

ssh_all() {  # ssh_all SCRIPT [ARGS...]: bash -c SCRIPT on every worker.
  local script=$1
  shift
  run gcloud compute tpus tpu-vm ssh "$tpu" "${where[@]}" --worker=all \
    --command "$(quote_words bash -c "$script" hypert5 "$@")"
}

rdir=$(quote "$remote_dir")
if [[ $skip_setup == 0 ]]; then
  if [[ -d $repo ]]; then
    # Ship a local checkout: git archive of a stash-like commit of the working
    # tree, which holds uncommitted edits to tracked files and touches no ref.
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || die "--repo $repo is not a git checkout"
    if [[ -n $branch ]]; then
      ref=$branch
    else
      ref=$(git -C "$repo" stash create)
      ref=${ref:-HEAD}
      untracked=$(git -C "$repo" ls-files --others --exclude-standard | wc -l)
      if [[ $untracked -gt 0 ]]; then
        printf 'tpu_pod.sh: warning: %d untracked files are not shipped (git add them)\n' \
          "$untracked" >&2
      fi
    fi
    git -C "$repo" rev-parse --verify --quiet "$ref^{commit}" >/dev/null || die "no commit '$ref' in $repo"
    archive="${TMPDIR:-/tmp}/hypert5-src-$$.tar.gz"
    if [[ $dry_run == 0 ]]; then
      trap 'rm -f "$archive"' EXIT
    fi
    step '1. ship the code'
    run git -C "$repo" archive --format=tar.gz --output="$archive" "$ref"
    run gcloud compute tpus tpu-vm scp "$archive" "$tpu:$ARCHIVE_NAME" "${where[@]}" --worker=all
    fetch="mkdir -p $rdir; tar -xzf \"\$HOME\"/$ARCHIVE_NAME -C $rdir; rm -f \"\$HOME\"/$ARCHIVE_NAME"
  else
    [[ $repo == *:* ]] || die "--repo $repo is neither a directory nor a git URL"
    step '1. clone the code on every worker'
    # Statements joined by ";", not "&&": set -e ignores failures inside && lists.
    fetch="test -d $rdir/.git || git clone --quiet --no-checkout $(quote "$repo") $rdir;"
    fetch+=" git -C $rdir fetch --quiet origin $(quote "${branch:-HEAD}");"
    fetch+=" git -C $rdir checkout --quiet --force FETCH_HEAD"
  fi
  step '2. set up .venv on every worker'
  # jax[tpu] under the repo's constraints, so libtpu matches the pinned jax.
  ssh_all "set -euo pipefail; $fetch; cd $rdir; make venv;\
 .venv/bin/python -m pip install -q -c constraints.txt \"jax[tpu]\" -f $LIBTPU_URL"
fi

# The command arrives as bash -c's positional parameters, quoted word by word,
# so "$@" on the worker is exactly the argv given here.
start="set -euo pipefail; cd $rdir; mkdir -p logs; log=\"$log\";\
 export PATH=\"\$PWD/.venv/bin:\$PATH\" VIRTUAL_ENV=\"\$PWD/.venv\" PYTHONUNBUFFERED=1;\
 echo \"\$(hostname): logging to \$PWD/\$log\" >&2;"
if [[ $detach == 1 ]]; then
  start+=" nohup \"\$@\" >\"\$log\" 2>&1 </dev/null &"
else
  start+=" \"\$@\" 2>&1 | tee \"\$log\""
fi
step '3. run the command on every worker'
status=0
ssh_all "$start" "$@" || status=$?
if [[ $status == 75 ]]; then
  # hypert5's commands exit 75 when SIGTERM stopped them after saving their step.
  printf 'tpu_pod.sh: the run was preempted and saved its step; run this same launch command again to resume (a TPU VM has no scheduler to requeue it)\n' >&2
fi
exit "$status"

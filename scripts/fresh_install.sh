#!/usr/bin/env bash
# The README's two set-up commands as a newcomer meets them: a clean clone, a fresh venv, an
# empty home directory for the run; prints each step's wall and CPU time, whether pip printed a
# backtracking notice, the date and the machine load. The test suite itself is not run (the
# install of its extras is timed).
#   scripts/fresh_install.sh [REPO] [WORKDIR]      # REPO: a path or URL git can clone (default: this repo)
#   PIP_ARGS="--no-cache-dir" scripts/fresh_install.sh   # also without pip's download cache
#   REF=76dc9e7 CONSTRAINTS= INSTALL_ONLY=1 scripts/fresh_install.sh   # an older commit, plain `pip install -e .`
#   PRE_TORCH=2.14.1 CONSTRAINTS= INSTALL_ONLY=1 scripts/fresh_install.sh  # another torch first: is it kept?
set -euo pipefail
repo="${1:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}"
work="${2:-$(mktemp -d /tmp/tinkerplug-fresh.XXXXXX)}"
rm -rf "$work/clone" "$work/venv" "$work/home"
mkdir -p "$work/home"
git clone -q "$repo" "$work/clone"
[ -n "${REF:-}" ] && git -C "$work/clone" checkout -q "$REF"
constraints="${CONSTRAINTS-constraints.txt}"  # empty: install without a constraints file
python3 -m venv "$work/venv"
cd "$work/clone"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); cpus: $(nproc); commit: $(git rev-parse --short HEAD); $("$work/venv/bin/pip" --version | cut -d' ' -f1-2)"

step() {  # step NAME COMMAND...: time it, keep its log, report notices
  local name="$1"; shift
  local load; load="$(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f '%e %U %S' -o "$work/$name.time" "$@" > "$work/$name.log" 2>&1 || {
    echo "$name: FAILED (log: $work/$name.log)"; tail -5 "$work/$name.log"; exit 1; }
  read -r wall user sys < "$work/$name.time"
  local notices; notices="$(grep -c -i -E 'taking longer than usual|looking at multiple versions' "$work/$name.log" || true)"
  echo "$name: ${wall} s wall, ${user} s user + ${sys} s sys CPU; load at start ${load}; backtracking notices: ${notices}"
}

torch_version() { "$work/venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none; }
if [ -n "${PRE_TORCH:-}" ]; then  # a user's own torch, installed before tinkerplug
  step pre-torch "$work/venv/bin/pip" install "torch==$PRE_TORCH"
  echo "torch before: $(torch_version)"
fi
# README command 1: set up, then the quickstart on the local backend (empty home: no caches)
step install "$work/venv/bin/pip" install ${PIP_ARGS:-} ${constraints:+-c "$constraints"} -e .
echo "torch after install: $(torch_version)"
[ -n "${INSTALL_ONLY:-}" ] && exit 0
step quickstart env HOME="$work/home" HF_HUB_OFFLINE=1 "$work/venv/bin/tinkerplug" run examples/quickstart/config.toml -q
tail -1 "$work/quickstart.log"
# README command 2's set-up (the tests' extras)
step install-dev "$work/venv/bin/pip" install ${PIP_ARGS:-} ${constraints:+-c "$constraints"} -e '.[dev]'
step pip-check "$work/venv/bin/pip" check
echo "torch: $("$work/venv/bin/python" -c 'import torch; print(torch.__version__)'); venv: $(du -sh "$work/venv" | cut -f1); load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

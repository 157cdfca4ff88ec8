#!/usr/bin/env bash
# How long `make test` and `make run` take on a fresh machine, measured the way CI runs them:
#
#     bash benchmarks/clean_clone.sh test    # target: the suite within 10 minutes (pytest's own time)
#     bash benchmarks/clean_clone.sh run     # target: `make run` within 20 minutes, install excluded
#
# A clean clone of this repository's HEAD beside it (../colorray-clean-clone, or $CLONE; beside,
# so that ../shared resolves as in CI), installed by `make venv` with an empty HOME (pip's
# download cache kept: $PIP_CACHE_DIR, else ~/.cache/pip), then `.ci/run` (an empty HOME, no Ray
# before, none left after) or `make run` (an empty HOME). It prints the CPU kind, the machine's
# speed before and after (the CPU seconds of 5 million iterations of a Python loop, and of a
# fresh interpreter importing torch, Ray Train and MLflow: these machines drift by a third and
# more from hour to hour, so compare two versions of the code within the same hour), the
# install's and the command's wall time, the machine's CPU time during the command, and pytest's
# summary line. Commit first: the clone holds HEAD, not the working tree.
# The clone stays for a look; the next run replaces it (only a folder this script made).
set -euo pipefail

what=${1:-test}
case "$what" in
    test | run) ;;
    *) echo "usage: $0 [test|run]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${CLONE:-$(dirname "$root")/colorray-clean-clone}
mark=.git/colorray-clean-clone  # inside the clone's git folder, never in its work tree
if [ -e "$dest" ]; then
    if [ ! -e "$dest/$mark" ]; then
        echo "$0: $dest exists and this script did not make it; move it away or set CLONE=another/folder" >&2
        exit 1
    fi
    rm -rf "$dest"
fi
git clone -q "$root" "$dest"
touch "$dest/$mark"
cd "$dest"

yardstick() {
    python3 -c '
import time
t = time.process_time()
s = 0
for i in range(5_000_000):
    s += i
print(f"{time.process_time() - t:.2f} s")'
}
# The suite's own kind of work: a fresh interpreter importing torch, Ray Train and MLflow (what
# most of its processes start with), CPU seconds, the median of three; after the install.
imports() {
    for _ in 1 2 3; do
        .venv/bin/python -W ignore -c 'import torch, ray.train, mlflow, resource
r = resource.getrusage(resource.RUSAGE_SELF)
print(f"{r.ru_utime + r.ru_stime:.1f}")'
    done | sort -n | sed -n 2p | sed 's/$/ CPU-s/'
}
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }  # user nice system irq softirq
minutes() { printf '%d min %02d s' $(($1 / 60)) $(($1 % 60)); }

flags=$(lscpu | grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*\|avx2' | sort -u | tr '\n' ' ')
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; ${flags:-no avx2/avx512/amx}"
echo "code: $(git rev-parse --short HEAD) in $dest"
echo "yardstick before: $(yardstick)"

export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip}
log=$(mktemp)
home=$(mktemp -d)
start=$(date +%s)
if ! HOME="$home" make venv >"$log" 2>&1; then
    tail -n 30 "$log"
    echo "$0: the install failed (log: $log)" >&2
    exit 1
fi
installed=$(date +%s)
rm -rf "$home"
echo "install: $(minutes $((installed - start)))"
echo "imports before: $(imports)"

ticks0=$(busy_ticks)
status=0
if [ "$what" = test ]; then
    .ci/run >"$log" 2>&1 || status=$?
else
    home=$(mktemp -d)
    HOME="$home" make run >"$log" 2>&1 || status=$?
    rm -rf "$home"
fi
end=$(date +%s)
ticks1=$(busy_ticks)
tail -n 3 "$log"
echo "make $what: $(minutes $((end - installed))) (exit $status; $(minutes $((end - start))) with the install);" \
     "machine CPU $(((ticks1 - ticks0) / $(getconf CLK_TCK))) s; log: $log"
echo "yardstick after: $(yardstick)"
echo "imports after: $(imports)"
exit $status

#!/usr/bin/env bash
# Fresh clone of the repository at $1 (default: here) -> `make demo` -> first stored part,
# with timestamps (pip cache warm). Usage: bench/explore/demo_first_part.sh [REPO] > log
set -u
rm -rf /tmp/demo-clone && git clone -q "$(realpath "${1:-.}")" /tmp/demo-clone && cd /tmp/demo-clone
echo "commit $(git rev-parse HEAD)"
t0=$(date +%s.%N); echo "start $(date -Is) load $(cut -d' ' -f1 /proc/loadavg)"
setsid make demo > demo.log 2>&1 &
pid=$!
setup_done=""
while true; do
  if [ -z "$setup_done" ] && [ -f .venv/.installed ]; then setup_done=$(date +%s.%N); echo "setup done +$(echo "$setup_done - $t0" | bc) s load $(cut -d' ' -f1 /proc/loadavg)"; fi
  if [ -f var/inspection.db ]; then
    n=$(sqlite3 var/inspection.db "select count(*) from inspection" 2>/dev/null || echo 0)
    if [ "${n:-0}" -gt 0 ]; then t2=$(date +%s.%N); echo "first part +$(echo "$t2 - $t0" | bc) s load $(cut -d' ' -f1 /proc/loadavg)"; break; fi
  fi
  if ! kill -0 $pid 2>/dev/null; then echo "demo exited"; tail -20 demo.log; break; fi
  sleep 1
done
kill -TERM -- -"$pid" 2>/dev/null; sleep 15; kill -KILL -- -"$pid" 2>/dev/null  # the whole demo: make and its children
echo "end $(date -Is)"

#!/usr/bin/env bash
# The price every container pays when the hook is installed but the container
# asks for no TPM: the runtime forks and execs the hook, which reads the
# state and exits. Reports the median wall time of spawn-to-exit over many
# runs, and the peak RSS of one run (GNU time, installed if missing).
set -euo pipefail

HOOK=${HOOK:-target/release/oci-tpm-hook}
RUNS=${RUNS:-2000}

[ -x /usr/bin/time ] || { echo "installing time (GNU time, for peak RSS)"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/state.json" <<'JSON'
{"ociVersion":"1.0.2","id":"bench000000000000000000000000000000000000000000000000000000000000","status":"creating","pid":1,"bundle":"/nonexistent","annotations":{"io.podman.annotations.autoremove":"TRUE","io.container.manager":"libpod","org.opencontainers.image.stopSignal":"15"}}
JSON

python3 - "$HOOK" "$work/state.json" "$RUNS" <<'PY'
import os, statistics, subprocess, sys, time
hook, state_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = open(state_path, "rb").read()
def once(cmd):
    t = time.perf_counter_ns()
    p = subprocess.run(cmd, input=state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter_ns() - t
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {p.stderr.decode()}")
    return dt
for _ in range(50):
    once([hook]); once(["/bin/true"])
hook_ns = [once([hook]) for _ in range(runs)]
true_ns = [once(["/bin/true"]) for _ in range(runs)]
m, b = statistics.median(hook_ns), statistics.median(true_ns)
print(f"hook fast path (no request): median {m/1000:.0f} us spawn-to-exit over {runs} runs "
      f"(/bin/true on the same machine: {b/1000:.0f} us; the hook's own share ~{(m-b)/1000:.0f} us)")
PY
rss_kb=$(/usr/bin/time -f %M "$HOOK" <"$work/state.json" 2>&1 >/dev/null | tail -1)
echo "hook fast path: peak RSS ${rss_kb} KiB, binary $(( $(stat -c %s "$HOOK") / 1024 )) KiB"

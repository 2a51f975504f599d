# Shared by the benchmark scripts that run the real binaries (sourced, not
# run): process bookkeeping and a coordinator with a data directory.
# Needs `bin` (the binaries' directory) and `work` (a scratch directory).

pids=()
# The pids are /usr/bin/time's: signal the processes it measures.
stop() { for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# Certificates for one worker, then a coordinator (tenant acme, token
# s3cret) under /usr/bin/time (peak RSS in $work/coordinator.maxrss), its
# metrics on port $1. Sets `addr` and `coordinator_pid`.
start_coordinator() {
    $bin/nexus-coordinator init-certs --dir "$work/certs" --workers 1 >/dev/null
    /usr/bin/time -f %M -o "$work/coordinator.maxrss" $bin/nexus-coordinator run --listen 127.0.0.1:0 \
        --certs "$work/certs" --tenant acme=s3cret --print-addr --data-dir "$work/data" \
        --metrics "127.0.0.1:$1" >"$work/addr" 2>"$work/coordinator.log" &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
    addr=$(head -1 "$work/addr")
    coordinator_pid=$(pgrep -P "${pids[0]}")
}

# The lab's polling loop and its pacing, shared by scenarios (lib.sh sources
# this file) and the cluster fixture. Sourced, not executed.
# shellcheck shell=bash

# pause_after START: sleep before the next try of a poll whose last try began
# at START (a copy of $EPOCHREALTIME): half a second, or twice as long as that
# try took when that is more, at most 10 s. The guest has one emulated CPU,
# and one try of kubectl, crictl, podman or docker costs it a second or more:
# polling every half second would take most of the CPU from the very thing
# being waited for (a pod starting, the API server coming up).
pause_after() {
    local took_us pause_us
    took_us=$(( ${EPOCHREALTIME/./} - ${1/./} ))
    pause_us=$(( took_us * 2 ))
    (( pause_us >= 500000 )) || pause_us=500000
    (( pause_us <= 10000000 )) || pause_us=10000000
    sleep "$(( pause_us / 1000000 )).$(printf '%06d' $(( pause_us % 1000000 )))"
}

# poll SECONDS ALIVE CMD...: try CMD until it succeeds (status 0), paced by
# pause_after. Status 1 once SECONDS have passed; status 2 as soon as the
# command line ALIVE (split on spaces: "kill -0 PID", a function and its
# argument, or "true") fails after a try, that is, what CMD waits for has gone.
poll() {
    local deadline=$(( EPOCHSECONDS + $1 )) alive="$2" try
    shift 2
    while :; do
        try=$EPOCHREALTIME
        "$@" >/dev/null 2>&1 && return 0
        # shellcheck disable=SC2086 # ALIVE is a command line
        $alive >/dev/null 2>&1 || return 2
        [[ $EPOCHSECONDS -ge $deadline ]] && return 1
        pause_after "$try"
    done
}

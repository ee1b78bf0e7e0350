# Shared by the bench scripts (sourced): medians, quartiles and verdicts over samples.
# Samples are numbers separated by spaces or newlines, on standard input or in an argument.

# quantile Q: the Q-quantile (0..1) of the samples on stdin, interpolated between ranks.
quantile() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk -v q="$1" '
        {a[NR] = $1}
        END {
            if (NR == 0) exit 1
            p = 1 + (NR - 1) * q; i = int(p); v = a[i]
            if (i < NR) v += (p - i) * (a[i + 1] - a[i])
            print v
        }'
}
median() { quantile 0.5; }

# verdict "KEEL SAMPLES" "PEER SAMPLES" FACTOR: is FACTOR x keel's time at most the peer's?
# Lower is better (times). Says "met" only when it holds beyond the run-to-run spread
# (FACTOR x keel's 75th percentile below the peer's 25th), "not met" when it fails beyond it
# (FACTOR x keel's 25th percentile above the peer's 75th), and "tie" when the middle halves
# overlap: the difference is within the noise of this run.
verdict() {
    local k25 k75 p25 p75
    k25=$(quantile 0.25 <<<"$1") k75=$(quantile 0.75 <<<"$1")
    p25=$(quantile 0.25 <<<"$2") p75=$(quantile 0.75 <<<"$2")
    awk -v k25="$k25" -v k75="$k75" -v p25="$p25" -v p75="$p75" -v f="$3" 'BEGIN {
        if (f * k75 < p25) print "met"
        else if (f * k25 > p75) print "not met"
        else print "tie"
    }'
}

# combine VERDICT...: "met" if all are, "not met" if any is, else "tie".
combine() {
    local v out=met
    for v in "$@"; do
        case $v in
            "not met") echo "not met"; return ;;
            tie) out=tie ;;
        esac
    done
    echo "$out"
}

# spread "SAMPLES": "25th-75th percentile" as text, for reports.
spread() {
    printf '%s-%s' "$(quantile 0.25 <<<"$1" | awk '{printf "%.3f", $1}')" "$(quantile 0.75 <<<"$1" | awk '{printf "%.3f", $1}')"
}

# release_hugetlb: after unmounting the v1 hugetlb hierarchy a bench mounted for crun, wait
# until hugetlb is back in the cgroup2 mount. The kernel frees the hierarchy once its last
# dying cgroup is gone, and checks only at an unmount: if it lingers, mount and unmount it
# once more. Says so if it never comes back (the tests then find hugetlb nowhere).
release_hugetlb() {
    local waited=0 kick
    until [[ $(cat /sys/fs/cgroup/unified/cgroup.controllers) == *hugetlb* ]] || ((waited >= 60)); do
        sleep 0.5
        if ((++waited % 10 == 0)); then
            kick=$(mktemp -d /tmp/keel-bench-hugetlb-XXXXXX)
            mount -t cgroup -o hugetlb cgroup "$kick" 2>/dev/null && umount "$kick"
            rmdir "$kick"
        fi
    done
    [[ $(cat /sys/fs/cgroup/unified/cgroup.controllers) == *hugetlb* ]] ||
        echo "bench: hugetlb has not returned to cgroup2: mount and unmount a v1 hugetlb hierarchy to release it" >&2
    if [[ -n ${hugetlb_reenable:-} ]]; then
        echo +hugetlb >/sys/fs/cgroup/unified/cgroup.subtree_control 2>/dev/null || true
    fi
}

# take_hugetlb_from_cgroup2: a v1 hugetlb hierarchy can be mounted only while no cgroup2
# subtree has hugetlb enabled; if the cgroup2 root enables it for its children (another
# program did), turn that off for the run and set hugetlb_reenable (release_hugetlb turns
# it back on).
hugetlb_reenable=
take_hugetlb_from_cgroup2() {
    local control=/sys/fs/cgroup/unified/cgroup.subtree_control
    if [[ -f $control && $(cat "$control") == *hugetlb* ]]; then
        echo -hugetlb >"$control" && hugetlb_reenable=1
    fi
}

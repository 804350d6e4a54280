# Helpers sourced before every /test.sh in the slipway test guest.

# result KEY VALUE: report a value to the harness (GuestOutput::result).
result() {
    echo "SLIPWAY-RESULT $1=$2"
}

# ready [WORD]: tell a waiting host (RunningGuest::wait_for_line) to proceed.
ready() {
    echo "SLIPWAY-READY${1:+ $1}"
}

# dhcp IFACE [PREFIX]: get a lease on IFACE with busybox udhcpc, configure the
# interface, default route and /etc/resolv.conf from it, and report the lease
# as SLIPWAY-RESULT lines (keys prefixed with PREFIX, e.g. "eth1_").
# Returns non-zero if no lease was obtained.
dhcp() {
    ip link set "$1" up
    SLIPWAY_PREFIX="$2" udhcpc -i "$1" -s /lib/slipway/udhcpc.sh -f -q -n -t 5 -T 2 \
        -O mtu -O search -O hostname -O domain -O dns -O router
}

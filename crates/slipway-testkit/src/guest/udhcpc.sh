#!/bin/sh
# busybox udhcpc hook of the slipway test guest: applies the lease and reports
# every lease variable as "SLIPWAY-RESULT <prefix><name>=<value>".
p="$SLIPWAY_PREFIX"
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" ${broadcast:+broadcast $broadcast}
    if [ -n "$mtu" ]; then ip link set "$interface" mtu "$mtu"; fi
    for r in $router; do
        ip route add default via "$r" dev "$interface" 2>/dev/null && break
    done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    if [ -n "$search" ]; then echo "search $search" >> /etc/resolv.conf; fi
    for v in ip mask subnet broadcast router dns domain search hostname mtu \
             boot_file siaddr serverid lease; do
        eval "echo \"SLIPWAY-RESULT ${p}$v=\$$v\""
    done
    echo "SLIPWAY-RESULT ${p}dhcp=$1"
    ;;
leasefail|nak)
    echo "SLIPWAY-RESULT ${p}dhcp=$1"
    ;;
esac
exit 0

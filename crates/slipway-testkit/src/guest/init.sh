#!/bin/busybox sh
# /init of the slipway test guest: prepare a minimal system, run the test's
# /test.sh, report its exit status, power off. Every line the test should see
# goes to the serial console (ttyS0), which the harness reads.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /var/run /etc
: > /etc/resolv.conf
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
# NIC driver modules, in dependency order (the image has no modules.dep).
for m in @MODULES@; do
    if [ -e "/lib/modules/$m.ko" ]; then
        insmod "/lib/modules/$m.ko" || echo "SLIPWAY-INIT insmod $m failed"
    fi
done
ip link set lo up
if [ -e /test.sh ]; then
    sh -c '. /lib/slipway/lib.sh; . /test.sh'
    status=$?
else
    echo "SLIPWAY-INIT no /test.sh in the initramfs"
    status=127
fi
echo "SLIPWAY-DONE status=$status"
sync
poweroff -f

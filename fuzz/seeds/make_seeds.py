#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (run from this directory).

Seeds are small, valid conversations so the fuzzer starts deep inside each
parser instead of at its first length check. Multi-message targets take
records: a 2-byte big-endian length, then the message (see src/lib.rs).
"""
import os
import shutil
import struct

GUEST_MAC = bytes.fromhex("525400123456")
GW_MAC = bytes.fromhex("52550a000202")
BCAST = b"\xff" * 6
GUEST, GW, DNS = bytes([10, 0, 2, 15]), bytes([10, 0, 2, 2]), bytes([10, 0, 2, 3])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, ethertype, payload):
    return dst + GUEST_MAC + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, proto, payload, frag=0x4000, ident=1):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(src, dst, sport, dport, payload):
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = csum(pseudo + hdr + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + payload


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b""):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def dhcp(msg_type, xid=0x1234, requested=None):
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4)
    bootp += GUEST_MAC + b"\0" * 10 + b"\0" * 64 + b"\0" * 128 + bytes([99, 130, 83, 99])
    opts = bytes([53, 1, msg_type])
    if requested:
        opts += bytes([50, 4]) + requested + bytes([54, 4]) + GW
    opts += bytes([12, 5]) + b"guest" + bytes([55, 4, 1, 3, 6, 15, 255])
    return bootp + opts


def dns_query(name, qtype=1, ident=0xBEEF):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def arp_request(target):
    return eth(BCAST, 0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + GUEST_MAC + GUEST + b"\0" * 6 + target)


def records(*msgs):
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


def write(target, name, data):
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)


ZERO = bytes(4)
discover = dhcp(1)
request = dhcp(3, requested=GUEST)
syn = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 6, tcp(GUEST, GW, 40000, 80, 1000, 0, 0x02)))
ack = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 6, tcp(GUEST, GW, 40000, 80, 1001, 1, 0x10)))
data = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 6, tcp(GUEST, GW, 40000, 80, 1001, 1, 0x18, b"GET / HTTP/1.0\r\n\r\n")))
fin = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 6, tcp(GUEST, GW, 40000, 80, 1019, 1, 0x11)))
outside_syn = eth(GW_MAC, 0x0800, ipv4(GUEST, bytes([192, 0, 2, 1]), 6, tcp(GUEST, bytes([192, 0, 2, 1]), 40001, 443, 5, 0, 0x02)))
dhcp_frames = [
    eth(BCAST, 0x0800, ipv4(ZERO, b"\xff" * 4, 17, udp(ZERO, b"\xff" * 4, 68, 67, discover))),
    eth(BCAST, 0x0800, ipv4(ZERO, b"\xff" * 4, 17, udp(ZERO, b"\xff" * 4, 68, 67, request))),
]
dns_frame = eth(GW_MAC, 0x0800, ipv4(GUEST, DNS, 17, udp(GUEST, DNS, 33333, 53, dns_query("example.com"))))
udp_out = eth(GW_MAC, 0x0800, ipv4(GUEST, bytes([192, 0, 2, 9]), 17, udp(GUEST, bytes([192, 0, 2, 9]), 5000, 9, b"hello")))
udp_host = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 17, udp(GUEST, GW, 5001, 7, b"echo?")))
icmp_payload = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"ping"
icmp_payload = icmp_payload[:2] + struct.pack("!H", csum(icmp_payload)) + icmp_payload[4:]
ping = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 1, icmp_payload))
frag = eth(GW_MAC, 0x0800, ipv4(GUEST, GW, 17, udp(GUEST, GW, 5002, 7, b"x" * 16)[:8], frag=0x2000, ident=9))

write("stack_frames", "dhcp", records(*dhcp_frames))
write("stack_frames", "arp-ping", records(arp_request(GW), ping))
write("stack_frames", "tcp-session", records(arp_request(GW), syn, ack, data, fin))
write("stack_frames", "tcp-outside", records(outside_syn))
write("stack_frames", "dns-udp", records(dns_frame, udp_out, udp_host))
write("stack_frames", "fragment", records(frag))

stream = b"".join(struct.pack("!I", len(f)) + f for f in [arp_request(GW), ping, dns_frame])
write("framing", "stream", b"\x00" + stream)
write("framing", "stream-split", b"\x06" + stream)
write("framing", "dgram", b"\x01" + records(arp_request(GW), ping))

write("dhcp_request", "discover-request", records(discover, request))
write("dhcp_request", "release", records(discover, request, dhcp(7, requested=GUEST)))
write("dhcp_request", "decline", records(discover, dhcp(4, requested=GUEST), discover))

write("dns_message", "a", dns_query("example.com"))
write("dns_message", "local", dns_query("vm1.example.test"))
write("dns_message", "ptr", dns_query("10.122.168.192.in-addr.arpa", qtype=12))
# A compression pointer in the question (relays must refuse loops).
write("dns_message", "pointer", struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x03abc\xc0\x0c" + struct.pack("!HH", 1, 1))

for i, text in enumerate([
    "",
    "net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15",
    "net=192.168.76.0/24,hostfwd=tcp::5022-:22,hostfwd=udp:127.0.0.1:6000-10.0.2.15:6000",
    "restrict=on,hostname=vm,domainname=example.test,dnssearch=a.test,dnssearch=b.test",
    "ipv4=on,ipv6=off,net=10.9.2.0/24\ntcp:5555::22",
]):
    write("netdev_options", "opts%d" % i, text.encode())

# passt(1)'s -t examples and libvirt's forms (slipway as passt).
for i, text in enumerate([
    "22", "22:23", "22,25", "22-80:32-90", "192.0.2.1/22", "192.0.2.1%eth0/22",
    "2000-5000,~3000-3010", "192.0.2.1/20-30,~25", "~20000-20010", "all", "none",
    "::1/8080",
]):
    write("passt_ports", "spec%d" % i, text.encode())

corpus = os.path.join("..", "..", "crates", "slipway-netxml", "tests", "corpus")
for name in ["default.xml", "dns-full.xml", "bridge-host.xml", "empty-ip.xml"]:
    os.makedirs("network_xml", exist_ok=True)
    shutil.copy(os.path.join(corpus, name), os.path.join("network_xml", name))

# slipway's OVN element in <metadata> (docs/multi-host.md).
write("network_xml", "ovn.xml", b"""<network><name>tenant</name><metadata>
<slipway:ovn xmlns:slipway='https://slipway.dev/xmlns/network/ovn/1' switch='tenant-sw' nb='unix:/run/ovn/ovnnb_db.sock,tcp:[2001:db8::1]:6641' subnet='10.10.0.0/24'>
<slipway:address mac='52:54:00:0a:00:01' ip='10.10.0.11'/></slipway:ovn></metadata>
<forward mode='bridge'/><bridge name='br-int'/><virtualport type='openvswitch'/></network>
""")

# The interface kinds slipway-guestif reads (one <domain>, every type).
os.makedirs("interface_xml", exist_ok=True)
write("interface_xml", "all-types.xml", b"""<domain><devices>
<interface type='user'><mac address='52:54:00:00:00:01'/><ip address='10.0.5.0' prefix='24'/>
<portForward proto='tcp' address='127.0.0.1'><range start='2022' end='2030' to='22'/><range start='2025' exclude='yes'/></portForward></interface>
<interface type='network'><source network='default'/><model type='virtio'/><mtu size='9000'/><link state='down'/></interface>
<interface type='bridge'><source bridge='br0'/><target dev='tap3'/></interface>
<interface type='ethernet'><target dev='t0' managed='no'/><script path='/up'/><downscript path='/down'/></interface>
<interface type='mcast'><source address='230.0.0.1' port='5558'/></interface>
<interface type='udp'><source address='127.0.0.1' port='1'><local address='127.0.0.1' port='2'/></source></interface>
<interface type='vhostuser'><source type='unix' path='/s' mode='client'/><model type='virtio'/></interface>
</devices></domain>
""")
# Open vSwitch: virtualport, vlan, portgroup, and the domain's uuid (vm-id).
write("interface_xml", "openvswitch.xml", b"""<domain><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid><devices>
<interface type='network'><source network='ovs' portgroup='blue'/><virtualport><parameters interfaceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/></virtualport>
<vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='43'/></vlan></interface>
<interface type='bridge'><source bridge='ovsbr0'/><virtualport type='openvswitch'><parameters profileid='gold'/></virtualport><vlan><tag id='7'/></vlan></interface>
</devices></domain>
""")

# TFTP: RRQ (with options) then ACKs; an empty record is a timeout.
def rrq(name, opts=()):
    body = struct.pack("!H", 1) + name.encode() + b"\0octet\0"
    for k, v in opts:
        body += k.encode() + b"\0" + v.encode() + b"\0"
    return body


def ack(block):
    return struct.pack("!HH", 4, block)


write("tftp_request", "small", records(rrq("a"), ack(1)))
write("tftp_request", "big-blksize", records(rrq("sub/big", [("blksize", "1024"), ("tsize", "0")]), ack(0), ack(1), ack(2)))
write("tftp_request", "timeouts", records(rrq("sub/big"), b"", ack(1), b"", b"", ack(2), ack(3), ack(4)))
write("tftp_request", "escape", records(rrq("escape"), ack(1)))

# IPv6: neighbour discovery, router solicitation, echo, DHCPv6, TCP.
import ipaddress


def ip6(a):
    return ipaddress.IPv6Address(a).packed


G6_LL, G6 = ip6("fe80::5054:ff:fe12:3456"), ip6("fec0::15")
R6_LL, H6, D6 = ip6("fe80::2"), ip6("fec0::2"), ip6("fec0::3")


def l4sum6(src, dst, nh, seg):
    return csum(src + dst + struct.pack("!IxxxB", len(seg), nh) + seg)


def ipv6(src, dst, nh, seg, dst_mac=GW_MAC, hops=255):
    hdr = struct.pack("!IHBB", 6 << 28, len(seg), nh, hops) + src + dst
    return eth(dst_mac, 0x86DD, hdr + seg)


def icmp6(src, dst, typ, code, body, dst_mac=GW_MAC):
    seg = struct.pack("!BBH", typ, code, 0) + body
    c = l4sum6(src, dst, 58, seg)
    return ipv6(src, dst, 58, seg[:2] + struct.pack("!H", c) + seg[4:], dst_mac)


def udp6(src, dst, sport, dport, payload, dst_mac=GW_MAC):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = l4sum6(src, dst, 17, seg) or 0xFFFF
    return ipv6(src, dst, 17, seg[:6] + struct.pack("!H", c) + seg[8:], dst_mac, 64)


def tcp6_syn(src, dst, sport, dport):
    seg = struct.pack("!HHIIBBHHH", sport, dport, 7, 0, 5 << 4, 0x02, 64240, 0, 0)
    c = l4sum6(src, dst, 6, seg)
    return ipv6(src, dst, 6, seg[:16] + struct.pack("!H", c) + seg[18:], GW_MAC, 64)


MCAST_ALL_ROUTERS = bytes.fromhex("333300000002")
SOLICITED = bytes.fromhex("3333ff000002")
ns = icmp6(G6_LL, ip6("ff02::1:ff00:2"), 135, 0, b"\0" * 4 + R6_LL + bytes([1, 1]) + GUEST_MAC, SOLICITED)
rs = icmp6(G6_LL, ip6("ff02::2"), 133, 0, b"\0" * 4 + bytes([1, 1]) + GUEST_MAC, MCAST_ALL_ROUTERS)
echo6 = icmp6(G6, H6, 128, 0, struct.pack("!HH", 7, 1) + b"ping6")
info_req = bytes([11]) + b"\x12\x34\x56" + struct.pack("!HH", 1, 10) + struct.pack("!HH", 3, 1) + GUEST_MAC + struct.pack("!HHHH", 6, 4, 23, 24) + struct.pack("!HHH", 8, 2, 0)
dhcp6 = udp6(G6_LL, ip6("ff02::1:2"), 546, 547, info_req, bytes.fromhex("333300010002"))
write("stack_frames", "ipv6-nd", records(ns, rs, echo6))
write("stack_frames", "ipv6-dhcp-tcp", records(rs, dhcp6, tcp6_syn(G6, H6, 40000, 80)))
write("dhcpv6_request", "information-request", info_req)
write("dhcpv6_request", "solicit", bytes([1]) + info_req[1:])


# libvirt_rpc: a virsh-like session (first byte: the stream's piece size).
def rpc_call(proc_, serial, payload=b"", prog=0x20008086, kind=0):
    return struct.pack("!IIIiIII", 28 + len(payload), prog, 1, proc_, kind, serial, 0) + payload


def xdr_str(s):
    b = s.encode()
    return struct.pack("!I", len(b)) + b + b"\0" * (-len(b) % 4)


NET_XML = "<network><name>n</name><uuid>11111111-2222-3333-4444-555555555555</uuid><bridge name='virbr9'/><ip address='10.9.0.1' prefix='24'/></network>"
NET_REF = xdr_str("n") + bytes.fromhex("11111111222233334444555555555555")
session = b"".join([
    rpc_call(66, 1),
    rpc_call(60, 2, struct.pack("!i", 10)),
    rpc_call(1, 3, struct.pack("!I", 1) + xdr_str("network:///system") + struct.pack("!I", 0)),
    rpc_call(110, 4),
    rpc_call(313, 5, struct.pack("!iI", 0, 0)),
    rpc_call(41, 6, xdr_str(NET_XML)),
    rpc_call(283, 7, struct.pack("!iI", 1, 3)),
    rpc_call(46, 8, xdr_str("n")),
    rpc_call(43, 9, NET_REF + struct.pack("!I", 1)),
    rpc_call(291, 10, NET_REF + struct.pack("!IIi", 3, 2, -1) + xdr_str("<domain name='x.test'/>") + struct.pack("!I", 2)),
    rpc_call(39, 11, NET_REF),
    rpc_call(341, 12, NET_REF + struct.pack("!IiI", 0, 1, 0)),
    rpc_call(42, 13, NET_REF),
    rpc_call(49, 14, NET_REF),
    rpc_call(1, 0, prog=0x6B656570, kind=2),
    rpc_call(2, 15),
])
write("libvirt_rpc", "virsh-session", b"\xff" + session)
write("libvirt_rpc", "virsh-session-split", b"\x05" + session)

# The port API (404-410) as libvirt's QEMU driver and virsh use it.
PORT_UUID = bytes.fromhex("426d4b8608a2410a824c15a34137c1f8")
PORT_XML = ("<networkport><uuid>426d4b86-08a2-410a-824c-15a34137c1f8</uuid>"
            "<owner><name>g</name><uuid>5aa2201d-0bfa-4eea-a5be-c4314adaa94a</uuid></owner>"
            "<mac address='52:54:00:11:22:33'/></networkport>")
PORT_REF = NET_REF + PORT_UUID
ports = b"".join([
    rpc_call(66, 1),
    rpc_call(1, 2, struct.pack("!I", 1) + xdr_str("network:///system") + struct.pack("!I", 0)),
    rpc_call(41, 3, xdr_str(NET_XML)),
    rpc_call(39, 4, NET_REF),
    rpc_call(406, 5, NET_REF + xdr_str(PORT_XML) + struct.pack("!I", 0)),
    rpc_call(404, 6, NET_REF + struct.pack("!iI", 1, 0)),
    rpc_call(405, 7, NET_REF + PORT_UUID),
    rpc_call(408, 8, PORT_REF + struct.pack("!I", 2)
             + xdr_str("inbound.average") + struct.pack("!II", 2, 1000)
             + xdr_str("outbound.peak") + struct.pack("!I", 7) + xdr_str("7")
             + struct.pack("!I", 0)),
    rpc_call(407, 9, PORT_REF + struct.pack("!iI", 0, 0)),
    rpc_call(409, 10, PORT_REF + struct.pack("!I", 0)),
    rpc_call(410, 11, PORT_REF + struct.pack("!I", 0)),
    rpc_call(2, 12),
])
write("libvirt_rpc", "port-session", b"\xff" + ports)

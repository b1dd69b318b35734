// SPDX-License-Identifier: GPL-2.0
//
// pcap-filter expressions in the BPF program: libpcap compiles the expression
// to classic BPF (tracer/record/pcap.py), and the instructions arrive as
// X-macro lists in cflags, each instruction I(index, code, jt, jf, k):
//
//   PCAP_ETH_PROG   the program for DLT_EN10MB, run from the Ethernet header
//   PCAP_RAW_PROG   the program for DLT_RAW, run from the IP header (absent
//                   when the expression needs the link layer)
//
// Each I() expands to "if (pc == index) pc = step(...)" with constant
// operands, so the compiler keeps one small block per instruction; classic
// BPF only jumps forward, so the program is straight-line code for the
// verifier: no loop, no jump table.
//
// Which program runs depends on where the skb's headers are at the probe:
//   - a 14-byte Ethernet header at the mac header (received packets from the
//     driver on, sent packets from dev_queue_xmit on): the Ethernet program;
//   - else an IP header (sent packets in the IP layer, before the
//     neighbour adds the link layer): the raw program, from the network
//     header (or from data, where the receive path has not yet reset it);
//   - else (the socket layer: no header yet) the raw program over an IPv4
//     or IPv6 header and the ports made up from the skb's socket.
// A load past the made-up header's last byte, or of the packet's length
// there, makes the verdict unknown (traced, not marked) rather than no.
//
// The interpreter proper (pcap_run) needs only PCAP_READ(dst, size, addr),
// so tests/test_pcap_c.py compiles it with gcc and runs it on user memory.

#define PCAP_ACCEPT (-1)
#define PCAP_REJECT (-2)
#define PCAP_UNKNOWN (-3)

// Classic BPF opcodes (linux/filter.h, pcap/bpf.h).
#define PCAP_CLASS(c) ((c) & 0x07)
#define PCAP_SIZE(c) ((c) & 0x18)
#define PCAP_MODE(c) ((c) & 0xe0)
#define PCAP_OP(c) ((c) & 0xf0)
#define PCAP_SRC(c) ((c) & 0x08)
#define PCAP_RVAL(c) ((c) & 0x18)
#define PCAP_MISCOP(c) ((c) & 0xf8)

struct pcap_pkt {
    u64 base;      // kernel address of the first byte
    u32 caplen;    // bytes readable from base
    u32 wirelen;   // the packet's length from base
    u32 partial;   // a made-up header: reading past it (or the length) is unknown
};

struct pcap_vm {
    u32 A;
    u32 X;
    int pc;
    u32 M[16];
};

// One load: 0 and *out on success, else the verdict to return.
static __always_inline int pcap_load(const struct pcap_pkt *p, u32 off, u32 size, u32 *out)
{
    if (off > p->caplen || size > p->caplen - off)
        return p->partial ? PCAP_UNKNOWN : PCAP_REJECT;
    u8 b[4] = {};
    if (PCAP_READ(b, size & 7, p->base + off) < 0)
        return PCAP_UNKNOWN;
    if (size == 4)
        *out = (u32)b[0] << 24 | (u32)b[1] << 16 | (u32)b[2] << 8 | b[3];
    else if (size == 2)
        *out = (u32)b[0] << 8 | b[1];
    else
        *out = b[0];
    return 0;
}

static __always_inline u32 pcap_alu(u32 op, u32 a, u32 v)
{
    switch (op) {
    case 0x00: return a + v;                  // BPF_ADD
    case 0x10: return a - v;                  // BPF_SUB
    case 0x20: return a * v;                  // BPF_MUL
    case 0x30: return v ? a / v : 0;          // BPF_DIV (zero divisor: caught before)
    case 0x40: return a | v;                  // BPF_OR
    case 0x50: return a & v;                  // BPF_AND
    case 0x60: return a << (v & 31);          // BPF_LSH (x86's masking, as bpf_filter.c)
    case 0x70: return a >> (v & 31);          // BPF_RSH
    case 0x80: return -a;                     // BPF_NEG
    case 0x90: return v ? a % v : 0;          // BPF_MOD
    case 0xa0: return a ^ v;                  // BPF_XOR
    default: return a;
    }
}

// Executes instruction n; returns the next pc or a verdict.
static __always_inline int pcap_step(struct pcap_vm *vm, const struct pcap_pkt *p, int n,
                                     u32 code, u32 jt, u32 jf, u32 k)
{
    u32 v = 0;
    int err;
    switch (PCAP_CLASS(code)) {
    case 0x00:  // BPF_LD
    case 0x01:  // BPF_LDX
    {
        u32 size = PCAP_SIZE(code) == 0x00 ? 4 : PCAP_SIZE(code) == 0x08 ? 2 : 1;
        switch (PCAP_MODE(code)) {
        case 0x00: v = k; break;                                   // BPF_IMM
        case 0x20: if ((err = pcap_load(p, k, size, &v))) return err; break;       // ABS
        case 0x40: if ((err = pcap_load(p, vm->X + k, size, &v))) return err; break;  // IND
        case 0x60: v = vm->M[k & 15]; break;                       // BPF_MEM
        case 0x80:                                                 // BPF_LEN
            if (p->partial)
                return PCAP_UNKNOWN;
            v = p->wirelen;
            break;
        case 0xa0:                                                 // BPF_MSH
            if ((err = pcap_load(p, k, 1, &v))) return err;
            v = (v & 0xf) << 2;
            break;
        default: return PCAP_REJECT;
        }
        if (PCAP_CLASS(code) == 0x00)
            vm->A = v;
        else
            vm->X = v;
        return n + 1;
    }
    case 0x02: vm->M[k & 15] = vm->A; return n + 1;   // BPF_ST
    case 0x03: vm->M[k & 15] = vm->X; return n + 1;   // BPF_STX
    case 0x04:                                        // BPF_ALU
        v = PCAP_SRC(code) ? vm->X : k;
        if ((PCAP_OP(code) == 0x30 || PCAP_OP(code) == 0x90) && v == 0)
            return PCAP_REJECT;
        vm->A = pcap_alu(PCAP_OP(code), vm->A, v);
        return n + 1;
    case 0x05:                                        // BPF_JMP
    {
        int taken;
        v = PCAP_SRC(code) ? vm->X : k;
        switch (PCAP_OP(code)) {
        case 0x00: return n + 1 + (int)k;             // BPF_JA
        case 0x10: taken = vm->A == v; break;         // BPF_JEQ
        case 0x20: taken = vm->A > v; break;          // BPF_JGT
        case 0x30: taken = vm->A >= v; break;         // BPF_JGE
        case 0x40: taken = (vm->A & v) != 0; break;   // BPF_JSET
        default: return PCAP_REJECT;
        }
        return n + 1 + (int)(taken ? jt : jf);
    }
    case 0x06:                                        // BPF_RET
        v = PCAP_RVAL(code) == 0x10 ? vm->A : k;      // BPF_A, else BPF_K
        return v ? PCAP_ACCEPT : PCAP_REJECT;
    case 0x07:                                        // BPF_MISC
        if (PCAP_MISCOP(code) == 0x00)
            vm->X = vm->A;                            // BPF_TAX
        else
            vm->A = vm->X;                            // BPF_TXA
        return n + 1;
    }
    return PCAP_REJECT;
}

#define I(n, code, jt, jf, k) \
    if (vm.pc == (n)) vm.pc = pcap_step(&vm, p, (n), (code), (jt), (jf), (k));

// Runs PROG (an I() list) on p: PCAP_ACCEPT, PCAP_REJECT or PCAP_UNKNOWN.
#define PCAP_RUN(PROG, p)                                \
    ({                                                   \
        struct pcap_vm vm = {};                          \
        PROG                                             \
        vm.pc < 0 ? vm.pc : PCAP_REJECT;                 \
    })

#ifdef PCAP_ETH_PROG
static __always_inline int pcap_run_eth(const struct pcap_pkt *p)
{
    return PCAP_RUN(PCAP_ETH_PROG, p);
}
#endif

#ifdef PCAP_RAW_PROG
static __always_inline int pcap_run_raw(const struct pcap_pkt *p)
{
    return PCAP_RUN(PCAP_RAW_PROG, p);
}
#endif

#ifndef PCAP_HOST_TEST
#include <linux/socket.h>

static __always_inline int pcap_verdict(int v)
{
    return v == PCAP_ACCEPT ? VERDICT_YES : v == PCAP_REJECT ? VERDICT_NO : VERDICT_UNKNOWN;
}

#ifdef PCAP_RAW_PROG
// The socket layer's skbs have no header yet: make one up from the socket
// (addresses, protocol, ports) and run the raw program over it.
static __always_inline int pcap_classify_sock(struct sk_buff *skb)
{
    struct sock *sk = NULL;
    bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
    if (!sk)
        return VERDICT_UNKNOWN;
    u16 family = 0, num = 0, dport = 0, proto = 0;
    bpf_probe_read_kernel(&family, sizeof(family), &sk->__sk_common.skc_family);
    bpf_probe_read_kernel(&proto, sizeof(proto), &sk->sk_protocol);
    bpf_probe_read_kernel(&num, sizeof(num), &sk->__sk_common.skc_num);
    bpf_probe_read_kernel(&dport, sizeof(dport), &sk->__sk_common.skc_dport);
    u8 hdr[44] = {};
    u32 len;
    u16 sport_be = htons(num);
    u32 d6[4] = {};
    if (family == AF_INET6)
        bpf_probe_read_kernel(d6, sizeof(d6), &sk->__sk_common.skc_v6_daddr);
    // A dual-stack socket sends IPv4 to a v4-mapped peer (::ffff:a.b.c.d),
    // and a child it accepted from an IPv4 peer may have no IPv6 peer at all
    // (::), only the IPv4 one.
    int mapped = d6[0] == 0 && d6[1] == 0 && d6[2] == htonl(0xffff);
    if (family == AF_INET6 && !mapped && !(d6[0] | d6[1] | d6[2] | d6[3])) {
        u32 d4 = 0;
        bpf_probe_read_kernel(&d4, sizeof(d4), &sk->__sk_common.skc_daddr);
        if (!d4)
            return VERDICT_UNKNOWN;  // not connected: the header will tell
        mapped = 1;
    }
    if (family == AF_INET || (family == AF_INET6 && mapped)) {
        hdr[0] = 0x45;
        hdr[9] = (u8)proto;
        bpf_probe_read_kernel(&hdr[12], 4, &sk->__sk_common.skc_rcv_saddr);
        bpf_probe_read_kernel(&hdr[16], 4, &sk->__sk_common.skc_daddr);
        __builtin_memcpy(&hdr[20], &sport_be, 2);
        __builtin_memcpy(&hdr[22], &dport, 2);
        len = 24;
    } else if (family == AF_INET6) {
        hdr[0] = 0x60;
        hdr[6] = (u8)proto;
        hdr[7] = 64;
        bpf_probe_read_kernel(&hdr[8], 16, &sk->__sk_common.skc_v6_rcv_saddr);
        __builtin_memcpy(&hdr[24], d6, 16);
        __builtin_memcpy(&hdr[40], &sport_be, 2);
        __builtin_memcpy(&hdr[42], &dport, 2);
        len = 44;
    } else {
        return VERDICT_UNKNOWN;
    }
    // The made-up header lives on this stack; bpf_probe_read_kernel reads it
    // like any kernel memory.
    struct pcap_pkt p = {.base = (u64)hdr, .caplen = len, .partial = 1};
    return pcap_verdict(pcap_run_raw(&p));
}
#endif

// Classify the skb with the pcap-filter expression (see the top of this file).
static __always_inline int pcap_classify(struct sk_buff *skb)
{
    u16 protocol = 0, nh = 0, mh = 0;
    unsigned char *head = NULL, *data = NULL;
    u32 tail = 0, len = 0;
    bpf_probe_read_kernel(&protocol, sizeof(protocol), &skb->protocol);
    bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
    bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
    bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
    bpf_probe_read_kernel(&mh, sizeof(mh), &skb->mac_header);
    bpf_probe_read_kernel(&tail, sizeof(tail), &skb->tail);
    bpf_probe_read_kernel(&len, sizeof(len), &skb->len);
    if (!head)
        return VERDICT_UNKNOWN;
    u64 end = (u64)head + tail;      // the linear data's end
    u64 wire_end = (u64)data + len;  // the packet's end
    int mac_set = mh != (u16)~0U;
    // Before the core receive path resets it, network_header is stale and
    // data already points past the Ethernet header.
    int nh_stale = mac_set && nh <= mh;
    u64 net = nh_stale ? (u64)data : (u64)head + nh;
    u64 start = 0;
    int eth = 0;
    if (mac_set && net == (u64)head + mh + 14) {
        start = (u64)head + mh;
        eth = 1;
    } else if (protocol != 0) {
        start = net;
    }
    if (start && start < end) {
        struct pcap_pkt p = {
            .base = start,
            .caplen = (u32)(end - start),
            .wirelen = wire_end > start ? (u32)(wire_end - start) : 0,
        };
        if (eth)
            return pcap_verdict(pcap_run_eth(&p));
#ifdef PCAP_RAW_PROG
        return pcap_verdict(pcap_run_raw(&p));
#else
        return VERDICT_UNKNOWN;  // the expression needs a link layer this skb lacks yet
#endif
    }
    if (protocol != 0)
        return VERDICT_UNKNOWN;
#ifdef PCAP_RAW_PROG
    return pcap_classify_sock(skb);
#else
    return VERDICT_UNKNOWN;
#endif
}
#endif /* PCAP_HOST_TEST */

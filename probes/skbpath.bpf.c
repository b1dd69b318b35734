// SPDX-License-Identifier: GPL-2.0
//
// skbpath's BPF programs: kprobe/kretprobe, fentry/fexit and raw tracepoint
// programs that all report through emit().  Compiled by bcc; configured only
// through cflags (see tracer/bpfconfig.py), never by editing this text.  Each
// list defaults to empty:
//
//   SKBPATH_PROBES      kprobes, an X-macro list, e.g. "P(0,0,0,0,0,0) P(1,2,0,1,0,0)":
//                       P(function id, skb argument (0 = none), deref, stack,
//                         aux argument recorded as an integer (0 = none),
//                         frees: the call ends the skb's life)
//   SKBPATH_FENTRY      fentry/fexit trampolines (BTF-typed context), e.g.
//                       "F(3,ip_rcv,1,0,0,0,0)": F(function id, exact symbol,
//                         then as P).  A function may be in both lists: its
//                         other symbols (clones) then use the kprobe.
//   SKBPATH_TRACEPOINTS raw tracepoints, e.g. "T(5,net_dev_xmit,1,0,1,0)":
//                       T(function id, tracepoint event, skb argument, aux
//                         argument, stack, frees); positions are 1-based in
//                         the tracepoint's own arguments (detected from BTF).
//   RINGBUF_PAGES       ring buffer size in pages (power of two)
//   STACK_ENTRIES       capacity of the kernel stack map
//   TRACK_ENTRIES       capacity of the tracked-skb LRU map
//   FILTER_IFINDEX      trace only skbs on this interface
//   FILTER_PROTO        IPPROTO_TCP or IPPROTO_UDP
//   FILTER_PORT         either port equals this (host order)
//   FILTER_HOST         either IPv4 address equals this (network order, u32)
//   FILTER_TGID         only this process's sockets
//   FILTER_COMM0/1      only sockets of tasks named so (comm as two u64s)
//   ROUTE_FUNC_ID       the id of fib_table_lookup (catalog result = "route"):
//                       its return event carries the route found (FLAG_RESULT;
//                       the packing is documented in tracer/routes.py)
//   TRACER_NETNS        the tracer's network namespace inode: routes whose
//                       output device is elsewhere are flagged as such
//
// One event goes out per function entry and one per return; user space
// pairs them (tracer/pairing.py), so a lost return is detectable there.  A
// tracepoint hit is a zero-length call: its ENTRY and EXIT events go out as
// one 80-byte record.

#include <uapi/linux/ptrace.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <linux/sched.h>
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <net/sock.h>

#define KIND_ENTRY 0
#define KIND_EXIT 1
#define KIND_HIT 2  // emit() only: an ENTRY and an EXIT at the same time, one record
#define FLAG_RESULT 2  // a return whose skb and aux fields carry its result
#define FLAG_MATCHED 1

// Counter slots, read by tracer/live.py.  Keep in step with COUNTERS there.
#define CNT_RINGBUF_LOST 0
#define CNT_STACK_LOST 1
#define CNT_FILTERED 2
#define CNT_SLOTS 4

struct event {
    u64 ts;
    u64 skb;
    u32 tid;
    u32 tgid;
    u16 func;
    u8 kind;
    u8 flags;
    u16 cpu;
    u16 pad;
    s32 stack_id;
    u32 aux;
};

#ifndef SKBPATH_PROBES
#define SKBPATH_PROBES
#endif
#ifndef SKBPATH_FENTRY
#define SKBPATH_FENTRY
#endif
#ifndef SKBPATH_TRACEPOINTS
#define SKBPATH_TRACEPOINTS
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_STACK_TRACE(stacks, STACK_ENTRIES);
BPF_PERCPU_ARRAY(counters, u64, CNT_SLOTS);

// The running thread, for state kept from a probe to its return.  Idle tasks
// all have tid 0: tell them apart by CPU (tids stay below 2^22, pid_max's limit).
static __always_inline u64 thread_key(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    return tid ? tid : (u64)bpf_get_smp_processor_id() << 24;
}

#if defined(FILTER_IFINDEX) || defined(FILTER_PROTO) || defined(FILTER_PORT) || \
    defined(FILTER_HOST) || defined(FILTER_TGID) || defined(FILTER_COMM0)
#define FILTERING 1
// skbs that matched once stay traced until the LRU forgets them (pwru's idea).
BPF_TABLE("lru_hash", u64, u8, tracked, TRACK_ENTRIES);
// Entries dropped by the filter, so that their returns are dropped too and
// user space never sees a return without its entry.
BPF_HASH(suppressed, u64, u32, 16384);

static __always_inline u64 frame_key(u16 func)
{
    return (thread_key() << 16) | func;
}
#endif

#if defined(FILTER_TGID) || defined(FILTER_COMM0)
// Sockets owned by the selected process, learnt when it enters the socket layer.
BPF_TABLE("lru_hash", u64, u8, owned_socks, 4096);
#endif

static __always_inline void count(u32 slot)
{
    u64 *v = counters.lookup(&slot);
    if (v)
        *v += 1;
}

#ifdef FILTERING
#define VERDICT_NO 0
#define VERDICT_YES 1
#define VERDICT_UNKNOWN 2

#if defined(FILTER_PROTO) || defined(FILTER_PORT) || defined(FILTER_HOST)
static __always_inline int match_tuple(u8 proto, u32 saddr, u32 daddr, u16 sport, u16 dport)
{
#ifdef FILTER_PROTO
    if (proto != FILTER_PROTO)
        return VERDICT_NO;
#endif
#ifdef FILTER_HOST
    if (saddr != FILTER_HOST && daddr != FILTER_HOST)
        return VERDICT_NO;
#endif
#ifdef FILTER_PORT
    if (sport != FILTER_PORT && dport != FILTER_PORT)
        return VERDICT_NO;
#endif
    return VERDICT_YES;
}

// Classify by the IPv4 header when the skb has one, else by its socket.
static __always_inline int classify_packet(struct sk_buff *skb)
{
    u16 protocol = 0, nh = 0, mh = 0;
    unsigned char *head = NULL, *data = NULL;
    bpf_probe_read_kernel(&protocol, sizeof(protocol), &skb->protocol);
    if (protocol == htons(ETH_P_IP)) {
        bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
        bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
        bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
        bpf_probe_read_kernel(&mh, sizeof(mh), &skb->mac_header);
        // Before the core receive path resets it, network_header is stale
        // and data already points past the Ethernet header.
        unsigned char *ip = (mh != (u16)~0U && nh <= mh) ? data : head + nh;
        struct iphdr iph = {};
        if (bpf_probe_read_kernel(&iph, sizeof(iph), ip) < 0)
            return VERDICT_UNKNOWN;
        u16 ports[2] = {};
        if (iph.protocol == IPPROTO_TCP || iph.protocol == IPPROTO_UDP)
            bpf_probe_read_kernel(ports, sizeof(ports), ip + iph.ihl * 4);
        return match_tuple(iph.protocol, iph.saddr, iph.daddr, ntohs(ports[0]),
                           ntohs(ports[1]));
    }
    if (protocol != 0)
        return VERDICT_NO;  // ARP, IPv6: the tuple filters are IPv4 only
    struct sock *sk = NULL;
    bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
    if (!sk)
        return VERDICT_UNKNOWN;
    u16 sk_proto = 0, num = 0, dport = 0;
    u32 saddr = 0, daddr = 0;
    bpf_probe_read_kernel(&sk_proto, sizeof(sk_proto), &sk->sk_protocol);
    bpf_probe_read_kernel(&num, sizeof(num), &sk->__sk_common.skc_num);
    bpf_probe_read_kernel(&dport, sizeof(dport), &sk->__sk_common.skc_dport);
    bpf_probe_read_kernel(&saddr, sizeof(saddr), &sk->__sk_common.skc_rcv_saddr);
    bpf_probe_read_kernel(&daddr, sizeof(daddr), &sk->__sk_common.skc_daddr);
    return match_tuple((u8)sk_proto, saddr, daddr, num, ntohs(dport));
}
#endif

static __always_inline int classify(struct sk_buff *skb)
{
    int verdict = VERDICT_YES;
#ifdef FILTER_IFINDEX
    struct net_device *dev = NULL;
    bpf_probe_read_kernel(&dev, sizeof(dev), &skb->dev);
    if (!dev) {
        verdict = VERDICT_UNKNOWN;
    } else {
        int ifindex = 0;
        bpf_probe_read_kernel(&ifindex, sizeof(ifindex), &dev->ifindex);
        if (ifindex != FILTER_IFINDEX)
            return VERDICT_NO;
    }
#endif
#if defined(FILTER_TGID) || defined(FILTER_COMM0)
    {
        u64 sk = 0;
        bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
        if (!sk)
            verdict = VERDICT_UNKNOWN;
        else if (!owned_socks.lookup(&sk))
            return VERDICT_NO;
    }
#endif
#if defined(FILTER_PROTO) || defined(FILTER_PORT) || defined(FILTER_HOST)
    {
        int v = classify_packet(skb);
        if (v == VERDICT_NO)
            return VERDICT_NO;
        if (v == VERDICT_UNKNOWN)
            verdict = VERDICT_UNKNOWN;
    }
#endif
    return verdict;
}
#endif /* FILTERING */

#if defined(FILTER_TGID) || defined(FILTER_COMM0)
static __always_inline int task_selected(void)
{
#ifdef FILTER_TGID
    if ((bpf_get_current_pid_tgid() >> 32) != FILTER_TGID)
        return 0;
#endif
#ifdef FILTER_COMM0
    u64 comm[2] = {};
    bpf_get_current_comm(comm, sizeof(comm));
    if (comm[0] != FILTER_COMM0 || comm[1] != FILTER_COMM1)
        return 0;
#endif
    return 1;
}
#endif

static __always_inline void fill(struct event *e, u64 ts, u64 id, u64 skb, u16 func, u8 kind,
                                 u8 flags, u16 cpu, s32 stack_id, u32 aux)
{
    e->ts = ts;
    e->skb = skb;
    e->tid = (u32)id;
    e->tgid = id >> 32;
    e->func = func;
    e->kind = kind;
    e->flags = flags;
    e->cpu = cpu;
    e->pad = 0;
    e->stack_id = stack_id;
    e->aux = aux;
}

// Shared by every program type: ctx is only handed to get_stackid, which
// takes a kprobe's pt_regs, a trampoline's or a raw tracepoint's context.
static __always_inline int emit_flags(void *ctx, u16 func, u8 kind, u64 skb, int want_stack,
                                      u32 aux, u8 flags)
{
#ifdef FILTERING
    if (kind == KIND_EXIT) {
        u64 key = frame_key(func);
        u32 *n = suppressed.lookup(&key);
        if (n) {
            if (*n <= 1)
                suppressed.delete(&key);
            else
                *n -= 1;
            return 0;
        }
    } else if (skb) {
        if (tracked.lookup(&skb)) {
            flags = FLAG_MATCHED;
        } else {
            int verdict = classify((struct sk_buff *)skb);
            if (verdict == VERDICT_NO) {
                // A hit has no separate return to drop later.
                if (kind == KIND_ENTRY) {
                    u64 key = frame_key(func);
                    u32 one = 1, *n = suppressed.lookup(&key);
                    if (n)
                        *n += 1;
                    else
                        suppressed.update(&key, &one);
                }
                count(CNT_FILTERED);
                return 0;
            }
            if (verdict == VERDICT_YES) {
                u8 one = 1;
                tracked.update(&skb, &one);
                flags = FLAG_MATCHED;
            }
        }
    }
#endif
    s32 stack_id = -1;
    if (want_stack) {
        stack_id = stacks.get_stackid(ctx, 0);
        if (stack_id < 0)
            count(CNT_STACK_LOST);
    }
    u64 id = bpf_get_current_pid_tgid();
    u64 ts = bpf_ktime_get_ns();
    u16 cpu = bpf_get_smp_processor_id();
    if (kind == KIND_HIT) {
        struct event *e = events.ringbuf_reserve(2 * sizeof(struct event));
        if (!e) {
            count(CNT_RINGBUF_LOST);
            return 0;
        }
        fill(&e[0], ts, id, skb, func, KIND_ENTRY, flags, cpu, stack_id, aux);
        fill(&e[1], ts, id, skb, func, KIND_EXIT, flags, cpu, -1, 0);
        events.ringbuf_submit(e, 0);
        return 0;
    }
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(CNT_RINGBUF_LOST);
        return 0;
    }
    fill(e, ts, id, skb, func, kind, flags, cpu, stack_id, aux);
    events.ringbuf_submit(e, 0);
    return 0;
}

static __always_inline int emit(void *ctx, u16 func, u8 kind, u64 skb, int want_stack, u32 aux)
{
    return emit_flags(ctx, func, kind, skb, want_stack, aux, 0);
}

#ifdef ROUTE_FUNC_ID
#include <net/ip_fib.h>

// fib_table_lookup(tb, flp, res, flags) fills *res; on a return of 0 the
// route found goes out in the return event (packing: tracer/routes.py).
static __always_inline int emit_route(void *ctx, u16 func, u64 tb, u64 res, int ret)
{
    if (ret != 0 || !tb || !res)
        return emit(ctx, func, KIND_EXIT, 0, 0, 0);
    struct fib_result *r = (struct fib_result *)res;
    u32 table = 0, oif = 0;
    __be32 prefix = 0;
    unsigned char plen = 0, type = 0;
    struct fib_nh_common *nhc = NULL;
    struct net_device *dev = NULL;
    bpf_probe_read_kernel(&table, sizeof(table), &((struct fib_table *)tb)->tb_id);
    bpf_probe_read_kernel(&prefix, sizeof(prefix), &r->prefix);
    bpf_probe_read_kernel(&plen, sizeof(plen), &r->prefixlen);
    bpf_probe_read_kernel(&type, sizeof(type), &r->type);
    bpf_probe_read_kernel(&nhc, sizeof(nhc), &r->nhc);
    if (nhc)
        bpf_probe_read_kernel(&dev, sizeof(dev), &nhc->nhc_dev);
    if (dev)
        bpf_probe_read_kernel(&oif, sizeof(oif), &dev->ifindex);
    u64 word = (u64)prefix | (u64)plen << 32 | (u64)(type & 0x7f) << 40 |
               (u64)(table & 0xffff) << 48;
#ifdef TRACER_NETNS
    // An ifindex means something only in its namespace: flag the others'.
    if (dev) {
        struct net *net = NULL;
        unsigned int inum = 0;
        bpf_probe_read_kernel(&net, sizeof(net), &dev->nd_net.net);
        if (net)
            bpf_probe_read_kernel(&inum, sizeof(inum), &net->ns.inum);
        if (inum != TRACER_NETNS)
            word |= 1ULL << 47;
    }
#endif
    return emit_flags(ctx, func, KIND_EXIT, word, 0, oif, FLAG_RESULT);
}

// A kretprobe cannot see the arguments: its kprobe keeps tb and res per thread.
struct route_args {
    u64 tb;
    u64 res;
};
BPF_HASH(route_calls, u64, struct route_args, 4096);

static __always_inline void save_route_args(u64 tb, u64 res)
{
    u64 key = thread_key();
    struct route_args a = {.tb = tb, .res = res};
    route_calls.update(&key, &a);
}

static __always_inline int emit_saved_route(void *ctx, u16 func, int ret)
{
    u64 key = thread_key();
    struct route_args *a = route_calls.lookup(&key);
    if (!a)
        return emit(ctx, func, KIND_EXIT, 0, 0, 0);
    u64 tb = a->tb, res = a->res;
    route_calls.delete(&key);
    return emit_route(ctx, func, tb, res, ret);
}
// Constant conditions: the compiler keeps these only in the route function's programs.
#define ROUTE_KPROBE_ENTRY(id) \
    if ((id) == ROUTE_FUNC_ID) save_route_args(PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx))
#define ROUTE_KPROBE_EXIT(id) \
    if ((id) == ROUTE_FUNC_ID) return emit_saved_route(ctx, id, (int)PT_REGS_RC(ctx))
// fexit's context holds the 4 arguments, then the return value.
#define ROUTE_FEXIT(id) \
    if ((id) == ROUTE_FUNC_ID) return emit_route(ctx, id, ctx[0], ctx[(id) == ROUTE_FUNC_ID ? 2 : 0], \
                                                 (int)ctx[(id) == ROUTE_FUNC_ID ? 4 : 0])
#else
#define ROUTE_KPROBE_ENTRY(id)
#define ROUTE_KPROBE_EXIT(id)
#define ROUTE_FEXIT(id)
#endif

static __always_inline u64 reg_arg(struct pt_regs *ctx, int pos)
{
    switch (pos) {
    case 1: return PT_REGS_PARM1(ctx);
    case 2: return PT_REGS_PARM2(ctx);
    case 3: return PT_REGS_PARM3(ctx);
    case 4: return PT_REGS_PARM4(ctx);
    case 5: return PT_REGS_PARM5(ctx);
    default: return 0;
    }
}

#if defined(FILTER_TGID) || defined(FILTER_COMM0)
// Socket-layer functions without an skb take the sock first; remember it.
static __always_inline void learn_sock(u64 sk)
{
    if (sk && task_selected()) {
        u8 one = 1;
        owned_socks.update(&sk, &one);
    }
}

// Tracepoints have no socket-layer hook: learn the skb's socket while the
// selected task is the one running.
static __always_inline void learn_skb_sock(u64 skb)
{
    if (skb && task_selected()) {
        u64 sk = 0;
        bpf_probe_read_kernel(&sk, sizeof(sk), &((struct sk_buff *)skb)->sk);
        learn_sock(sk);
    }
}
#define LEARN_SOCK(arg, first) if ((arg) == 0) learn_sock(first)
#define LEARN_SKB_SOCK(skb) learn_skb_sock(skb)
#else
#define LEARN_SOCK(arg, first)
#define LEARN_SKB_SOCK(skb)
#endif

#ifdef FILTERING
// A freed skb's address will be reused by an unrelated packet: forget it.
static __always_inline void untrack(u64 skb)
{
    if (skb)
        tracked.delete(&skb);
}
#define UNTRACK(frees, skb) if (frees) untrack(skb)
#else
#define UNTRACK(frees, skb)
#endif

static __always_inline u64 deref_skb(u64 v, int deref)
{
    if (deref && v) {
        u64 inner = 0;
        bpf_probe_read_kernel(&inner, sizeof(inner), (void *)v);
        v = inner;
    }
    return v;
}

// One entry and one return program per function id.
#define P(id, arg, deref, stack, aux, frees)                                   \
    int skbpath_entry_##id(struct pt_regs *ctx)                               \
    {                                                                         \
        u64 skb = deref_skb(reg_arg(ctx, arg), deref);                        \
        LEARN_SOCK(arg, PT_REGS_PARM1(ctx));                                  \
        emit(ctx, id, KIND_ENTRY, skb, stack, (u32)reg_arg(ctx, aux));        \
        UNTRACK(frees, skb);                                                  \
        ROUTE_KPROBE_ENTRY(id);                                               \
        return 0;                                                             \
    }                                                                         \
    int skbpath_exit_##id(struct pt_regs *ctx)                                \
    {                                                                         \
        ROUTE_KPROBE_EXIT(id);                                                \
        return emit(ctx, id, KIND_EXIT, 0, 0, 0);                             \
    }

// A trampoline's context is the array of the function's arguments; the
// verifier only lets a program read as many as the function has, so an
// unused position must not even be read (hence the constant conditions).
#define CTX_ARG(ctx, pos) ((pos) ? (u64)(ctx)[(pos) ? (pos) - 1 : 0] : 0)

// fentry/fexit programs: bcc derives the target from the kfunc__/kretfunc__
// name (vmlinux BTF only in bcc 0.26).  tracer/live.py attaches them itself.
#define F(id, sym, arg, deref, stack, aux, frees)                              \
    int kfunc__##sym(unsigned long long *ctx)                                 \
    {                                                                         \
        u64 skb = deref_skb(CTX_ARG(ctx, arg), deref);                        \
        LEARN_SOCK(arg, CTX_ARG(ctx, 1));                                     \
        emit(ctx, id, KIND_ENTRY, skb, stack, (u32)CTX_ARG(ctx, aux));        \
        UNTRACK(frees, skb);                                                  \
        return 0;                                                             \
    }                                                                         \
    int kretfunc__##sym(unsigned long long *ctx)                              \
    {                                                                         \
        ROUTE_FEXIT(id);                                                      \
        return emit(ctx, id, KIND_EXIT, 0, 0, 0);                             \
    }

// Raw tracepoint programs: one record per hit, ENTRY and EXIT together.
#define T(id, tp, arg, aux, stack, frees)                                      \
    int skbpath_tp_##id(struct bpf_raw_tracepoint_args *ctx)                  \
    {                                                                         \
        u64 skb = (arg) ? ctx->args[(arg) ? (arg) - 1 : 0] : 0;                \
        LEARN_SKB_SOCK(skb);                                                  \
        emit(ctx, id, KIND_HIT, skb, stack,                                   \
             (aux) ? (u32)ctx->args[(aux) ? (aux) - 1 : 0] : 0);               \
        UNTRACK(frees, skb);                                                  \
        return 0;                                                             \
    }

SKBPATH_PROBES
SKBPATH_FENTRY
SKBPATH_TRACEPOINTS

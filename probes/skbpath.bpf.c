// SPDX-License-Identifier: GPL-2.0
//
// skbpath's BPF programs: kprobe/kretprobe, fentry/fexit and raw tracepoint
// programs that all report through push()/pop() (point() for a hit).  Compiled by bcc; configured only
// through cflags (see tracer/record/cflags.py), never by editing this text.  Each
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
//   STACK_ENTRIES       capacity of the kernel stack map (distinct stacks)
//   TRACK_ENTRIES       capacity of the tracked-skb LRU map
//   FILTER_IFINDEX      trace only skbs on this interface
//   FILTER_PROTO        IPPROTO_TCP or IPPROTO_UDP
//   FILTER_PORT         either port equals this (host order)
//   FILTER_HOST         either IPv4 address equals this (network order, u32)
//   FILTER_TGID         only this process's sockets
//   FILTER_COMM0/1      only sockets of tasks named so (comm as two u64s)
//   FILTER_PCAP         a pcap-filter expression, as PCAP_ETH_PROG and
//                       PCAP_RAW_PROG (classic BPF; see pcap_filter.h)
//   ROUTE_FUNC_ID       the id of fib_table_lookup (catalog result = "route"):
//                       its return event carries the route found (FLAG_RESULT;
//                       the packing is documented in tracer/model/routes.py)
//   TRACER_NETNS        the tracer's network namespace inode: routes whose
//                       output device is elsewhere are flagged as such
//
//   SKBPATH_CONTEXT     softirq entry points (catalog context = true), e.g.
//                       "C(4) C(9)": their calls start a new context on the
//                       thread's frame stack and never mark the task they
//                       interrupted as having handled an skb
//   SKBPATH_RETVAL      functions whose return value goes out in the record's
//                       result field (FLAG_RETVAL; catalog result = "gro"),
//                       e.g. "R(7,2)": R(function id, its argument count:
//                       fexit finds the return value after the arguments)
//   SKBPATH_GSO         the driver's transmit functions (catalog gso_segs =
//                       true), e.g. "G(12)": their aux is the skb's gso_segs,
//                       the wire frames a TSO/GSO skb becomes (1 if not GSO)
//   FRAME_THREADS       capacity of the per-thread frame stack map
//   MAX_DEPTH           frames per thread (a power of two; default 64)
//   SKBPATH_AGGREGATE   aggregation mode: no call leaves the kernel; each is
//                       added to its call path's counters and latency
//                       histogram (agg_paths, AGG_PATHS paths at most)
//
// One record goes out per call, at its return (trace format version 2,
// tracer/traces/events.py): the entry pushes a frame on the running
// thread's frame stack, the return pops the frame of the same function and
// emits one struct call.  Frames above it never saw their return (a
// kretprobe maxactive miss): they go out flagged NO_RETURN.  Interrupts are
// LIFO, so a softirq that runs on the task it interrupted simply nests on
// that task's stack.  A call without an skb goes out only if an skb call (or
// a RESULT) happened inside it; the others are counted per function in
// empty_calls.  A tracepoint hit goes out as one POINT record.
//
// In aggregation mode (SKBPATH_AGGREGATE) the same frames are kept, but a
// closed call is added to the counters of its call path instead of going
// out: the path is a 64-bit hash of the caller's path and the function
// (a context root starts a path of its own), and agg_paths holds, per path,
// the calls, their inclusive and self time, min and max, and a log-linear
// histogram with the model's buckets (tracer/model/stats.py).
// User space reads it once a second (tracer/record/bpf/aggregate.py).

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

#define FLAG_MATCHED 1    // the filter matched this call's skb
#define FLAG_RESULT 2     // the record's result and aux fields carry the call's result
#define FLAG_NO_RETURN 4  // the return never came: closed when an outer frame returned
#define FLAG_POINT 8      // a tracepoint hit: no duration
#define FLAG_RETVAL 16    // the record's result field is the call's return value

// Counter slots, read by tracer/record/bpf/backend.py.  Keep in step with COUNTERS there.
#define CNT_RINGBUF_LOST 0
#define CNT_STACK_LOST 1
#define CNT_FILTERED 2
#define CNT_NO_RETURN 3
#define CNT_UNMATCHED 4
#define CNT_DEPTH_OVERFLOW 5
#define CNT_FRAMES_FULL 6
#define CNT_AGG_FULL 7  // a call path the full agg_paths map could not take
#define CNT_OPEN_AT_START 8  // a call that began before the probes were armed, ended after
#define CNT_SLOTS 9

// One traced call, written at its return: the v2 trace's record.  The layout
// is tracer/traces/events.py's CALL_STRUCT byte for byte (56 bytes).
struct call {
    u64 entry;
    u64 duration;
    u64 skb;
    u64 result;
    u32 tid;
    u32 tgid;
    u32 aux;
    s32 stack_id;
    u16 func;
    u16 cpu;
    u8 depth;
    u8 flags;
    u8 base;
    u8 pad;
};

// An open call on a thread's frame stack.
struct frame {
    u64 entry;
    u64 skb;
    s32 stack_id;
    u32 aux;
    u16 func;
    u8 flags;
    u8 has_skb;  // an skb call or a RESULT happened in this call (or it has an skb)
    u8 base;     // depth of the frame that began this call's context (see struct call)
    u8 skip;     // filtered out, or begun before arming: its return emits nothing
    u8 pre;      // PRE_START: begun before arming; PRE_STOP: after disarming (see armed)
    u8 pad;
#ifdef SKBPATH_AGGREGATE
    u64 path;    // this call's path (a filtered call's is its caller's)
    u64 child;   // inclusive ns of the aggregated calls directly inside it
#endif
};

#ifndef MAX_DEPTH
#define MAX_DEPTH 64  // a power of two: indexes are masked with MAX_DEPTH - 1
#endif
#define DEPTH_MASK (MAX_DEPTH - 1)
struct frames {
    u32 depth;
    u32 overflow;  // entries not pushed because the stack was full
    struct frame f[MAX_DEPTH];
};
#define EMPTY_SLOTS 1024  // function ids are u16 and the catalog has far fewer

#ifndef SKBPATH_PROBES
#define SKBPATH_PROBES
#endif
#ifndef SKBPATH_FENTRY
#define SKBPATH_FENTRY
#endif
#ifndef SKBPATH_TRACEPOINTS
#define SKBPATH_TRACEPOINTS
#endif

#ifndef SKBPATH_CONTEXT
#define SKBPATH_CONTEXT
#endif
#ifndef SKBPATH_GSO
#define SKBPATH_GSO
#endif
#ifndef SKBPATH_RETVAL
#define SKBPATH_RETVAL
#endif
#ifndef FRAME_THREADS
#define FRAME_THREADS 4096
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// Kernel stacks, one entry per distinct stack.  Not bcc's BPF_STACK_TRACE:
// that map keeps one stack per hash bucket and fails a stack whose bucket
// holds another, so a few hundred distinct stacks in 16k buckets already
// collide (the birthday bound), and every later hit of a hot stack was lost.
// Here the key is 31 bits of a 64-bit hash of the frames and the value keeps
// the whole hash: only two stacks equal in those 31 bits clash (counted).
#ifndef STACK_DEPTH
#define STACK_DEPTH 127
#endif
#define STACK_SLOTS 4
struct stack {
    u64 hash;
    u32 nr;   // frames in ip
    u32 pad;
    u64 ip[STACK_DEPTH];
};
BPF_HASH(stacks, u32, struct stack, STACK_ENTRIES);
// Where a stack is walked before it is known: too big for the BPF stack.  A
// program can interrupt another on its CPU (a softirq's fentry over a task's),
// so each nesting level has its own slot (stack_nest counts the levels).
BPF_PERCPU_ARRAY(stack_scratch, struct stack, STACK_SLOTS);
BPF_PERCPU_ARRAY(stack_nest, u32, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_SLOTS);
// Calls not emitted because no skb call happened inside them, per function id.
BPF_PERCPU_ARRAY(empty_calls, u64, EMPTY_SLOTS);
// Each thread's open calls (key: thread_key()).  A stack is deleted when its
// outermost call returns, so only threads inside a traced call hold one.
BPF_HASH(frame_stacks, u64, struct frames, FRAME_THREADS);
// A zeroed value to create a stack from: too big for the BPF stack.
BPF_PERCPU_ARRAY(frames_init, struct frames, 1);
// ARMED once user space has attached every probe, DISARMED before it
// detaches them.  Outside, calls are pushed and popped but nothing is
// emitted or counted: a function's entry and return probes attach one after
// the other, and the functions one by one, so a call in flight across an
// attach or a detach would be half seen.  A call begun before arming and
// ended after is counted (open_at_start), not emitted; one begun while
// armed is emitted whenever it returns.
#define ARMING 0
#define ARMED 1
#define DISARMED 2
#define PRE_START 1
#define PRE_STOP 2
BPF_ARRAY(armed, u32, 1);

#define C(id) || func == (id)
static __always_inline int is_context(u16 func)
{
    return 0 SKBPATH_CONTEXT;
}
#undef C

// What a call's record carries in aux: the catalog's aux argument, or, at
// the driver's transmit, how many wire frames the skb is (gso_segs in its
// shared info, which sits at skb->head + skb->end; 0 when not GSO).
#define G(id) || func == (id)
static __always_inline u32 aux_of(u16 func, u64 skb, u32 arg)
{
    if ((0 SKBPATH_GSO) && skb) {
        unsigned char *head = NULL;
        u32 end = 0;
        u16 segs = 0;
        bpf_probe_read_kernel(&head, sizeof(head), &((struct sk_buff *)skb)->head);
        bpf_probe_read_kernel(&end, sizeof(end), &((struct sk_buff *)skb)->end);
        if (head)
            bpf_probe_read_kernel(&segs, sizeof(segs),
                                  &((struct skb_shared_info *)(head + end))->gso_segs);
        return segs ? segs : 1;
    }
    return arg;
}
#undef G

// The argument count of a function whose return value is recorded, else -1.
#define R(id, n) case (id): return (n);
static __always_inline int retval_args(u16 func)
{
    switch (func) {
    SKBPATH_RETVAL
    default: return -1;
    }
}
#undef R

// The running thread, for state kept from a probe to its return.  Idle tasks
// all have tid 0: tell them apart by CPU (tids stay below 2^22, pid_max's limit).
static __always_inline u64 thread_key(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    return tid ? tid : (u64)bpf_get_smp_processor_id() << 24;
}

#if defined(FILTER_IFINDEX) || defined(FILTER_PROTO) || defined(FILTER_PORT) || \
    defined(FILTER_HOST) || defined(FILTER_TGID) || defined(FILTER_COMM0) || defined(FILTER_PCAP)
#define FILTERING 1
// skbs that matched once stay traced until the LRU forgets them (pwru's idea).
BPF_TABLE("lru_hash", u64, u8, tracked, TRACK_ENTRIES);
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

static __always_inline u32 arming(void)
{
    u32 zero = 0;
    u32 *a = armed.lookup(&zero);
    return a ? *a : ARMING;
}

static __always_inline int is_armed(void)
{
    return arming() == ARMED;
}

#ifdef FILTERING
#define VERDICT_NO 0
#define VERDICT_YES 1
#define VERDICT_UNKNOWN 2

#ifdef FILTER_PCAP
#define PCAP_READ(dst, size, addr) bpf_probe_read_kernel(dst, size, (void *)(addr))
#include "pcap_filter.h"
#endif

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
#ifdef FILTER_PCAP
    {
        int v = pcap_classify(skb);
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

// Whether the filter keeps a call with this skb; sets FLAG_MATCHED in *flags.
// A call that frees its skb is kept even when the skb does not match: its
// first calls may have been kept while the filter could not tell yet (a TCP
// ACK has no socket at __tcp_transmit_skb), and without the free the
// journey would stay open and take in the next packet at the same address.
static __always_inline int filter_keeps(u64 skb, u8 *flags, int frees)
{
#ifdef FILTERING
    if (!skb)
        return 1;
    if (tracked.lookup(&skb)) {
        *flags = FLAG_MATCHED;
        return 1;
    }
    int verdict = classify((struct sk_buff *)skb);
#ifdef SKBPATH_AGGREGATE
    // No journey will sort out later what the filter could not tell now, so
    // an aggregate keeps only calls on skbs that matched (and the calls around them).
    if (verdict != VERDICT_YES) {
        count(CNT_FILTERED);
        return 0;
    }
#endif
    if (verdict == VERDICT_NO) {
        if (frees)
            return 1;
        count(CNT_FILTERED);
        return 0;
    }
    if (verdict == VERDICT_YES) {
        u8 one = 1;
        tracked.update(&skb, &one);
        *flags = FLAG_MATCHED;
    }
#endif
    return 1;
}

// Walk the kernel stack into s and return its id in stacks, storing it if it
// is new; -1 if the walk failed, the map is full or the key holds another stack.
static __always_inline s32 stack_store(void *ctx, struct stack *s)
{
    long n = bpf_get_stack(ctx, s->ip, sizeof(s->ip), 0);
    if (n <= 0)
        return -1;
    u32 nr = (u32)n / sizeof(u64);
    u64 h = 0x9e3779b97f4a7c15ULL ^ nr;
    for (u32 i = 0; i < STACK_DEPTH; i++) {
        if (i >= nr)
            break;
        h = (h ^ s->ip[i]) * 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
    }
    u32 key = (u32)h & 0x7fffffff;
    struct stack *known = stacks.lookup(&key);
    if (!known) {
        s->hash = h;
        s->nr = nr;
        s->pad = 0;
        if (stacks.insert(&key, s) == 0)
            return (s32)key;
        known = stacks.lookup(&key);  // another CPU stored it first, or the map is full
        if (!known)
            return -1;
    }
    return known->hash == h ? (s32)key : -1;
}

static __always_inline s32 stack_of(void *ctx, int want_stack)
{
#ifdef SKBPATH_AGGREGATE
    want_stack = 0;  // no record would carry it
#endif
    if (!want_stack)
        return -1;
    u32 zero = 0;
    u32 *nest = stack_nest.lookup(&zero);
    if (!nest)
        return -1;
    u32 slot = *nest;
    s32 id = -1;
    if (slot < STACK_SLOTS) {
        *nest = slot + 1;
        struct stack *s = stack_scratch.lookup(&slot);
        if (s)
            id = stack_store(ctx, s);
        *nest = slot;
    }
    if (id < 0)
        count(CNT_STACK_LOST);
    return id;
}

static __always_inline void submit(u64 entry, u64 duration, u64 skb, u64 result, u32 aux,
                                   s32 stack_id, u16 func, u8 depth, u8 flags, u8 base)
{
    struct call *c = events.ringbuf_reserve(sizeof(struct call));
    if (!c) {
        count(CNT_RINGBUF_LOST);
        return;
    }
    u64 id = bpf_get_current_pid_tgid();
    c->entry = entry;
    c->duration = duration;
    c->skb = skb;
    c->result = result;
    c->tid = (u32)id;
    c->tgid = id >> 32;
    c->aux = aux;
    c->stack_id = stack_id;
    c->func = func;
    c->cpu = bpf_get_smp_processor_id();
    c->depth = depth;
    c->flags = flags;
    c->base = base;
    c->pad = 0;
    events.ringbuf_submit(c, 0);
}

#ifdef SKBPATH_AGGREGATE
// Aggregation mode: each closed call is added to its call path's counters.
#ifndef AGG_PATHS
#define AGG_PATHS 8192
#endif
#define AGG_SUB_BITS 4  // 16 buckets per power of two, as tracer/model/stats.py
#define AGG_HIST 512    // a power of two; up to 2^35 ns (34 s), a longer call in the last bucket
struct agg_path {
    u64 parent;     // the caller's path; 0 for a root
    u64 calls;      // calls that returned
    u64 no_return;  // calls whose return never came
    u64 total;      // inclusive ns
    u64 self;       // inclusive ns less the aggregated calls directly inside
    u64 min;
    u64 max;
    u32 func;
    u32 pad;
    u32 hist[AGG_HIST];
};
// One value per path for all CPUs, counted with atomic adds, and allocated
// up front (17 MB for 8,192 paths): a per-CPU map costs that per CPU, and
// one allocated as paths appear failed when many came at once (the kernel
// refills its element cache later), 347 calls in a 5 s bulk transfer.
BPF_HASH(agg_paths, u64, struct agg_path, AGG_PATHS);
// The value a new path starts from: too big for the BPF stack.
BPF_PERCPU_ARRAY(agg_init, struct agg_path, 1);

static __always_inline u64 path_of(u64 parent, u16 func)
{
    u64 h = (parent ^ (((u64)func + 1) * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;  // 0 means "no parent"
}

// tracer/model/stats.py's bucket_of, without a loop: exact below 16 ns,
// then 16 buckets per power of two.
static __always_inline u32 agg_bucket(u64 ns)
{
    if (ns < (1 << AGG_SUB_BITS))
        return (u32)ns;
    u64 v = ns;
    u32 bl = 1;  // the bit length of ns
    if (v >> 32) { bl += 32; v >>= 32; }
    if (v >> 16) { bl += 16; v >>= 16; }
    if (v >> 8) { bl += 8; v >>= 8; }
    if (v >> 4) { bl += 4; v >>= 4; }
    if (v >> 2) { bl += 2; v >>= 2; }
    if (v >> 1) { bl += 1; }
    u32 b = ((bl - AGG_SUB_BITS) << AGG_SUB_BITS) |
            (u32)((ns >> (bl - AGG_SUB_BITS - 1)) & ((1 << AGG_SUB_BITS) - 1));
    return b < AGG_HIST ? b : AGG_HIST - 1;
}

// Add the call in frame i to its path; its time goes to its caller's child time.
static __always_inline void aggregate(struct frames *fs, u32 i, struct frame *f, u64 now,
                                      int no_return)
{
    u64 key = f->path;
    struct agg_path *a = agg_paths.lookup(&key);
    if (!a) {
        u32 zero = 0;
        struct agg_path *init = agg_init.lookup(&zero);  // only these fields are ever set
        if (!init)
            return;
        // The caller's path, as push() derived this one: none for a context root.
        init->parent = (i > 0 && f->base != i) ? fs->f[(i - 1) & DEPTH_MASK].path : 0;
        init->func = f->func;
        init->min = ~0ULL;
        agg_paths.insert(&key, init);  // fails if another CPU made it first: fine
        a = agg_paths.lookup(&key);
        if (!a) {
            count(CNT_AGG_FULL);
            return;
        }
    }
    if (no_return) {
        __sync_fetch_and_add(&a->no_return, 1);
        return;
    }
    u64 dur = now - f->entry;
    // Plain stores: two CPUs racing on one path's extreme may keep the less
    // extreme of their two values (both real); the counts are exact.
    if (dur < a->min)
        a->min = dur;
    if (dur > a->max)
        a->max = dur;
    __sync_fetch_and_add(&a->calls, 1);
    __sync_fetch_and_add(&a->total, dur);
    __sync_fetch_and_add(&a->self, dur > f->child ? dur - f->child : 0);
    u32 b = agg_bucket(dur);
    // Masked after an empty asm: the compiler knows agg_bucket's clamp and
    // would drop a mask or check, and 6.1's verifier loses that clamp's bound
    // (it compares a copy of the register), so it refused the load.
    asm volatile("" : "+r"(b));
    __sync_fetch_and_add(&a->hist[b & (AGG_HIST - 1)], 1);
    if (i > 0 && f->base != i)
        fs->f[(i - 1) & DEPTH_MASK].child += dur;
}
#endif /* SKBPATH_AGGREGATE */

// What a frame at depth d must say before anything can nest on it: its
// context (a softirq root begins its own, the others inherit their caller's)
// and, when aggregating, its call path.
static __always_inline void frame_head(struct frame *f, u32 d, struct frame *caller, u16 func,
                                       u8 skip)
{
    f->base = is_context(func) ? d : (caller ? caller->base : 0);
#ifdef SKBPATH_AGGREGATE
    u64 up = (caller && f->base != d) ? caller->path : 0;
    // A filtered call is transparent: what runs inside it is its caller's.
    f->path = skip ? up : path_of(up, func);
#endif
}

// Entry: push a frame on the running thread's stack.  Shared by every
// program type: ctx is only handed to get_stack, which takes a kprobe's
// pt_regs or a trampoline's context.
//
// A softirq can interrupt this program (a trampoline's runs with interrupts
// on) and push on the same stack.  So the slot is claimed before it is
// filled, a new stack is created with its first slot claimed, and the
// frame's context and path are written before the claim too: a softirq
// that comes in between sees them, and nests above, never below or in a
// stack it then pops empty and deletes under this program.
static __always_inline int push(void *ctx, u16 func, u64 skb, int want_stack, u32 aux,
                                int frees)
{
    u8 flags = 0;
    u32 state = arming();
    u8 pre = state == ARMED ? 0 : (state == ARMING ? PRE_START : PRE_STOP);
    u8 skip = pre || !filter_keeps(skb, &flags, frees);
    u64 key = thread_key();
    struct frames *fs = frame_stacks.lookup(&key);
    u32 d = 0;
    struct frame *caller = NULL;
    if (!fs) {
        u32 zero = 0;
        struct frames *init = frames_init.lookup(&zero);
        if (!init)
            return 0;
        init->depth = 1;
        init->overflow = 0;
        frame_head(&init->f[0], 0, NULL, func, skip);
        init->f[0].func = 0xffff;  // no return matches it until it is filled
        frame_stacks.update(&key, init);
        fs = frame_stacks.lookup(&key);
        if (!fs) {
            if (!pre)
                count(CNT_FRAMES_FULL);
            return 0;
        }
    } else {
        d = fs->depth;
        if (d >= MAX_DEPTH) {
            fs->overflow += 1;
            if (!pre)
                count(CNT_DEPTH_OVERFLOW);
            return 0;
        }
        if (d)
            caller = &fs->f[(d - 1) & DEPTH_MASK];
        frame_head(&fs->f[d & DEPTH_MASK], d, caller, func, skip);
        asm volatile("" ::: "memory");  // written before the claim
        fs->depth = d + 1;
    }
    struct frame *f = &fs->f[d & DEPTH_MASK];
    // Again: a softirq that came in before the claim used this slot itself.
    frame_head(f, d, caller, func, skip);
    f->entry = bpf_ktime_get_ns();
    f->skb = skip ? 0 : skb;
    f->aux = aux;
    f->func = func;
    f->flags = flags;
    f->has_skb = !skip && skb != 0;
    f->skip = skip;
    f->pre = pre;
#ifdef SKBPATH_AGGREGATE
    f->child = 0;
#endif
    f->stack_id = skip ? -1 : stack_of(ctx, want_stack);
    return 0;
}

// Close the frame at index i: emit it if something happened in it, else
// count it as empty; tell its parent an skb call happened.
static __always_inline void close_frame(struct frames *fs, u32 i, u64 now, u64 result, u32 raux,
                                        u8 rflags)
{
    struct frame *f = &fs->f[i & DEPTH_MASK];
    if (f->skip) {
        if (f->pre == PRE_START && arming() != ARMING)
            count(CNT_OPEN_AT_START);
#ifdef SKBPATH_AGGREGATE
        // Its aggregated calls are its caller's now.
        if (i > 0 && f->base != i)
            fs->f[(i - 1) & DEPTH_MASK].child += f->child;
#endif
        return;
    }
    int keep = f->has_skb || (rflags & FLAG_RESULT);
    // A context root (base == its own depth) does not mark the task it interrupted.
    if (keep && i > 0 && f->base != i)
        fs->f[(i - 1) & DEPTH_MASK].has_skb = 1;
    if (!keep) {
        u32 slot = f->func;
        u64 *n = empty_calls.lookup(&slot);
        if (n)
            *n += 1;
        return;
    }
    int no_return = rflags & FLAG_NO_RETURN;
#ifdef SKBPATH_AGGREGATE
    aggregate(fs, i, f, now, no_return);
    return;
#endif
    submit(f->entry, no_return ? 0 : now - f->entry, f->skb, result,
           (rflags & FLAG_RESULT) ? raux : f->aux, f->stack_id, f->func, i, f->flags | rflags,
           f->base);
}

// Return: pop the nearest frame of this function among the top SEARCH ones,
// closing the frames above it as NO_RETURN, and emit it.  A return with no
// such frame is counted.  The search is short and unrolled, so that the
// verifier sees a handful of paths, not a loop per depth.
//
// It does not reach below the running context (a softirq's frames) into the
// one it interrupted: a softirq's call whose entry program was skipped (a
// trampoline already running on this CPU, in the task: bpf_missed) would
// take the task's frame of the same function, end it early and close the
// softirq's frames above it.  Only a context whose root began more than
// STALE_CONTEXT_NS ago, which no live softirq does, is taken for one whose
// return was missed, and searched through.
#define SEARCH 4
#define STALE_CONTEXT_NS 1000000000ULL
static __always_inline int pop_result(u16 func, u64 result, u32 raux, u8 rflags)
{
    u64 key = thread_key();
    struct frames *fs = frame_stacks.lookup(&key);
    if (!fs) {
        if (is_armed())
            count(CNT_UNMATCHED);
        return 0;
    }
    u32 d = fs->depth;
    u64 now = bpf_ktime_get_ns();
    u32 floor = 0;  // the lowest frame of the running context
    if (d > 0 && d <= MAX_DEPTH) {
        floor = fs->f[(d - 1) & DEPTH_MASK].base;
        if (floor && now - fs->f[floor & DEPTH_MASK].entry > STALE_CONTEXT_NS)
            floor = 0;
    }
    u32 above = SEARCH;  // frames above the one found
#pragma unroll
    for (u32 k = 0; k < SEARCH; k++) {
        if (k >= d || d > MAX_DEPTH)
            break;
        u32 j = d - 1 - k;
        if (j < floor)
            break;  // below the running context
        asm volatile("" : "+r"(j));  // keep the mask: the verifier needs it
        if (fs->f[j & DEPTH_MASK].func == func) {
            above = k;
            break;
        }
    }
    if (above == SEARCH) {
        if (fs->overflow)
            fs->overflow -= 1;  // the return of an entry the full stack could not hold
        else if (is_armed())
            count(CNT_UNMATCHED);
        return 0;
    }
#pragma unroll
    for (u32 k = 0; k < SEARCH - 1; k++) {
        if (k >= above)
            break;
        if (!fs->f[(d - 1 - k) & DEPTH_MASK].pre)
            count(CNT_NO_RETURN);
        close_frame(fs, d - 1 - k, now, 0, 0, FLAG_NO_RETURN);
    }
    u32 found = (d - 1 - above) & DEPTH_MASK;
    close_frame(fs, found, now, result, raux, rflags);
    fs->depth = found;
    if (found == 0 && !fs->overflow)
        frame_stacks.delete(&key);
    return 0;
}

static __always_inline int pop(u16 func)
{
    return pop_result(func, 0, 0, 0);
}

// A tracepoint hit: one POINT record, nested in whatever the thread is in.
static __always_inline int point(void *ctx, u16 func, u64 skb, int want_stack, u32 aux,
                                 int frees)
{
    u8 flags = FLAG_POINT;
    if (!is_armed() || !filter_keeps(skb, &flags, frees))
        return 0;
    flags |= FLAG_POINT;
    u8 depth = 0, base = 0;
    u64 key = thread_key();
    struct frames *fs = frame_stacks.lookup(&key);
    if (fs) {
        u32 d = fs->depth;
        if (d > 0 && d <= MAX_DEPTH) {
            struct frame *top = &fs->f[(d - 1) & DEPTH_MASK];
            if (skb)
                top->has_skb = 1;
            depth = d;
            base = top->base;
        }
    }
    submit(bpf_ktime_get_ns(), 0, skb, 0, aux, stack_of(ctx, want_stack), func, depth, flags,
           base);
    return 0;
}

#ifdef ROUTE_FUNC_ID
#include <net/ip_fib.h>

// fib_table_lookup(tb, flp, res, flags) fills *res; on a return of 0 the
// route found goes out in the call's record (packing: tracer/model/routes.py).
static __always_inline int emit_route(u16 func, u64 tb, u64 res, int ret)
{
    if (ret != 0 || !tb || !res)
        return pop(func);
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
    return pop_result(func, word, oif, FLAG_RESULT);
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

static __always_inline int emit_saved_route(u16 func, int ret)
{
    u64 key = thread_key();
    struct route_args *a = route_calls.lookup(&key);
    if (!a)
        return pop(func);
    u64 tb = a->tb, res = a->res;
    route_calls.delete(&key);
    return emit_route(func, tb, res, ret);
}
// Constant conditions: the compiler keeps these only in the route function's programs.
#define ROUTE_KPROBE_ENTRY(id) \
    if ((id) == ROUTE_FUNC_ID) save_route_args(PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx))
#define ROUTE_KPROBE_EXIT(id) \
    if ((id) == ROUTE_FUNC_ID) return emit_saved_route(id, (int)PT_REGS_RC(ctx))
// fexit's context holds the 4 arguments, then the return value.
#define ROUTE_FEXIT(id) \
    if ((id) == ROUTE_FUNC_ID) return emit_route(id, ctx[0], ctx[(id) == ROUTE_FUNC_ID ? 2 : 0], \
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

// One entry and one return program per function id: push and pop a frame.
#define P(id, arg, deref, stack, aux, frees)                                   \
    int skbpath_entry_##id(struct pt_regs *ctx)                               \
    {                                                                         \
        u64 skb = deref_skb(reg_arg(ctx, arg), deref);                        \
        LEARN_SOCK(arg, PT_REGS_PARM1(ctx));                                  \
        push(ctx, id, skb, stack, aux_of(id, skb, (u32)reg_arg(ctx, aux)), frees); \
        UNTRACK(frees, skb);                                                  \
        ROUTE_KPROBE_ENTRY(id);                                               \
        return 0;                                                             \
    }                                                                         \
    int skbpath_exit_##id(struct pt_regs *ctx)                                \
    {                                                                         \
        ROUTE_KPROBE_EXIT(id);                                                \
        if (retval_args(id) >= 0)                                             \
            return pop_result(id, PT_REGS_RC(ctx), 0, FLAG_RETVAL);           \
        return pop(id);                                                       \
    }

// A trampoline's context is the array of the function's arguments; the
// verifier only lets a program read as many as the function has, so an
// unused position must not even be read (hence the constant conditions).
#define CTX_ARG(ctx, pos) ((pos) ? (u64)(ctx)[(pos) ? (pos) - 1 : 0] : 0)

// fentry/fexit programs: bcc derives the target from the kfunc__/kretfunc__
// name (vmlinux BTF only in bcc 0.26).  tracer/record/bpf/backend.py attaches them itself.
#define F(id, sym, arg, deref, stack, aux, frees)                              \
    int kfunc__##sym(unsigned long long *ctx)                                 \
    {                                                                         \
        u64 skb = deref_skb(CTX_ARG(ctx, arg), deref);                        \
        LEARN_SOCK(arg, CTX_ARG(ctx, 1));                                     \
        push(ctx, id, skb, stack, aux_of(id, skb, (u32)CTX_ARG(ctx, aux)), frees); \
        UNTRACK(frees, skb);                                                  \
        return 0;                                                             \
    }                                                                         \
    int kretfunc__##sym(unsigned long long *ctx)                              \
    {                                                                         \
        ROUTE_FEXIT(id);                                                      \
        if (retval_args(id) >= 0)  /* the return value follows the arguments */ \
            return pop_result(id, ctx[retval_args(id) >= 0 ? retval_args(id) : 0], 0, \
                              FLAG_RETVAL);                                   \
        return pop(id);                                                       \
    }

// Raw tracepoint programs: one POINT record per hit.
#define T(id, tp, arg, aux, stack, frees)                                      \
    int skbpath_tp_##id(struct bpf_raw_tracepoint_args *ctx)                  \
    {                                                                         \
        u64 skb = (arg) ? ctx->args[(arg) ? (arg) - 1 : 0] : 0;                \
        LEARN_SKB_SOCK(skb);                                                  \
        point(ctx, id, skb, stack,                                            \
             (aux) ? (u32)ctx->args[(aux) ? (aux) - 1 : 0] : 0, frees);        \
        UNTRACK(frees, skb);                                                  \
        return 0;                                                             \
    }

SKBPATH_PROBES
SKBPATH_FENTRY
SKBPATH_TRACEPOINTS

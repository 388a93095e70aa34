/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * berth's kernel/userspace ABI: every map key and value, every constant that
 * crosses the boundary. The Rust side is generated from this file by
 * `cargo xtask codegen` (bindgen) into ebpf/src/abi/generated.rs; CI fails if
 * the checked-in file differs from a fresh generation. Never mirror these
 * structs by hand.
 *
 * Rules: fixed-width __u / __be fields, explicit padding, no bitfields, bool,
 * enums or pointers, a _Static_assert on every size. Fields named __be* are
 * network byte order; everything else is host order. Changing a layout means
 * renaming the map (_v1 -> _v2) so an old pinned map is never misread.
 */
#ifndef BERTH_ABI_H
#define BERTH_ABI_H

#include <linux/types.h>

#define BERTH_ABI_VERSION 1

/* L4 protocols (IANA numbers, as in the IPv4 header). */
#define BERTH_PROTO_TCP 6
#define BERTH_PROTO_UDP 17

/* Load-balancing algorithms (berth_service_value.algorithm). */
#define BERTH_ALG_WRR 0    /* smooth weighted round-robin, per-CPU cursor */
#define BERTH_ALG_MAGLEV 1 /* Maglev consistent hashing of the 5-tuple */
#define BERTH_ALG_RANDOM 2 /* uniform over the schedule slots */

/* Backend states (berth_backend.state). */
#define BERTH_BACKEND_FREE 0        /* slot unused: never referenced */
#define BERTH_BACKEND_ACTIVE 1      /* takes new flows */
#define BERTH_BACKEND_TERMINATING 2 /* no new flows, existing flows continue */
#define BERTH_BACKEND_REMOVED 3     /* gone: flows to it are re-balanced */

/* Conntrack entry kinds (berth_ct_value.kind). */
#define BERTH_CT_FORWARD 1 /* client -> VIP, keyed as seen at the uplink */
#define BERTH_CT_REVERSE 2 /* backend -> client, for reverse NAT of replies */

/* berth_service_value.flags */
#define BERTH_SVC_F_AFFINITY 0x1 /* sessionAffinity: ClientIP */

/*
 * Reason codes, the index into berth_reasons_v1. Codes below
 * BERTH_REASON_FIRST_EVENT are drops; the others count packets that were
 * passed untouched for a reason worth knowing, or notable flow events.
 */
#define BERTH_DROP_NO_BACKEND 1     /* Service has no usable backend */
#define BERTH_DROP_SCHEDULE_MISS 2  /* schedule slot missing (update race) */
#define BERTH_DROP_BACKEND_MISS 3   /* schedule names a backend that is not usable */
#define BERTH_DROP_CT_FULL 4        /* conntrack insert failed */
#define BERTH_REASON_FIRST_EVENT 32
#define BERTH_PASS_FRAGMENT 32      /* IPv4 fragment: passed to the stack untouched */
#define BERTH_PASS_MALFORMED 33     /* truncated or invalid header: passed untouched */
#define BERTH_EV_BACKEND_GONE 34    /* flow's backend was removed: flow re-balanced */
#define BERTH_EV_MIDFLOW_MISS 35    /* TCP non-SYN without conntrack: backend chosen now */
#define BERTH_EV_AFFINITY_HIT 36    /* new flow sent to the client's remembered backend */
#define BERTH_EV_SOCK_CONNECT 37    /* socket LB rewrote a connect()/sendmsg() */
#define BERTH_REASON_MAX 64

/* Map names (pinned by name under /sys/fs/bpf/berth/<instance>/). */
#define BERTH_MAP_SERVICES "berth_services_v1"
#define BERTH_MAP_BACKENDS "berth_backends_v1"
#define BERTH_MAP_SCHEDULE "berth_schedule_v1"
#define BERTH_MAP_CT "berth_ct_v1"
#define BERTH_MAP_AFFINITY "berth_affinity_v1"
#define BERTH_MAP_SOCK_REV "berth_sock_rev_v1"
#define BERTH_MAP_SVC_STATS "berth_svc_stats_v1"
#define BERTH_MAP_BACKEND_STATS "berth_backend_stats_v1"
#define BERTH_MAP_REASONS "berth_reasons_v1"
#define BERTH_MAP_WRR_CURSOR "berth_wrr_cursor_v1"

/* Default map sizes; userspace overrides them at load (map_max_entries). */
#define BERTH_DEFAULT_MAX_SERVICES 65536
#define BERTH_DEFAULT_MAX_BACKENDS 262144
#define BERTH_DEFAULT_MAX_SCHEDULE 1048576
#define BERTH_DEFAULT_MAX_CT 262144
#define BERTH_DEFAULT_MAX_AFFINITY 65536
#define BERTH_DEFAULT_MAX_SOCK_REV 65536

/* Service identity: {VIP, port, protocol}. */
struct berth_service_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};
_Static_assert(sizeof(struct berth_service_key) == 8, "berth_service_key size");

/*
 * Replaced as a whole (hash map update), so a reader sees either the old or
 * the new {epoch, sched_len} pair, never a mix.
 */
struct berth_service_value {
	__u32 svc_id;            /* index into per-service maps, < max services */
	__u32 sched_len;         /* slots in the current schedule; 0 = no backend */
	__u32 active;            /* active backends (informational) */
	__u32 terminating;       /* terminating backends (informational) */
	__u32 affinity_timeout_s; /* ClientIP affinity timeout when flag set */
	__u8 algorithm;          /* BERTH_ALG_* */
	__u8 epoch;              /* which schedule generation (0/1) is current */
	__u16 flags;             /* BERTH_SVC_F_* */
};
_Static_assert(sizeof(struct berth_service_value) == 24, "berth_service_value size");

/* One schedule slot: {service, generation, slot index} -> backend id. */
struct berth_schedule_key {
	__u32 svc_id;
	__u32 slot;
	__u8 epoch;
	__u8 pad[3];
};
_Static_assert(sizeof(struct berth_schedule_key) == 12, "berth_schedule_key size");

/*
 * Backends live in an array indexed by backend id. An id slot is reused only
 * after it was REMOVED; each reuse bumps `generation`, and conntrack remembers the
 * generation it saw, so a flow never follows a reused id to a stranger.
 */
struct berth_backend {
	__be32 addr;
	__be16 port;
	__u8 state; /* BERTH_BACKEND_* */
	__u8 pad;
	__u32 generation;
	__u32 svc_id;
};
_Static_assert(sizeof(struct berth_backend) == 16, "berth_backend size");

/* Conntrack key: the 5-tuple exactly as seen in the packet. */
struct berth_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct berth_ct_key) == 16, "berth_ct_key size");

struct berth_ct_value {
	__u64 created_ns; /* bpf_ktime_get_ns() at flow creation */
	__u32 backend_id;
	__u32 backend_gen;
	__u32 svc_id;
	__be32 vip;  /* REVERSE: the address replies must come from */
	__be16 vport; /* REVERSE: the port replies must come from */
	__u8 kind;   /* BERTH_CT_* */
	__u8 pad;
	__u32 pad2;
};
_Static_assert(sizeof(struct berth_ct_value) == 32, "berth_ct_value size");

/*
 * sessionAffinity ClientIP: {service, client} -> backend. The client is the
 * source IPv4 address for XDP, the network namespace cookie for socket LB.
 */
struct berth_affinity_key {
	__u64 netns_cookie;
	__u32 svc_id;
	__be32 client;
};
_Static_assert(sizeof(struct berth_affinity_key) == 16, "berth_affinity_key size");

struct berth_affinity_value {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 backend_gen;
};
_Static_assert(sizeof(struct berth_affinity_value) == 16, "berth_affinity_value size");

/* Socket LB reverse translation: {socket cookie, backend} -> VIP. */
struct berth_sock_rev_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};
_Static_assert(sizeof(struct berth_sock_rev_key) == 16, "berth_sock_rev_key size");

struct berth_sock_rev_value {
	__be32 vip;
	__be16 vport;
	__u8 pad[2];
};
_Static_assert(sizeof(struct berth_sock_rev_value) == 8, "berth_sock_rev_value size");

/* Per-CPU counters per service id and per backend id. */
struct berth_traffic_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};
_Static_assert(sizeof(struct berth_traffic_stats) == 24, "berth_traffic_stats size");

#endif /* BERTH_ABI_H */

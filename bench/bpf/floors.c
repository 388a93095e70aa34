/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Floor programs for `berth-bench packet`: the least an XDP Service load
 * balancer can do for each kind of packet, measured the same way and in the
 * same run as berth_xdp_lb, so berth is reported as a ratio to its floor.
 *
 *   floor_pass        XDP_PASS, nothing else (the cost of BPF_PROG_TEST_RUN)
 *   floor_lookup      parse + one Service hash lookup + XDP_TX
 *   floor_lru_hit     that + a conntrack LRU lookup that hits
 *   floor_lru_insert  that + an LRU lookup that misses + one LRU insert
 *
 * and one diagnostic program, not a floor (no ratio is taken against it):
 *
 *   diag_lru_insert2  floor_lru_insert with a second insert (a reverse-shaped
 *                     key), the shape of berth's new flow (forward and
 *                     reverse conntrack entries); it shows how much of
 *                     berth's new-flow cost is the second insert
 *
 * The parse does what berth does before its Service lookup and no less:
 * Ethernet type, IPv4 version and IHL (options skipped), TCP or UDP, the
 * fragment check, the full L4 header bounds and the TCP data offset. The
 * maps have berth's key and value shapes (from berth's abi.h), berth's types
 * and flags, and are sized by the benchmark like berth's. Floors never
 * rewrite the packet, so no checksum work: that part of berth's cost shows
 * in the ratio.
 *
 * Written independently of berth's parser on purpose: a floor that shared
 * berth's code would get slower with it and hide a regression.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <berth/abi.h>

/* Same type and shapes as berth_services_v1; size set by the benchmark. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct berth_service_key);
	__type(value, struct berth_service_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_SERVICES);
} floor_services SEC(".maps");

/* Same type, flags and shapes as berth_ct_v1; size set by the benchmark. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct berth_ct_key);
	__type(value, struct berth_ct_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_CT);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} floor_ct SEC(".maps");

struct floor_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

/* 0 when the packet is IPv4 TCP/UDP with complete headers, -1 otherwise. */
static __always_inline int floor_parse(struct xdp_md *ctx, struct floor_tuple *t)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
		return -1;
	l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end || tcp->doff < 5)
			return -1;
		t->sport = tcp->source;
		t->dport = tcp->dest;
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return -1;
		t->sport = udp->source;
		t->dport = udp->dest;
	}
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	return 0;
}

static __always_inline struct berth_service_value *floor_service(const struct floor_tuple *t)
{
	struct berth_service_key key = {
		.vip = t->daddr,
		.port = t->dport,
		.proto = t->proto,
	};

	return bpf_map_lookup_elem(&floor_services, &key);
}

static __always_inline void floor_ct_key(const struct floor_tuple *t, struct berth_ct_key *k)
{
	k->saddr = t->saddr;
	k->daddr = t->daddr;
	k->sport = t->sport;
	k->dport = t->dport;
	k->proto = t->proto;
}

SEC("xdp")
int floor_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

/* XDP_TX for a Service packet, XDP_PASS for anything else. */
SEC("xdp")
int floor_lookup(struct xdp_md *ctx)
{
	struct floor_tuple t = {};

	if (floor_parse(ctx, &t))
		return XDP_PASS;
	return floor_service(&t) ? XDP_TX : XDP_PASS;
}

/* XDP_TX when the flow is known; XDP_PASS (unexpected here) otherwise. */
SEC("xdp")
int floor_lru_hit(struct xdp_md *ctx)
{
	struct floor_tuple t = {};
	struct berth_ct_key key = {};

	if (floor_parse(ctx, &t) || !floor_service(&t))
		return XDP_PASS;
	floor_ct_key(&t, &key);
	return bpf_map_lookup_elem(&floor_ct, &key) ? XDP_TX : XDP_PASS;
}

/*
 * XDP_TX after inserting a new flow; XDP_PASS if the flow was already known
 * (unexpected here), XDP_DROP if the insert failed.
 */
SEC("xdp")
int floor_lru_insert(struct xdp_md *ctx)
{
	struct floor_tuple t = {};
	struct berth_ct_key key = {};
	struct berth_ct_value val = {};
	struct berth_service_value *svc;

	if (floor_parse(ctx, &t))
		return XDP_PASS;
	svc = floor_service(&t);
	if (!svc)
		return XDP_PASS;
	floor_ct_key(&t, &key);
	if (bpf_map_lookup_elem(&floor_ct, &key))
		return XDP_PASS;
	val.svc_id = svc->svc_id;
	val.kind = BERTH_CT_FORWARD;
	if (bpf_map_update_elem(&floor_ct, &key, &val, BPF_ANY))
		return XDP_DROP;
	return XDP_TX;
}

/* As floor_lru_insert, then a second entry keyed as the reply will look. */
SEC("xdp")
int diag_lru_insert2(struct xdp_md *ctx)
{
	struct floor_tuple t = {};
	struct berth_ct_key key = {};
	struct berth_ct_key rev = {};
	struct berth_ct_value val = {};
	struct berth_service_value *svc;

	if (floor_parse(ctx, &t))
		return XDP_PASS;
	svc = floor_service(&t);
	if (!svc)
		return XDP_PASS;
	floor_ct_key(&t, &key);
	if (bpf_map_lookup_elem(&floor_ct, &key))
		return XDP_PASS;
	val.svc_id = svc->svc_id;
	val.kind = BERTH_CT_REVERSE;
	rev.saddr = t.daddr;
	rev.daddr = t.saddr;
	rev.sport = t.dport;
	rev.dport = t.sport;
	rev.proto = t.proto;
	if (bpf_map_update_elem(&floor_ct, &rev, &val, BPF_ANY))
		return XDP_DROP;
	val.kind = BERTH_CT_FORWARD;
	if (bpf_map_update_elem(&floor_ct, &key, &val, BPF_ANY))
		return XDP_DROP;
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";

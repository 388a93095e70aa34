/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * XDP on the node's uplink: Service VIP -> backend DNAT.
 *
 * A packet for no Service costs one parse and one hash lookup and is passed
 * untouched. For a Service packet, conntrack (LRU) pins the flow to the
 * backend chosen for its first packet; the packet's destination is rewritten
 * with incremental checksums and passed to the stack, which forwards it to
 * the backend. Replies are translated back by tc_rev_nat.c on egress.
 *
 * Checksums: the L4 checksum is updated as a full checksum (RFC 1624). That
 * is what a physical NIC delivers; a veth peer with tx checksum offload on
 * hands over CHECKSUM_PARTIAL packets whose field holds only the
 * pseudo-header sum, which this program cannot tell apart (docs/dataplane.md).
 */
#include "lib/lb.h"

static __always_inline void ct_forward_key(const struct pkt4 *p, struct berth_ct_key *k)
{
	k->saddr = p->ip->saddr;
	k->daddr = p->ip->daddr;
	k->sport = *p->sport;
	k->dport = *p->dport;
	k->proto = p->proto;
}

/*
 * Create both conntrack entries of a new flow: forward (as the client sent
 * it) and reverse (as the backend's reply will look), so reverse NAT is one
 * lookup as well.
 */
static __always_inline int ct_create(const struct berth_ct_key *fwd, __u32 svc_id, __u32 backend_id,
				     const struct berth_backend *be)
{
	struct berth_ct_key rev = {
		.saddr = be->addr,
		.daddr = fwd->saddr,
		.sport = be->port,
		.dport = fwd->sport,
		.proto = fwd->proto,
	};
	struct berth_ct_value v = {
		.created_ns = bpf_ktime_get_ns(),
		.backend_id = backend_id,
		.backend_gen = be->generation,
		.svc_id = svc_id,
		.vip = fwd->daddr,
		.vport = fwd->dport,
		.kind = BERTH_CT_REVERSE,
	};

	if (bpf_map_update_elem(&berth_ct_v1, &rev, &v, BPF_ANY))
		return BERTH_DROP_CT_FULL;
	v.kind = BERTH_CT_FORWARD;
	if (bpf_map_update_elem(&berth_ct_v1, fwd, &v, BPF_ANY))
		return BERTH_DROP_CT_FULL;
	return 0;
}

/*
 * A SYN that is not for a Service opens a new connection on its 4-tuple, so
 * a translated flow that left a reverse entry for the same tuple (the client
 * reused a source port it once used for a VIP, now talking to the backend
 * directly) is over: without this, tc would rewrite the new connection's
 * replies to the old VIP and the client would never see its SYN-ACK. Only
 * SYNs pay the lookup.
 */
static __always_inline void ct_forget_reverse(const struct pkt4 *p)
{
	struct berth_ct_key rev = {
		.saddr = p->ip->daddr,
		.daddr = p->ip->saddr,
		.sport = *p->dport,
		.dport = *p->sport,
		.proto = p->proto,
	};
	struct berth_ct_value *ct = bpf_map_lookup_elem(&berth_ct_v1, &rev);

	if (ct && ct->kind == BERTH_CT_REVERSE)
		bpf_map_delete_elem(&berth_ct_v1, &rev);
}

static __always_inline void dnat4(struct pkt4 *p, __be32 addr, __be16 port)
{
	__be32 old_addr = p->ip->daddr;
	__be16 old_port = *p->dport;

	csum_replace4(&p->ip->check, old_addr, addr);
	if (!p->udp_nocsum) {
		/* The L4 checksum covers the pseudo-header's address and the port. */
		csum_replace4(p->l4_csum, old_addr, addr);
		csum_replace2(p->l4_csum, old_port, port);
		if (p->proto == IPPROTO_UDP && *p->l4_csum == 0)
			*p->l4_csum = 0xffff; /* 0 means "no checksum" in UDP */
	}
	p->ip->daddr = addr;
	*p->dport = port;
}

SEC("xdp")
int berth_xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct berth_service_key skey = {};
	struct berth_service_value *svc;
	struct berth_ct_key ckey = {};
	struct berth_ct_value *ct;
	struct berth_backend *be = NULL;
	struct pkt4 p;
	__u32 backend_id = 0;
	__u64 new_flow = 0;
	int ret;

	ret = parse_pkt4(data, data_end, &p);
	if (ret != PARSE_OK) {
		if (ret == PARSE_FRAGMENT)
			lb_count_reason(BERTH_PASS_FRAGMENT);
		else if (ret == PARSE_MALFORMED)
			lb_count_reason(BERTH_PASS_MALFORMED);
		return XDP_PASS;
	}

	skey.vip = p.ip->daddr;
	skey.port = *p.dport;
	skey.proto = p.proto;
	svc = bpf_map_lookup_elem(&berth_services_v1, &skey);
	if (!svc) {
		if (p.tcp_syn)
			ct_forget_reverse(&p);
		return XDP_PASS;
	}

	ct_forward_key(&p, &ckey);
	ct = bpf_map_lookup_elem(&berth_ct_v1, &ckey);
	if (ct && ct->kind == BERTH_CT_FORWARD) {
		be = lb_backend_live(ct->backend_id, ct->backend_gen);
		if (be) {
			backend_id = ct->backend_id;
		} else {
			/*
			 * The flow's backend was removed: choose a live one. For
			 * TCP its stack does not know the connection and answers
			 * RST, so the client fails fast instead of hanging.
			 */
			lb_count_reason(BERTH_EV_BACKEND_GONE);
		}
	} else if (p.proto == IPPROTO_TCP && !p.tcp_syn) {
		/* Mid-flow packet without state (LRU eviction, map reset). */
		lb_count_reason(BERTH_EV_MIDFLOW_MISS);
	}

	if (!be) {
		__u32 hash = jhash_3words(ckey.saddr, ckey.daddr,
					  ((__u32)ckey.sport << 16) | ckey.dport, ckey.proto);

		ret = lb_select(svc, hash, ckey.saddr, 0, &backend_id, &be);
		if (ret)
			goto drop;
		ret = ct_create(&ckey, svc->svc_id, backend_id, be);
		if (ret)
			goto drop;
		new_flow = 1;
	}

	lb_account(svc->svc_id, backend_id, data_end - data, new_flow);
	dnat4(&p, be->addr, be->port);
	return XDP_PASS;

drop:
	lb_count_reason(ret);
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual BSD/GPL";

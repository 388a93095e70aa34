/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * tc/tcx egress on the uplink: reverse NAT of backend replies, so the
 * client only ever sees the VIP. One conntrack lookup with the reply's
 * 5-tuple; a miss continues unchanged.
 *
 * Checksums go through bpf_l3/l4_csum_replace, which know the skb's
 * ip_summed (forwarded replies from a veth are usually CHECKSUM_PARTIAL).
 */
#include <linux/pkt_cls.h>
#include <stddef.h>

#include "lib/maps.h"

#define ETH_HLEN_ 14

SEC("classifier")
int berth_tc_rnat(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct berth_ct_key key = {};
	struct berth_ct_value *ct;
	struct pkt4 p;
	__u32 l4_off, csum_off, sport_off, flags;
	__be32 old_addr;
	__be16 old_port;
	int ret;

	ret = parse_pkt4(data, data_end, &p);
	if (ret == PARSE_MALFORMED && skb->len > data_end - data) {
		/* Headers may sit outside the linear area: pull and retry once. */
		__u32 need = ETH_HLEN_ + 60 + sizeof(struct tcphdr);

		if (bpf_skb_pull_data(skb, skb->len < need ? skb->len : need))
			return TC_ACT_UNSPEC;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ret = parse_pkt4(data, data_end, &p);
	}
	if (ret != PARSE_OK)
		return TC_ACT_UNSPEC;

	key.saddr = p.ip->saddr;
	key.daddr = p.ip->daddr;
	key.sport = *p.sport;
	key.dport = *p.dport;
	key.proto = p.proto;
	ct = bpf_map_lookup_elem(&berth_ct_v1, &key);
	if (!ct || ct->kind != BERTH_CT_REVERSE)
		return TC_ACT_UNSPEC;

	old_addr = p.ip->saddr;
	old_port = *p.sport;
	l4_off = ETH_HLEN_ + p.ip->ihl * 4;
	sport_off = l4_off; /* source port leads both TCP and UDP headers */
	csum_off = l4_off + (p.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						    : offsetof(struct udphdr, check));
	/* UDP: a zero checksum stays zero, a computed zero becomes 0xffff. */
	flags = p.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	/* Helpers below invalidate packet pointers: only offsets from here on. */
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, ct->vip, flags | BPF_F_PSEUDO_HDR | 4))
		goto out;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, ct->vport, flags | 2))
		goto out;
	if (bpf_l3_csum_replace(skb, ETH_HLEN_ + offsetof(struct iphdr, check), old_addr, ct->vip, 4))
		goto out;
	bpf_skb_store_bytes(skb, ETH_HLEN_ + offsetof(struct iphdr, saddr), &ct->vip, 4, 0);
	bpf_skb_store_bytes(skb, sport_off, &ct->vport, 2, 0);
out:
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "Dual BSD/GPL";

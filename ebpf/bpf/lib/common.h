/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Packet parsing and checksum helpers shared by every berth program. */
#ifndef BERTH_LIB_COMMON_H
#define BERTH_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <berth/abi.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/*
 * Knobs fixed at load time (EbpfLoader::override_global). `.rodata` is frozen
 * before verification, so a disabled branch is removed as dead code and
 * costs nothing per packet.
 */
const volatile __u32 berth_cfg_stats = 1;

/* Fold a 32-bit one's complement sum and complement it (a checksum field). */
static __always_inline __u16 csum_fold32(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/*
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). One's complement sums do not care
 * about byte order as long as every word is taken as stored, so the network
 * order fields are used as they are.
 */
static __always_inline void csum_replace4(__u16 *sum, __be32 from, __be32 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~(from & 0xffff);
	c += (__u16)~(from >> 16);
	c += to & 0xffff;
	c += to >> 16;
	*sum = csum_fold32(c);
}

static __always_inline void csum_replace2(__u16 *sum, __be16 from, __be16 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~from;
	c += to;
	*sum = csum_fold32(c);
}

/* Bob Jenkins' final mix (as in the kernel's jhash_3words). */
static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += 0xdeadbeef + initval;
	b += 0xdeadbeef + initval;
	c += 0xdeadbeef + initval;
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

/* A parsed IPv4 TCP/UDP packet: pointers into the packet plus the 5-tuple. */
struct pkt4 {
	struct iphdr *ip;
	__u16 *l4_csum;   /* TCP or UDP checksum field */
	__be16 *sport;
	__be16 *dport;
	__u8 proto;
	__u8 tcp_syn;     /* SYN without ACK: the first packet of a TCP flow */
	__u8 udp_nocsum;  /* UDP checksum 0: none to update */
	__u8 pad;
};

#define PARSE_OK 0
#define PARSE_NOT_OURS 1     /* not IPv4 TCP/UDP: pass untouched, uncounted */
#define PARSE_FRAGMENT 2     /* IPv4 fragment: pass untouched, counted */
#define PARSE_MALFORMED 3    /* truncated/invalid: pass untouched, counted */

/*
 * Parse Ethernet/IPv4/TCP|UDP between data and data_end. IP options are
 * allowed (ihl > 5). VLAN-tagged and non-IPv4 frames are not ours: the
 * uplink carries untagged traffic for Services; anything else goes to the
 * stack as it came.
 */
static __always_inline int parse_pkt4(void *data, void *data_end, struct pkt4 *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_OURS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return PARSE_NOT_OURS;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	ihl = ip->ihl * 4;
	p->ip = ip;
	p->proto = ip->protocol;
	p->tcp_syn = 0;
	p->udp_nocsum = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)ip + ihl;

		if ((void *)(tcp + 1) > data_end)
			return PARSE_MALFORMED;
		if (tcp->doff < 5)
			return PARSE_MALFORMED;
		p->sport = &tcp->source;
		p->dport = &tcp->dest;
		p->l4_csum = &tcp->check;
		p->tcp_syn = tcp->syn && !tcp->ack;
	} else {
		struct udphdr *udp = (void *)ip + ihl;

		if ((void *)(udp + 1) > data_end)
			return PARSE_MALFORMED;
		p->sport = &udp->source;
		p->dport = &udp->dest;
		p->l4_csum = &udp->check;
		p->udp_nocsum = udp->check == 0;
	}
	return PARSE_OK;
}

#endif /* BERTH_LIB_COMMON_H */

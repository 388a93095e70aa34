/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Socket-level load balancing for local processes (cgroup sock_addr hooks).
 *
 * connect4/sendmsg4 rewrite a VIP destination to a backend once, at the
 * socket call: packets then carry the backend's address from the start and
 * need no per-packet NAT. recvmsg4/getpeername4 translate the backend back
 * to the VIP, keyed by socket cookie, so UDP replies and getpeername() show
 * the VIP.
 *
 * Unconnected UDP: every sendmsg() to the VIP is balanced on its own;
 * connect() the socket to keep one backend.
 */
#include "lib/lb.h"

#define SYS_PROCEED 1
#define SYS_REJECT 0

static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct berth_service_key skey = {};
	struct berth_service_value *svc;
	struct berth_sock_rev_key rkey = {};
	struct berth_sock_rev_value rval = {};
	struct berth_backend *be;
	__u64 cookie;
	__u32 backend_id;
	int err;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return SYS_PROCEED;
	skey.vip = ctx->user_ip4;
	skey.port = (__be16)ctx->user_port;
	skey.proto = ctx->protocol;
	svc = bpf_map_lookup_elem(&berth_services_v1, &skey);
	if (!svc)
		return SYS_PROCEED;

	cookie = bpf_get_socket_cookie(ctx);
	/* Affinity identifies a local client by its network namespace. */
	err = lb_select(svc, jhash_3words((__u32)cookie, (__u32)(cookie >> 32), 0, 0), 0,
			bpf_get_netns_cookie(ctx), &backend_id, &be);
	if (err) {
		lb_count_reason(err);
		/* Like kube-proxy's REJECT: fail the call instead of a black hole. */
		return SYS_REJECT;
	}

	rkey.cookie = cookie;
	rkey.addr = be->addr;
	rkey.port = be->port;
	rval.vip = skey.vip;
	rval.vport = skey.port;
	bpf_map_update_elem(&berth_sock_rev_v1, &rkey, &rval, BPF_ANY);

	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	lb_account(svc->svc_id, backend_id, 0, 1);
	lb_count_reason(BERTH_EV_SOCK_CONNECT);
	return SYS_PROCEED;
}

static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct berth_sock_rev_key rkey = {};
	struct berth_sock_rev_value *rval;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&berth_sock_rev_v1, &rkey);
	if (rval) {
		ctx->user_ip4 = rval->vip;
		ctx->user_port = (__u32)rval->vport;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int berth_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx);
}

SEC("cgroup/sendmsg4")
int berth_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx);
}

SEC("cgroup/recvmsg4")
int berth_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

SEC("cgroup/getpeername4")
int berth_getpeer4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";

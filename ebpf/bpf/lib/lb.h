/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Backend selection and accounting shared by the XDP path and socket LB.
 * Userspace computes each Service's schedule (smooth WRR sequence or Maglev
 * table); the kernel only picks a slot: a per-CPU cursor (WRR), a flow hash
 * (Maglev) or a random number.
 */
#ifndef BERTH_LIB_LB_H
#define BERTH_LIB_LB_H

#include "maps.h"

static __always_inline void lb_count_reason(__u32 reason)
{
	__u64 *cnt = bpf_map_lookup_elem(&berth_reasons_v1, &reason);

	if (cnt)
		*cnt += 1;
}

static __always_inline void lb_account(__u32 svc_id, __u32 backend_id, __u64 bytes, __u64 new_flow)
{
	struct berth_traffic_stats *st;

	if (!berth_cfg_stats)
		return;
	st = bpf_map_lookup_elem(&berth_svc_stats_v1, &svc_id);
	if (st) {
		st->packets += 1;
		st->bytes += bytes;
		st->new_flows += new_flow;
	}
	st = bpf_map_lookup_elem(&berth_backend_stats_v1, &backend_id);
	if (st) {
		st->packets += 1;
		st->bytes += bytes;
		st->new_flows += new_flow;
	}
}

/* A backend a flow may keep using: present, same generation, not removed. */
static __always_inline struct berth_backend *lb_backend_live(__u32 id, __u32 gen)
{
	struct berth_backend *be = bpf_map_lookup_elem(&berth_backends_v1, &id);

	if (!be || be->generation != gen)
		return NULL;
	if (be->state != BERTH_BACKEND_ACTIVE && be->state != BERTH_BACKEND_TERMINATING)
		return NULL;
	return be;
}

/*
 * Pick the slot for a new flow. `hash` feeds Maglev; WRR advances this CPU's
 * cursor; random asks prandom.
 */
static __always_inline int lb_pick_slot(const struct berth_service_value *svc, __u32 hash, __u32 *slot)
{
	__u32 len = svc->sched_len;

	if (len == 0)
		return BERTH_DROP_NO_BACKEND;
	if (svc->algorithm == BERTH_ALG_MAGLEV) {
		*slot = hash % len;
	} else if (svc->algorithm == BERTH_ALG_RANDOM) {
		*slot = bpf_get_prandom_u32() % len;
	} else {
		__u32 svc_id = svc->svc_id;
		__u32 *cursor = bpf_map_lookup_elem(&berth_wrr_cursor_v1, &svc_id);

		if (!cursor)
			return BERTH_DROP_SCHEDULE_MISS;
		*slot = *cursor % len;
		/* Wrap at len so the cursor stays small and the next slot is exact. */
		*cursor = *slot + 1 >= len ? 0 : *slot + 1;
	}
	return 0;
}

/*
 * Choose a backend for a new flow of `svc`, honouring ClientIP affinity.
 * `client`/`netns_cookie` identify the client for affinity. Returns 0 and
 * fills id/backend, or a BERTH_DROP_* reason.
 */
static __always_inline int lb_select(const struct berth_service_value *svc, __u32 hash,
				     __be32 client, __u64 netns_cookie, __u32 *id_out,
				     struct berth_backend **be_out)
{
	struct berth_affinity_key akey = {};
	struct berth_affinity_value *aval;
	struct berth_schedule_key skey = {};
	struct berth_backend *be;
	__u64 now = 0;
	__u32 *bid;
	__u32 slot;
	int err;

	if (svc->flags & BERTH_SVC_F_AFFINITY) {
		akey.netns_cookie = netns_cookie;
		akey.svc_id = svc->svc_id;
		akey.client = client;
		now = bpf_ktime_get_ns();
		aval = bpf_map_lookup_elem(&berth_affinity_v1, &akey);
		if (aval && now - aval->last_used_ns < (__u64)svc->affinity_timeout_s * 1000000000ULL) {
			be = lb_backend_live(aval->backend_id, aval->backend_gen);
			/* Affinity never sends a new flow to a terminating backend. */
			if (be && be->state == BERTH_BACKEND_ACTIVE) {
				aval->last_used_ns = now;
				*id_out = aval->backend_id;
				*be_out = be;
				lb_count_reason(BERTH_EV_AFFINITY_HIT);
				return 0;
			}
		}
	}

	err = lb_pick_slot(svc, hash, &slot);
	if (err)
		return err;
	skey.svc_id = svc->svc_id;
	skey.slot = slot;
	skey.epoch = svc->epoch;
	bid = bpf_map_lookup_elem(&berth_schedule_v1, &skey);
	if (!bid)
		return BERTH_DROP_SCHEDULE_MISS;
	be = bpf_map_lookup_elem(&berth_backends_v1, bid);
	if (!be || (be->state != BERTH_BACKEND_ACTIVE && be->state != BERTH_BACKEND_TERMINATING))
		return BERTH_DROP_BACKEND_MISS;
	*id_out = *bid;
	*be_out = be;

	if (svc->flags & BERTH_SVC_F_AFFINITY) {
		struct berth_affinity_value nval = {
			.last_used_ns = now,
			.backend_id = *bid,
			.backend_gen = be->generation,
		};

		bpf_map_update_elem(&berth_affinity_v1, &akey, &nval, BPF_ANY);
	}
	return 0;
}

#endif /* BERTH_LIB_LB_H */

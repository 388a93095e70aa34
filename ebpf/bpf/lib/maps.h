/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Every berth map, pinned by name so that all programs (separate objects)
 * and every agent restart share one instance. Sizes here are defaults; the
 * agent sets the real ones with EbpfLoader::map_max_entries.
 */
#ifndef BERTH_LIB_MAPS_H
#define BERTH_LIB_MAPS_H

#include "common.h"

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct berth_service_key);
	__type(value, struct berth_service_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_services_v1 SEC(".maps");

/*
 * Backends by id. An array: the lookup is inlined by the verifier, which is
 * what keeps the established-flow path close to its floor.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct berth_backend);
	__uint(max_entries, BERTH_DEFAULT_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_backends_v1 SEC(".maps");

/*
 * Schedule slots of every Service, two generations each. Not preallocated:
 * Maglev tables make the total large, and it is only written from userspace.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct berth_schedule_key);
	__type(value, __u32);
	__uint(max_entries, BERTH_DEFAULT_MAX_SCHEDULE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_schedule_v1 SEC(".maps");

/*
 * Per-CPU LRU lists: an insert never takes a global lock. Both entries of a
 * flow (forward and reverse) are written on the CPU that saw its first packet.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct berth_ct_key);
	__type(value, struct berth_ct_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_CT);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_ct_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct berth_affinity_key);
	__type(value, struct berth_affinity_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_affinity_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct berth_sock_rev_key);
	__type(value, struct berth_sock_rev_value);
	__uint(max_entries, BERTH_DEFAULT_MAX_SOCK_REV);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_sock_rev_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct berth_traffic_stats);
	__uint(max_entries, BERTH_DEFAULT_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_svc_stats_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct berth_traffic_stats);
	__uint(max_entries, BERTH_DEFAULT_MAX_BACKENDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_backend_stats_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BERTH_REASON_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_reasons_v1 SEC(".maps");

/* Smooth WRR position per Service and CPU: no shared atomic on new flows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, BERTH_DEFAULT_MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} berth_wrr_cursor_v1 SEC(".maps");

#endif /* BERTH_LIB_MAPS_H */

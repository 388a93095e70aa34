//! Leader election over the store backend (etcd leases).

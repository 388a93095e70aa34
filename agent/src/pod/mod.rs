//! Pods: manifests, probes, restart backoff, container states, supervision.

//! Kubernetes resources berth serves: kinds, validation with field paths, defaults, ClusterIP and NodePort allocation.

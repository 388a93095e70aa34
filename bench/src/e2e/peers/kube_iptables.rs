//! kube-proxy's iptables ruleset (KUBE-SERVICES → KUBE-SVC → KUBE-SEP),
//! shared by the iptables-legacy and iptables-nft peers and the apply bench.
//! Being written.

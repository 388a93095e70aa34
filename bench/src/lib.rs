//! berth's benchmarks: per-packet (BPF_PROG_TEST_RUN against floor
//! programs), end to end against kube-proxy-style peers, and programming
//! latency. Built in the benchmarks issue; the data plane exposes
//! `berth_agent::datapath::Datapath::load` as the entry point they drive.

//! The container runtime: the re-exec'd shim and init, exec, logs.

//! Pod networking: network namespaces, veth pairs, IPAM.

//! OCI image layouts: verification, unpacking, the digest-keyed cache.

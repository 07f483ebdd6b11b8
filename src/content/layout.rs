//! OCI image layout store (in progress).

//! RFC 9421 (in progress).

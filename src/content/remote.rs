//! Remote registry store (in progress).

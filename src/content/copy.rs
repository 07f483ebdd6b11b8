//! Graph copy (in progress).

//! The runner: policy, resolve, unpack, launch backends, egress proxy and audit (see
//! `DESIGN.md`). It is arriving in pieces; [`unpack`] is the safe layer unpacker that turns a
//! verified image's layers into a root filesystem.

pub mod policy;
pub mod unpack;

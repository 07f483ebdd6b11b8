//! The runner: policy, resolve, unpack, launch backends, egress proxy and audit (see
//! `DESIGN.md`). It is arriving in pieces: [`policy`] decides whether an install may happen
//! and under which limits, with a reason for every part; [`unpack`] turns a verified
//! image's layers into a root filesystem without letting any entry escape it; [`audit`] is
//! the append-only, hash-chained audit trail (`berth audit verify`).

pub mod audit;
pub mod policy;
pub mod unpack;

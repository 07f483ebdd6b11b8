//! The runner: policy, resolve, unpack, launch backends, egress proxy and audit (see
//! `DESIGN.md`). [`policy`] decides whether an install may happen and under which limits,
//! with a reason for every part; [`resolve`] gathers everything the decision needs from the
//! registry alone; [`unpack`] turns a verified image's layers into a root filesystem without
//! letting any entry escape it; [`spec`] builds the OCI runtime bundle; [`netns`] opens
//! sockets inside a plugin's network namespace; [`egress`] is the proxy that is its only way
//! out; [`instance`] runs one plugin; [`service`] is `berth runner`'s local API; [`audit`]
//! is the append-only, hash-chained audit trail (`berth audit verify`); [`report`] tells a
//! catalog about installs and failed requests (reputation).

pub mod audit;
pub mod egress;
pub mod instance;
pub mod netns;
pub mod policy;
pub mod report;
pub mod resolve;
pub mod service;
pub mod spec;
pub mod unpack;

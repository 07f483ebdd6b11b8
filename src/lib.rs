//! berth: a registry-native plugin marketplace.
//!
//! A plugin is a signed OCI image; everything known about it is an OCI 1.1 referrer
//! artifact stored next to the image digest in an ordinary OCI registry. This crate holds
//! the data plane ([`content`], [`registry`]), the public spec ([`plugin`], [`artifacts`]),
//! the publisher's tools ([`pack`], [`sbom`], [`sign`]), the runner API conformance harness
//! ([`conformance`]) and, as they land, the runner, verification and catalog. See
//! `DESIGN.md` in the shared folder for the map.

pub mod artifacts;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod content;
pub mod metrics;
pub mod oci;
pub mod pack;
pub mod plugin;
pub mod registry;
pub mod runner;
pub mod sbom;
pub mod sign;
pub mod verify;

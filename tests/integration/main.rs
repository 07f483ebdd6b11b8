//! berth's integration tests: the real server on 127.0.0.1:0, real HTTP, real clients.
//! One binary, so the suites share one build.

mod common;

mod api;
mod audit;
mod auth;
mod catalog;
mod catalog_serve;
mod catalog_ui;
mod concurrency;
mod conformance;
mod copy;
mod crash;
mod events;
mod gc;
mod governance;
mod governance_cli;
mod interop;
mod layout;
mod metrics;
mod openapi;
mod pack;
mod publish;
mod python_plugin;
mod remote;
mod reputation;
mod runc;
mod runner;
mod seed;
mod verify;
mod verify_serve;

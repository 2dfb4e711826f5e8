//! End-to-end tests: the gateway on real sockets, driven by real clients. The embedded demo is
//! started in this process (`kaifang::server::start`); tests that signal, crash, limit or
//! measure the gateway run the real `kaifang` binary.
//!
//! Each test starts its own gateway on port 0 with its own data directory (see
//! [`fixture::Gateway`]), so tests run in parallel without sharing state.

mod abuse;
mod agreements;
mod audit;
mod cache;
mod calendar;
mod catalog;
mod cluster;
mod config;
mod conventions;
mod download;
mod drills;
mod fixture;
mod flight;
mod flightsql;
mod metrics;
mod operation;
mod operations;
mod origin;
mod overload;
mod portal;
mod pushdown;
mod reports;
mod rows;
#[path = "../common/services.rs"]
mod services;
mod tls;
mod upstream;
mod workflows;

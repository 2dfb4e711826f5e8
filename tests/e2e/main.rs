//! End-to-end tests: the real `kaifang` binary on real sockets, driven by real clients.
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
mod download;
mod fixture;
mod flight;
mod metrics;
mod operations;
mod origin;
mod overload;
mod pushdown;
mod reports;
mod rows;
mod tls;
mod upstream;
mod workflows;

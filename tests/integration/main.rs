//! Integration tests: one binary, against real programs (an OpenSSH sshd started per test).

mod cli;
mod diagram;
mod lifecycle;
mod manifests;
mod prefetch;
mod support;
mod transport;

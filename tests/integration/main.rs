//! Integration tests: one binary, against real programs (an OpenSSH sshd started per test).

mod cli;
mod lifecycle;
mod support;
mod transport;

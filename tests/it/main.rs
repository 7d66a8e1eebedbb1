//! The operator's integration tests: the real `signalman` binary against the real
//! kube-apiserver, moto's SWF and the SSM Automation emulator (one environment for the whole
//! binary, one namespace per test).
mod capacity;
mod chart;
mod common;
mod crash;
mod credentials;
mod enforcement;
mod evidence;
mod fairness;
mod faults;
mod gitops;
mod health;
mod lag;
mod leader;
mod malformed;
mod metrics;
mod node;
mod paging;
mod plugin;
mod policy;
mod regions;
mod retry;
mod schema;
mod ssm;
mod swf;

//! The simulators themselves over real HTTP (Opter's API and exports, eAccounting and
//! Visma Connect, fault injection), and the export source reading what they write.

mod sandbox_support;

mod faults;
mod http;
mod many;
mod opter_export;
mod visma_connect;

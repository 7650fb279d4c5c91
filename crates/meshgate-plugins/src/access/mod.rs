//! Plugins that decide who may call at all: by network address, and by consumer group once
//! authentication has said who is calling.

pub mod acl;
pub mod ip_restriction;

//! Plugins that decide who may call at all: by address today; by consumer and group once the
//! authentication plugins exist.

pub mod ip_restriction;

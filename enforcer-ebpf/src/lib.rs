//! Empty library target: it lets `enforcer` name this crate as a build-dependency, so cargo
//! rebuilds the XDP object (the `enforcer` binary target) when its sources change.
#![no_std]

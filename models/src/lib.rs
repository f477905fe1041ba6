//! What vlm-edge knows of each model architecture, one file per architecture.
//!
//! The `std` feature reads a model folder's `config.json`; without it only the
//! architecture's conventions (names, enums) remain, for the `no_std` side.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod captioner;
pub mod generate;
pub mod siglip;

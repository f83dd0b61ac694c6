//! Shared library of the CLADO toolkit.
//!
//! What two or more tools share lives here: the file formats between the tools ([`format`]),
//! reading and writing them atomically ([`io`]), the option and budget grammar ([`options`],
//! [`budget`]), the quantizers ([`quant`]) and data sets ([`data`]). With the `nn` feature (on by
//! default) it also holds checkpoints ([`checkpoint`]), the candle-nn reference models
//! ([`model`]) and the fast forward engine ([`engine`]). `psd` and `allocate` build without it.

pub mod budget;
pub mod cli;
pub mod data;
pub mod error;
pub mod format;
#[cfg(feature = "onnx")]
pub mod graph;
pub mod io;
pub mod options;
pub mod quant;

#[cfg(feature = "nn")]
pub mod calib;
#[cfg(feature = "nn")]
pub mod checkpoint;
#[cfg(feature = "nn")]
pub mod engine;
#[cfg(feature = "nn")]
mod matmul;
#[cfg(feature = "nn")]
pub mod model;
#[cfg(feature = "nn")]
pub mod setup;

pub use error::{Error, Result};

//! Data sets. Filled in by the data work.

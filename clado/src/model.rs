//! Reference models. Filled in by the model work.

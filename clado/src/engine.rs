//! Fast forward engine. Filled in by the engine work.

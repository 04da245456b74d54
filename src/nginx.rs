//! nginx (to be written).

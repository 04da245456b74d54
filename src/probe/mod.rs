//! Connect probes for upstream targets and the diagnosis of failures from what listens here.

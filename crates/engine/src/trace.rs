//! Received-header hop trace, trust boundary and origin (being written).

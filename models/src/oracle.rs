//! Oracle backend (being written).

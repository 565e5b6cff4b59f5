//! Feature statistics (being built).
